"""The trust columns (`--sanity`, `--road`, `--deletion-insertion`; docs/trust.md) in `summarize`: their
means per group and over the run, and two flags.

- `model-insensitive`: the group's mean `sanity_rank_corr` >= `Thresholds.insensitive_corr`: its
  maps barely change when the model's weights are re-initialised, so they show the image more than
  what the model learnt (Adebayo et al., NeurIPS 2018).
- `class-agnostic`: the group's mean `class_sensitivity` >= `Thresholds.agnostic_ssim`: its maps
  barely change with the class explained (Eigen-CAM's are the same for every class).

It reads these columns alone, of the rows `summarize` groups (one per image, its top-1; in a `--classes` run,
every explained row), a batch at a time as `summarize` streams the report: memory grows with the groups.
"""

from __future__ import annotations

import pandas as pd

from ..report.schema import TRUST_NAMES
from .group_sums import GroupSums
from .options import Thresholds

FLAGS = {  # flag name -> (its column in the table, the trust column it reads, its threshold in `Thresholds`)
    "model-insensitive": ("model_insensitive_flag", "sanity_rank_corr", "insensitive_corr"),
    "class-agnostic": ("class_agnostic_flag", "class_sensitivity", "agnostic_ssim"),
}


class TrustSums:
    """Running sums and counts of the trust columns per group of `key` (`GroupSums`) and over the run, rows
    without a group included (NaN / NA left out).
    """

    def __init__(self, key: str):
        self.groups = GroupSums(key, {name: name for name in TRUST_NAMES})
        self.total = dict.fromkeys(TRUST_NAMES, 0.0)
        self.count = dict.fromkeys(TRUST_NAMES, 0)

    def add(self, images: pd.DataFrame) -> None:
        """One batch of the rows `summarize` groups."""
        names = [name for name in TRUST_NAMES if name in images.columns]
        if not names:
            return
        values = images[names].astype(float)
        for name in names:
            self.total[name] += float(values[name].sum())
            self.count[name] += int(values[name].notna().sum())
        self.groups.add(images)

    @property
    def present(self) -> list[str]:
        """The trust columns with a value (a run without the options has them null)."""
        return [name for name in TRUST_NAMES if self.count[name]]

    def table(self, thresholds: Thresholds, groups: pd.Index | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
        """Per group (`groups`, else those seen): the mean of each trust column present and the boolean flag
        columns (False where their column is absent or the group has no value); and the run's means,
        `mean_<column>`.
        """
        index = self.groups.groups if groups is None else groups
        table = pd.DataFrame(index=index)
        for name in self.present:
            table[name] = self.groups.mean(name, index)
        for flag, source, threshold in FLAGS.values():
            table[flag] = (table[source] >= getattr(thresholds, threshold)) if source in self.present else False
        return table, {f"mean_{name}": self.total[name] / self.count[name] for name in self.present}


def trust_columns(images: pd.DataFrame) -> list[str]:
    """The trust columns `images` holds values of (a run without the options has them null)."""
    return [name for name in TRUST_NAMES if name in images.columns and bool(images[name].notna().any())]


def trust_table(images: pd.DataFrame, key: str, thresholds: Thresholds) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per group of `images` by `key` (index: the group as text): the mean of each trust column present and
    the boolean flag columns (False where their column is absent); and the run's means, `mean_<column>`.
    """
    sums = TrustSums(key)
    sums.add(images)
    return sums.table(thresholds)
