"""Throughput of `--engine ray` against the plain engine on the same photos, on this machine.

    python benchmarks/ray_speed.py [--images 512] [--rounds 3] [--num-cpus N] [--concurrency 1] [--batch-size 8]
                                   [--no-overlays] [--in-process | --steady]

Generates the photos (`benchmarks/photos.py`), then, `--rounds` times, runs the plain engine, the
Ray engine on a local Ray started just before it (as a cluster would be: its start-up is not the
job's), and the plain engine again, each into a fresh OUT.

Each run is a `cambatch run` command in a fresh process, as a user or a scheduled job runs it: both
engines then pay their cold start (imports, the model, the first forwards), the plain engine in its
one process and Ray in the driver and in every CAM actor. Two rates are printed for each run: images
over the command's wall time, and the run's own rate from its manifest (its elapsed time starts once
cambatch is imported). `--in-process` runs them all in this process instead, as `cambatch.run`
calls: after the first run the plain engine is warm (torch, timm, its thread pools), while each Ray
run still starts cold actors, so this measures the Ray engine's start-up as well as its rate.

`--steady` separates the two: each engine runs as a command on N and on 2N photos (the first N
are the same photos), and N / the difference of the two wall times is its steady rate; what is left
of the N-photo wall time is its fixed cost (start-up, first batches, last part), as
`benchmarks/bench.py` measures the plain engine.

It prints each ratio of the Ray rate to the mean of the two plain rates around it, and the median
ratio: on this shared virtual machine one round's rates can move by 2x. The load average is printed
after each round: on a shared machine the ratio means little when other jobs compete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import generate  # noqa: E402

from cambatch.config import RunConfig, switch  # noqa: E402
from cambatch.layout import OutputLayout  # noqa: E402
from cambatch.runner.pipeline import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--num-cpus", type=int, default=len(os.sched_getaffinity(0)), help="CPUs of the local Ray")
    parser.add_argument("--concurrency", type=int, default=None, help="CAM actors (default: cambatch's)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-overlays", action="store_true")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--in-process", action="store_true", help="every run in this process (`cambatch.run`)")
    mode.add_argument("--steady", action="store_true", help="steady rate and fixed cost from N and 2N photos")
    parser.add_argument(
        "--rounds", type=int, default=3, help="plain, ray, plain again, this many times: the median ratio"
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cambatch-ray-speed")
    args = parser.parse_args()
    photos = generate_folder(args.work, args.images)
    options = {"batch_size": args.batch_size, "overlays": not args.no_overlays}
    how = "in this process" if args.in_process else "a command each"
    print(f"{args.images} photos, {how}, load average before: {_load()}", flush=True)
    if args.steady:
        _steady(args, photos, generate_folder(args.work, 2 * args.images), options)
        return
    runner = _in_process if args.in_process else _command
    ratios: dict[str, list[float]] = {}
    for round_ in range(1, args.rounds + 1):
        before = runner(photos, args.work / "out-plain", options)
        distributed = _with_local_ray(
            args, lambda address: runner(photos, args.work / "out-ray", options, address, args.concurrency)
        )
        after = runner(photos, args.work / "out-plain", options)
        parts = []
        for rate in before:
            ratio = 2 * distributed[rate] / (before[rate] + after[rate])
            ratios.setdefault(rate, []).append(ratio)
            parts.append(
                f"{rate}: plain {before[rate]:.2f}, ray {distributed[rate]:.2f}, plain again "
                f"{after[rate]:.2f} img/s, ratio {ratio:.2f}x"
            )
        print(f"round {round_}: " + "; ".join(parts) + f"; load average {_load()}", flush=True)
    for rate, found in ratios.items():
        listed = ", ".join(f"{r:.2f}" for r in found)
        print(f"ratio ray / plain ({rate}): median {statistics.median(found):.2f}x over {len(found)} rounds ({listed})")


def generate_folder(work: Path, count: int) -> Path:
    """The benchmark's `count` photos, in a folder of their own (the first N of any count are the same)."""
    folder = work / f"photos-{count}"
    generate(folder, count)
    return folder


def _steady(args: argparse.Namespace, photos: Path, twice: Path, options: dict) -> None:
    """Per round, each engine on N and 2N photos: its steady rate and fixed cost, and the ratio of the rates."""
    n = args.images
    for round_ in range(1, args.rounds + 1):
        walls: dict[str, list[float]] = {"plain": [], "ray": []}
        for folder, count in ((photos, n), (twice, 2 * n)):  # the engines side by side at each size
            walls["plain"].append(count / _command(folder, args.work / "out-plain", options)["command"])
            rates = _with_local_ray(
                args, lambda address, f=folder: _command(f, args.work / "out-ray", options, address, args.concurrency)
            )
            walls["ray"].append(count / rates["command"])
        found = {}
        for engine, (once, double) in walls.items():
            steady = n / (double - once)
            found[engine] = (steady, once - n / steady, (once, double))
        parts = [
            f"{engine}: {n} photos in {walls[0]:.1f} s, {2 * n} in {walls[1]:.1f} s, steady {steady:.2f} img/s, "
            f"fixed {fixed:.1f} s"
            for engine, (steady, fixed, walls) in found.items()
        ]
        ratio = found["ray"][0] / found["plain"][0]
        print(
            f"round {round_}: " + "; ".join(parts) + f"; steady ratio {ratio:.2f}x; load average {_load()}", flush=True
        )


def _command(
    photos: Path, out: Path, options: dict, ray_address: str | None = None, concurrency: int | None = None
) -> dict[str, float]:
    """One `cambatch run` in a fresh process: its rate over the command's wall time, and the run's own."""
    command = [sys.executable, "-m", "cambatch", "run", str(photos), "--out", str(_fresh(out)), "--quiet"]
    command += [switch("overlays")] if not options["overlays"] else []
    command += [switch("batch_size"), str(options["batch_size"])] if options["batch_size"] else []
    if ray_address is not None:
        command += [switch("engine"), "ray", switch("ray_address"), ray_address]
        command += [switch("concurrency"), str(concurrency)] if concurrency else []
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    manifest = json.loads(next(OutputLayout(out).runs_dir.glob("*.json")).read_text(encoding="utf-8"))
    return {"command": manifest["counts"]["ok"] / wall, "run": manifest["images_per_s"]}


def _in_process(
    photos: Path, out: Path, options: dict, ray_address: str | None = None, concurrency: int | None = None
) -> dict[str, float]:
    """One run in this process (`cambatch.run`); a Ray run joins the Ray this process started."""
    engine = {"engine": "ray", "concurrency": concurrency} if ray_address is not None else {}
    return {"run": run(RunConfig.create([photos], _fresh(out), **options, **engine)).images_per_s}


def _with_local_ray(args: argparse.Namespace, ray_run):
    """`ray_run(address)` on a local Ray started just before (its start-up is not the job's) and stopped
    after, so that its daemons do not share the cores with the plain runs.
    """
    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        return ray_run(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _fresh(out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    return out


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
