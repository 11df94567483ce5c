"""The choices and defaults of `cambatch slices` and `cambatch reliance`, declared once.

Plain Python (no pandas, no torch), so the CLI lists them in `--help` without loading either command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

SliceBy = Literal["label", "class"]  # a mixture per true class, or per predicted class
SLICE_BY: tuple[str, ...] = get_args(SliceBy)
SLICES = 5  # slices kept (Domino's n_slices)
BiasFormat = Literal["table", "json"]  # both commands print a table, or JSON for scripts
BIAS_FORMATS: tuple[str, ...] = get_args(BiasFormat)


@dataclass(frozen=True, kw_only=True)
class RelianceOptions:
    """Which images `reliance` occludes, and when it flags a class (see `cambatch.bias.reliance`)."""

    min_images: int = 5  # a class is measured by default when at least this many images predict it
    images_per_class: int = 100  # images occluded per class, a hashed sample when it has more
    ratio: float = 2.0  # flag at or above this reliance_drop / control_drop ...
    min_drop: float = 0.1  # ... when the drop itself is at least this (a ratio of two tiny drops means nothing)
    min_z: float = 3.0  # ... and beats the control by this many standard errors: chance, over many classes, rarely
    seed: int = 0  # the control boxes' places
    batch_size: int = 32  # images per forward pass, each with its occluded copies

    def flags(self, drop: float, ratio: float, z: float) -> bool:
        """Whether a mean drop, its ratio to the control's and the z score of their difference earn a flag."""
        return bool(ratio >= self.ratio and drop >= self.min_drop and z >= self.min_z)
