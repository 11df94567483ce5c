"""Throughput of `--engine ray` against the plain engine on the same photos, on this machine.

    python benchmarks/ray_speed.py [--images 512] [--num-cpus N] [--concurrency 1] [--batch-size 8] [--no-overlays]

Generates the photos (`benchmarks/photos.py`), runs the plain engine, then the Ray engine on a local
Ray started beforehand (as a cluster would be: its start-up is not the job's), each into a fresh
OUT, and prints both rates and their ratio. A rate is images over the run's own elapsed time,
which includes loading the model (on the driver and in every actor for Ray). The load average is
printed before and after: on a shared machine the ratio means little when other jobs compete.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
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
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cambatch-ray-speed")
    args = parser.parse_args()
    photos = args.work / "photos"
    generate(photos, args.images)
    options = {"batch_size": args.batch_size, "overlays": not args.no_overlays, "overwrite": True}
    print(f"{args.images} photos, load average before: {_load()}", flush=True)

    plain = run(RunConfig.create([photos], _fresh(args.work / "out-plain"), **options))
    print(f"plain: {plain.processed} images in {plain.elapsed_s:.1f} s = {plain.images_per_s:.2f} img/s", flush=True)

    import ray

    started = time.monotonic()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    print(f"local Ray with {args.num_cpus} CPUs up in {time.monotonic() - started:.1f} s", flush=True)
    try:
        distributed = run(
            RunConfig.create(
                [photos], _fresh(args.work / "out-ray"), engine="ray", concurrency=args.concurrency, **options
            )
        )
    finally:
        ray.shutdown()
    print(
        f"ray:   {distributed.processed} images in {distributed.elapsed_s:.1f} s = {distributed.images_per_s:.2f} img/s"
    )
    print(f"ratio ray / plain: {distributed.images_per_s / plain.images_per_s:.2f}x; load average after: {_load()}")


def _fresh(out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    return out


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
