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
    "name",
]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)
PAGE_SIZES = (30, 60, 120, 240)  # gallery cards per page
DEFAULT_PAGE_SIZE = 60
COMPARE_TOP = 20  # classes in `compare`'s table


@dataclass(frozen=True)
class Thresholds:
    """When `summarize` flags a class, as multiples of the dataset's median (see `cambatch.inspection.summarize`)."""

    border_ratio: float = 1.5
    spread_ratio: float = 1.5
    off_object_ratio: float = 0.5  # flag 'off-object' at or below this x the median energy_in_gt
    _: KW_ONLY
    lock_score: float = 0.25  # `fixed-location`: position lock at or above this (see `cambatch.inspection.shortcuts`)
    min_lock_images: int = 5  # ... in a group of at least this many images
