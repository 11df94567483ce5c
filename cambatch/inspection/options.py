"""The choices and defaults of the inspection commands (`summarize`, `compare`, `gallery`), declared once.

Plain Python (no pandas), so the CLI lists them in `--help` without loading the readers.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Literal, get_args

# Each choice is a `Literal` (the CLI takes it as the option's type, so click checks the choice) and its
# values as a tuple.
GroupBy = Literal["class", "label"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)
Format = Literal["table", "csv", "json"]
FORMATS: tuple[str, ...] = get_args(Format)
SortKey = Literal[
    "images",
    "mean_probability",
    "accuracy",
    "active_area",
    "border_energy",
    "entropy",
    "position_lock",
    "energy_in_gt",
    "pointing_acc",
    "sanity_rank_corr",
    "class_sensitivity",
    "road_morf",
    "road_lerf",
    "road_combined",
    "deletion_auc",
    "insertion_auc",
    "name",
]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)
PAGE_SIZES = (30, 60, 120, 240)  # gallery cards per page
DEFAULT_PAGE_SIZE = 60
COMPARE_TOP = 20  # classes in `compare`'s table


@dataclass(frozen=True)
class Thresholds:
    """When `summarize` flags a class: multiples of the dataset's median (see `cambatch.inspection.summarize`), and
    levels of the trust columns' means.
    """

    border_ratio: float = 1.5
    spread_ratio: float = 1.5
    off_object_ratio: float = 0.5  # flag 'off-object' at or below this x the median energy_in_gt
    _: KW_ONLY
    lock_score: float = 0.25  # `fixed-location`: position lock at or above this (see `cambatch.inspection.shortcuts`)
    min_lock_images: int = 5  # ... in a group of at least this many images
    # `model-insensitive` and `class-agnostic` (see `cambatch.inspection.trust`; docs/trust.md for the values measured)
    insensitive_corr: float = 0.9  # flag at or above this mean sanity_rank_corr
    agnostic_ssim: float = 0.95  # flag at or above this mean class_sensitivity
