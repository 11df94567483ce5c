"""Images per second of the WSOL box sweep (`cambatch evaluate`'s MaxBoxAcc / MaxBoxAccV2), on this machine.

    python benchmarks/evaluate_speed.py [--images 200] [--thresholds 100] [--size 224] [--map 7] [--maps random]
        [--report 5000]

Maps of map x map cells, bilinearly resized to size x size as the protocol does, against one random
ground-truth box each: `random` (uniform cells: several regions spread over the whole map, the worst
case) or `peaked` (one Gaussian blob at a random place plus 10 % noise, as a CAM of one object looks).
The sweep is the whole of the work (`sweep_boxes`): V2 alone (all regions), and V1 + V2 together
(the largest region needs the outline areas too). With `--report N`, the whole of `cambatch evaluate` too:
a report of N images (top-3 rows, maps as `--maps` makes them) and a CSV of one box each, written to a
temporary folder, then `evaluate` timed (wall and CPU seconds; the load average beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cambatch.evaluation.maps import score_maps
from cambatch.evaluation.protocol import sweep_boxes, threshold_grid
from cambatch.evaluation.run import evaluate
from cambatch.report import schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--thresholds", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--map", type=int, default=7)
    parser.add_argument("--maps", choices=("random", "peaked"), default="random")
    parser.add_argument("--report", type=int, default=0, help="also time `evaluate` on a report of this many images")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scores = score_maps(_maps(rng, args.maps, args.images, args.map), args.size)
    corners = np.sort(rng.integers(0, args.size, (args.images, 1, 2, 2)), axis=2)
    gt = corners.transpose(0, 1, 3, 2).reshape(args.images, 1, 4)[..., [0, 2, 1, 3]]
    valid = np.ones((args.images, 1), bool)
    grid = threshold_grid(args.thresholds)
    for name, largest in (("MaxBoxAccV2 (all regions)", False), ("MaxBoxAcc + MaxBoxAccV2", True)):
        start, cpu = time.perf_counter(), time.process_time()
        sweep = sweep_boxes(scores, gt, valid, grid, largest=largest)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"{name}: {args.images / seconds:.1f} images/s ({args.images} maps {args.size}x{args.size}, "
            f"{args.thresholds} thresholds, {seconds:.2f} s wall, {cpu:.2f} s CPU; V2 {sweep.max_box_acc_v2():.3f}; "
            f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())})"
        )
    if args.report:
        with tempfile.TemporaryDirectory() as folder:
            out, boxes = _report(Path(folder), rng, args.maps, args.report, args.map)
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            wall, cpu = time.perf_counter(), time.process_time()
            found = evaluate(out, boxes, thresholds=args.thresholds)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"cambatch evaluate: {args.report / wall:.1f} images/s ({args.report} images x 3 rows, "
                f"{args.thresholds} thresholds, {wall:.1f} s wall, {cpu:.1f} s CPU; MaxBoxAcc "
                f"{found.metrics['MaxBoxAcc']:.3f}; load average before: {load})"
            )


def _report(folder: Path, rng: np.random.Generator, kind: str, images: int, side: int) -> tuple[Path, Path]:
    """A report of `images` images of 640 x 480 (three explained classes each) and a CSV of one box per image."""
    rows = images * 3
    names = [f"img_{i:06d}.jpg" for i in range(images)]
    columns = {
        "path": np.repeat(names, 3),
        "input_root": [str(folder / "photos")] * rows,
        "width": np.full(rows, 640, np.int32),
        "height": np.full(rows, 480, np.int32),
        "orientation": np.ones(rows, np.int8),
        "rank": np.tile([1, 2, 3], images).astype(np.int16),
        "class_index": np.tile([0, 1, 2], images).astype(np.int32),
        "class_name": np.tile(["a", "b", "c"], images),
        "probability": np.full(rows, 0.3, np.float32),
        "status": ["ok"] * rows,
        "run_id": ["20260101T000000Z-bench"] * rows,
        "map": schema.map_array(_maps(rng, kind, rows, side).astype(np.float16)),
        "map_height": np.full(rows, side, np.int16),
        "map_width": np.full(rows, side, np.int16),
    }
    for name in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"):
        columns[name] = rng.uniform(0, 1, rows).astype(np.float32)
    settings = {"run_id": "20260101T000000Z-bench", "model": "bench", "options": {}}
    table = schema.table(columns, rows).replace_schema_metadata({schema.METADATA_KEY: json.dumps(settings).encode()})
    (folder / "out" / "report").mkdir(parents=True)
    pq.write_table(table, folder / "out" / "report" / "part-20260101T000000Z-bench-00000.parquet")
    corners = np.sort(rng.integers(0, 480, (images, 2, 2)), axis=1)
    lines = ["path,x0,y0,x1,y1,label"] + [
        f"{n},{c[0, 0]},{c[0, 1]},{c[1, 0]},{c[1, 1]},a" for n, c in zip(names, corners, strict=True)
    ]
    (folder / "boxes.csv").write_text("\n".join(lines) + "\n")
    return folder / "out", folder / "boxes.csv"


def _maps(rng: np.random.Generator, kind: str, count: int, side: int) -> np.ndarray:
    noise = rng.random((count, side, side))
    if kind == "random":
        return noise
    yy, xx = np.mgrid[0:side, 0:side]
    centre = rng.uniform(0, side - 1, (count, 2, 1, 1))
    blob = np.exp(-((xx - centre[:, 0]) ** 2 + (yy - centre[:, 1]) ** 2) / (side / 3.5) ** 2)
    return blob + 0.1 * noise


if __name__ == "__main__":
    main()
