"""The trust columns (`--sanity`, `--road`, `--deletion-insertion`; docs/trust.md) in `summarize`: their
means per group and over the run, and two flags.

- `model-insensitive`: the group's mean `sanity_rank_corr` >= `Thresholds.insensitive_corr`: its
  maps barely change when the model's weights are re-initialised, so they show the image more than
  what the model learnt (Adebayo et al., NeurIPS 2018).
- `class-agnostic`: the group's mean `class_sensitivity` >= `Thresholds.agnostic_ssim`: its maps
  barely change with the class explained (Eigen-CAM's are the same for every class).

It reads these columns alone, of the rows `summarize` groups (one per image, its top-1; in a `--classes` run,
every explained row).
"""

from __future__ import annotations

import pandas as pd

from ..report.schema import TRUST_NAMES
from .options import Thresholds

FLAGS = {  # flag name -> (its column in the table, the trust column it reads, its threshold in `Thresholds`)
    "model-insensitive": ("model_insensitive_flag", "sanity_rank_corr", "insensitive_corr"),
    "class-agnostic": ("class_agnostic_flag", "class_sensitivity", "agnostic_ssim"),
}


def trust_columns(images: pd.DataFrame) -> list[str]:
    """The trust columns `images` holds values of (a run without the options has them null)."""
    return [name for name in TRUST_NAMES if name in images.columns and bool(images[name].notna().any())]


def trust_table(images: pd.DataFrame, key: str, thresholds: Thresholds) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per group of `images` by `key` (index: the group as text): the mean of each trust column present and
    the boolean flag columns (False where their column is absent); and the run's means, `mean_<column>`.
    """
    present = trust_columns(images)
    table = images.dropna(subset=[key]).groupby(key, observed=True)[present].mean().astype(float)
    table.index = table.index.astype(str)
    for flag, source, threshold in FLAGS.values():
        table[flag] = table[source] >= getattr(thresholds, threshold) if source in present else False
    return table, {f"mean_{name}": float(images[name].mean()) for name in present}
