"""Throughput of `--engine ray` against the plain engine on the same photos, on this machine.

    python benchmarks/ray_speed.py [--images 512] [--rounds 3] [--num-cpus N] [--concurrency 1] [--batch-size 8]
                                   [--no-overlays]

Generates the photos (`benchmarks/photos.py`), then, `--rounds` times, runs the plain engine, the
Ray engine on a local Ray started just before it (as a cluster would be: its start-up is not the
job's), and the plain engine again, each into a fresh OUT.

It prints each rate, the Ray rate's ratio to the mean of the two plain rates around it, and the
median ratio: on this shared virtual machine one round's rates can move by 2x. A rate is images over
the run's own elapsed time, which includes loading the model (on the driver and in every actor for
Ray). The load average is printed after each round: on a shared machine the ratio means little
when other jobs compete.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import generate  # noqa: E402

from cambatch.config import RunConfig  # noqa: E402
from cambatch.runner.pipeline import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--num-cpus", type=int, default=len(os.sched_getaffinity(0)), help="CPUs of the local Ray")
    parser.add_argument("--concurrency", type=int, default=None, help="CAM actors (default: cambatch's)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-overlays", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=3, help="plain, ray, plain again, this many times: the median ratio"
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cambatch-ray-speed")
    args = parser.parse_args()
    photos = args.work / "photos"
    generate(photos, args.images)
    options = {"batch_size": args.batch_size, "overlays": not args.no_overlays, "overwrite": True}
    print(f"{args.images} photos, load average before: {_load()}", flush=True)
    ratios = []
    for round_ in range(1, args.rounds + 1):
        before = run(RunConfig.create([photos], _fresh(args.work / "out-plain"), **options))
        distributed = _ray_run(photos, args, options)
        after = run(RunConfig.create([photos], _fresh(args.work / "out-plain"), **options))
        ratios.append(2 * distributed.images_per_s / (before.images_per_s + after.images_per_s))
        print(
            f"round {round_}: plain {_rate(before)}; ray {_rate(distributed)}; plain again {after.images_per_s:.2f} "
            f"img/s; ratio {ratios[-1]:.2f}x; load average {_load()}",
            flush=True,
        )
    listed = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"ratio ray / plain: median {statistics.median(ratios):.2f}x over {len(ratios)} rounds ({listed})")


def _rate(result) -> str:
    return f"{result.processed} images in {result.elapsed_s:.1f} s = {result.images_per_s:.2f} img/s"


def _ray_run(photos: Path, args: argparse.Namespace, options: dict):
    """One Ray run on a local Ray started just before (its start-up is not the job's) and stopped after,
    so that its daemons do not share the cores with the plain runs.
    """
    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        config = RunConfig.create(
            [photos], _fresh(args.work / "out-ray"), engine="ray", concurrency=args.concurrency, **options
        )
        return run(config)
    finally:
        ray.shutdown()


def _fresh(out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    return out


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
