"""Images per second of the WSOL box sweep (`cambatch evaluate`'s MaxBoxAcc / MaxBoxAccV2), on this machine.

    python benchmarks/evaluate_speed.py [--images 200] [--thresholds 100] [--size 224] [--map 7]

Random smooth maps (map x map, bilinearly resized to size x size as the protocol does) against one
random ground-truth box each; the sweep is the whole of the work (`sweep_boxes`): V2 alone (all
regions), and V1 + V2 together (the largest region needs the outline areas too).
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
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scores = score_maps(rng.random((args.images, args.map, args.map)), args.size)
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


if __name__ == "__main__":
    main()
