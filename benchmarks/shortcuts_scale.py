"""How long mean maps, position lock and map clusters take for a large report (docs/performance.md).

    python benchmarks/shortcuts_scale.py [--rows 100000] [--classes 100]

Builds a report frame as `load_report(out, maps=True)` returns it (one top-1 row per image, 7 x 7
float16 maps: Gaussian blobs at random places, plus one class in ten whose blob always sits in a
corner) and times `find_shortcuts` on it, and `summarize` with the position lock.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from cambatch.inspection.shortcuts import find_shortcuts
from cambatch.inspection.summarize import summarize


def report(rows: int, classes: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    klass = rng.integers(0, classes, rows)
    locked = klass % 10 == 0
    centre = np.where(locked[:, None], [0.1, 0.1], rng.uniform(0.1, 0.9, (rows, 2)))
    grid = (np.arange(7) + 0.5) / 7
    maps = np.exp(
        -((grid[None, :, None] - centre[:, 1, None, None]) ** 2 + (grid[None, None, :] - centre[:, 0, None, None]) ** 2)
        / 0.02
    )
    maps = (maps * 20 + rng.normal(0, 1, maps.shape)).astype(np.float16).reshape(rows, 49)
    return pd.DataFrame(
        {
            "path": [f"img_{i:07d}.jpg" for i in range(rows)],
            "rank": 1,
            "class_name": pd.Categorical([f"class {k:03d}" for k in klass]),
            "status": "ok",
            "run_id": "r",
            "probability": rng.random(rows).astype(np.float32),
            "active_area": rng.random(rows).astype(np.float32),
            "border_energy": rng.random(rows).astype(np.float32),
            "entropy": rng.random(rows).astype(np.float32),
            "map": list(maps),
            "map_height": 7,
            "map_width": 7,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args()
    df = report(args.rows, args.classes)
    started = time.perf_counter()
    found = find_shortcuts(df)
    clustered = time.perf_counter() - started
    started = time.perf_counter()
    table = summarize(df, "class").table
    summarized = time.perf_counter() - started
    flagged = int(found.classes.fixed_location.sum())
    print(
        f"{args.rows:,} rows, {args.classes} classes: find_shortcuts (mean maps, position lock, clusters) "
        f"{clustered:.1f} s; summarize with the position lock {summarized:.1f} s; "
        f"{flagged} classes fixed-location (expected {len(range(0, args.classes, 10))}), "
        f"{int(table.fixed_location_flag.sum())} in summarize; {len(found.clusters)} clusters"
    )


if __name__ == "__main__":
    main()
