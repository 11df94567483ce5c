"""Images per second of the WSOL box sweep (`cambatch evaluate`'s MaxBoxAcc / MaxBoxAccV2), on this machine.

    python benchmarks/evaluate_speed.py [--images 200] [--thresholds 100] [--size 224] [--map 7] [--maps random]

Maps of map x map cells, bilinearly resized to size x size as the protocol does, against one random
ground-truth box each: `random` (uniform cells: several regions spread over the whole map, the worst
case) or `peaked` (one Gaussian blob at a random place plus 10 % noise, as a CAM of one object looks).
The sweep is the whole of the work (`sweep_boxes`): V2 alone (all regions), and V1 + V2 together
(the largest region needs the outline areas too).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cambatch.evaluation.maps import score_maps
from cambatch.evaluation.protocol import sweep_boxes, threshold_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--thresholds", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--map", type=int, default=7)
    parser.add_argument("--maps", choices=("random", "peaked"), default="random")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scores = score_maps(_maps(rng, args.maps, args.images, args.map), args.size)
    corners = np.sort(rng.integers(0, args.size, (args.images, 1, 2, 2)), axis=2)
    gt = corners.transpose(0, 1, 3, 2).reshape(args.images, 1, 4)[..., [0, 2, 1, 3]]
    valid = np.ones((args.images, 1), bool)
    grid = threshold_grid(args.thresholds)
    for name, largest in (("MaxBoxAccV2 (all regions)", False), ("MaxBoxAcc + MaxBoxAccV2", True)):
        start = time.perf_counter()
        sweep = sweep_boxes(scores, gt, valid, grid, largest=largest)
        seconds = time.perf_counter() - start
        print(
            f"{name}: {args.images / seconds:.1f} images/s ({args.images} maps {args.size}x{args.size}, "
            f"{args.thresholds} thresholds, {seconds:.2f} s; V2 {sweep.max_box_acc_v2():.3f})"
        )


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
