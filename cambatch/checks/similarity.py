"""How alike two runs' maps of the same images are: Pearson r of each image's top-1 maps, where both runs
predicted the same top-1 class.

An image is the same image in both runs when its INPUT and its path there are (`input_root` and `path`),
never by its file name alone. Both maps go to the common grid of the shortcut tools
(`inspection.shortcuts.grid_maps`: ReLU'd, min-max normalized, resampled to 32 x 32 cells of the
displayed image), so runs of models with different feature grids compare. A flat map (no positive
cell) has no correlation: its image takes no part. Only the top-1 rows' maps are read, and the grids are
made `CHUNK` images at a time: memory holds the two runs' top-1 maps as the report stores them (float16),
never a million grids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..inspection.shortcuts import grid_maps
from ..report.parts import read_settings
from ..report.reader import load_report, per_image, report_columns

IMAGE = ("input_root", "path")  # what names an image across runs
COLUMNS = (*IMAGE, "rank", "class_name", "status", "run_id", "map", "map_height", "map_width")
MAP = ("map", "map_height", "map_width")
CHUNK = 4096  # images whose grids are made at once: 2 x 4096 x 32 x 32 float32 = 32 MB


def top_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """`per_image` of each INPUT on its own: two INPUTs holding `x.png` hold two images."""
    if "input_root" not in frame.columns:
        return per_image(frame)
    groups = [per_image(rows) for _, rows in frame.groupby("input_root", observed=True, sort=True)]
    return pd.concat(groups, ignore_index=True) if groups else per_image(frame)


def top1_maps(out: Path | str) -> pd.DataFrame:
    """Each processed image's top-1 class and map: `input_root`, `path`, `class_name`, `map`, `map_height`,
    `map_width`.
    """
    present = set(report_columns(out))
    # A top-k run's top-1 row is its rank-1 row: only those maps are read (k times fewer). A `--classes` run's
    # best-ranked explained class may sit at any rank.
    rank = 1 if read_settings(out).get("classes") is None else None
    top = top_rows(load_report(out, status="ok", rank=rank, columns=[c for c in COLUMNS if c in present]))
    key = [c for c in IMAGE if c in top.columns]
    return top[[*key, "class_name", *MAP]].astype({c: str for c in (*key, "class_name")})


def map_similarity(out: Path | str, baseline: Path | str) -> pd.DataFrame:
    """Per image in both runs with the same top-1 class and two maps that are not flat: `class_name` and `r`."""
    now, before = top1_maps(out), top1_maps(baseline)
    key = [c for c in IMAGE if c in now.columns and c in before.columns]
    pairs = now.merge(before, on=[*key, "class_name"], suffixes=("", "_baseline"))
    pairs = pairs.dropna(subset=["map_height", "map_height_baseline"]).reset_index(drop=True)
    r = np.concatenate([_pearson(pairs.iloc[start : start + CHUNK]) for start in range(0, len(pairs), CHUNK)] or [[]])
    found = pd.DataFrame({"class_name": pairs["class_name"], "r": r})
    return found.dropna(subset=["r"]).reset_index(drop=True)


def _pearson(pairs: pd.DataFrame) -> np.ndarray:
    """Pearson r of each row's two maps on the common grid; NaN where either is flat."""
    baseline = pairs[[f"{c}_baseline" for c in MAP]].set_axis(list(MAP), axis=1)
    a, b = (grids.reshape(len(pairs), -1) for grids in (grid_maps(pairs), grid_maps(baseline)))
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 1e-12, (a * b).sum(axis=1) / norms, np.nan)
