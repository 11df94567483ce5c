"""What an OUT on an object store costs: the same photos into a local OUT and into `s3://` on a local
S3 server (moto, on 127.0.0.1, started here), side by side.

    python benchmarks/remote_out_speed.py [--images 256] [--images-per-part 64]

Both runs write overlays and are timed over the whole call (the model's load included); the S3
run's time also holds the probe, the pull of the (empty) report and the last uploads at the end.
A ratio near 1 means the uploads ran beside the device, off its path. moto keeps objects in this
process's memory and shares its two cores, so a real store over a network costs other amounts.
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
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--images-per-part", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cambatch-remote-out-speed")
    args = parser.parse_args()
    photos = args.work / "photos"
    generate(photos, args.images)
    endpoint = _local_s3()
    options = {"images_per_part": args.images_per_part, "overwrite": True}
    print(f"{args.images} photos, {args.images_per_part} a part; load average before: {_load()}", flush=True)

    shutil.rmtree(args.work / "out", ignore_errors=True)
    local = _timed(RunConfig.create([photos], args.work / "out", **options), "local OUT")
    stored = _timed(RunConfig.create([photos], "s3://bench/cams", **options), f"s3 OUT ({endpoint})")
    print(f"ratio s3 / local: {stored / local:.2f}x; load average after: {_load()}")


def _timed(config: RunConfig, name: str) -> float:
    """Images/s over the whole call: for an OUT on a store, the probe, the pull and the last uploads too."""
    started = time.monotonic()
    result = run(config)
    elapsed = time.monotonic() - started
    print(f"{name}: {result.processed} images in {elapsed:.1f} s = {result.processed / elapsed:.2f} img/s", flush=True)
    return result.processed / elapsed


def _local_s3() -> str:
    """A moto S3 server on 127.0.0.1 with a bucket `bench`, and this process's AWS variables pointing at it."""
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    s3fs.S3FileSystem().mkdir("bench")
    return endpoint


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
