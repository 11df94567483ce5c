"""`cambatch summarize OUT`: per predicted class (or per label) audit numbers, with flags.

A class is flagged when its maps, on average, lean on the image border or spread out far more
than the dataset's typical map:

- `border`: mean `border_energy` of the class >= `border_ratio` x the median `border_energy` of
  all images (default 1.5). The frame is the outer 10% of each side, so a map spread evenly has
  `border_energy` of about 0.36; a class at 1.5x the median keys on the edges (snow, watermarks,
  frames).
- `spread`: mean `active_area` >= `spread_ratio` x the median `active_area` (default 1.5): the
  model looks everywhere rather than at an object.
- `fixed-location`: the class's maps sit at the same place in every image, far more than two maps
  of the run do anyway: `position_lock` >= `lock_score` (default 0.25) with at least
  `min_lock_images` (5) images (`cambatch.inspection.shortcuts`). Needs the report's maps; the
  class mean map's peak (`peak_x`, `peak_y`) and peak region (`peak_x0` ... `peak_y1`) come with it.
- `off-object` (runs with `--annotations`): mean `energy_in_gt` <= `off_object_ratio` x the median
  `energy_in_gt` of the annotated images (default 0.5): the class's maps miss the ground truth.
- `model-insensitive` and `class-agnostic` (runs with `--sanity`): see `cambatch.inspection.trust`,
  which also gives each group's and the run's means of the columns of `--sanity`, `--road` and
  `--deletion-insertion`.

Every image (its `input_root` and `path`) counts once, through its top-1 row (see `cambatch.per_image`); per
label, images without one form the `(unlabelled)` group. A `--classes` run explains the classes it was given,
not its predictions: it is summarized per explained class, each image once in each class's group, and never
per label (its best-ranked row is no top-1, so it has no accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..model.catalog import MULTI_LABEL
from ..report.reader import (
    chosen_classes,
    explained_rows,
    has_labels,
    image_key,
    load_report,
    per_image,
    report_columns,
)
from ..report.schema import TRUST_NAMES
from .options import SORT_KEYS, GroupBy, Thresholds
from .shortcuts import class_patterns
from .trust import FLAGS, trust_table

UNLABELLED = "(unlabelled)"  # the label group of the images without one


@dataclass
class ClassSummary:
    """The per-group table and the dataset-wide figures it was judged against."""

    table: pd.DataFrame  # index: class or label name; see `summarize` for the columns
    by: GroupBy
    images: int  # images with a prediction
    errors: int  # images that failed
    median_border_energy: float
    median_active_area: float
    thresholds: Thresholds
    settings: dict[str, Any] = field(default_factory=dict)
    lock_baseline: float = float("nan")  # the run's mean map correlation across groups (`shortcuts`)
    median_energy_in_gt: float = float("nan")  # of the annotated images (`--annotations`); NaN without
    trust: dict[str, float] = field(default_factory=dict)  # the run's means of the trust columns (`inspection.trust`)
    chosen_classes: bool = False  # a `--classes` run: every explained row counts in its class's group

    @property
    def counted(self) -> str:
        """How the table counts images, in words (its caption says it)."""
        if self.chosen_classes:
            return "explained classes chosen with --classes, not predictions: each image counts once per class"
        return "each image once, by its top-1 prediction" if self.by == "class" else "each image once, by its label"

    @property
    def multi_label(self) -> bool:
        """A run with `--activation sigmoid`: probabilities per class, `accuracy` by the predicted set."""
        return self.settings.get("activation") == MULTI_LABEL

    @property
    def flagged(self) -> pd.DataFrame:
        """The rows with at least one flag."""
        return self.table[self.table["flags"] != ""]

    def sorted(self, key: str = "images", top: int | None = None) -> pd.DataFrame:
        """The table sorted by `key` (largest first; `name` alphabetical), cut to `top` rows."""
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}; choose from {', '.join(SORT_KEYS)}")
        if key == "name":
            ordered = self.table.sort_index(key=lambda index: index.str.lower())
        elif key not in self.table.columns:
            raise ValueError(f"cannot sort by {key!r}: the table has no such column (accuracy needs labels)")
        else:
            # Ties broken by name so the order is stable from run to run.
            ordered = (
                self.table.assign(_name=self.table.index.str.lower())
                .sort_values([key, "_name"], ascending=[False, True])
                .drop(columns="_name")
            )
        return ordered.head(top) if top else ordered


def summarize(df: pd.DataFrame, by: GroupBy | None = None, thresholds: Thresholds = Thresholds()) -> ClassSummary:
    """Summarize a report DataFrame (from `load_report`) per predicted class or per label.

    `by=None` groups by label when the report has labels, else by predicted class. Columns:
    `images`, `mean_probability`, `accuracy` (with labels: the share of the group's images whose
    top-1 matches the label), mean `active_area`, `border_energy`, `entropy`; with `--annotations`
    mean `energy_in_gt` and `pointing_acc` (the share of `pointing_hit`); when `df` holds the
    maps (`load_report(..., maps=True)`), `position_lock`, `peak_x`, `peak_y` and the peak region
    `peak_x0`, `peak_y0`, `peak_x1`, `peak_y1` of the class mean map; the booleans `border_flag`,
    `spread_flag` (`off_object_flag` with annotations, `fixed_location_flag` with maps); the means of the
    trust columns the report holds and `model_insensitive_flag`, `class_agnostic_flag` (`inspection.trust`);
    and `flags` (text, empty when none).

    >>> import cambatch
    >>> s = cambatch.summarize_report(cambatch.load_report("cams"))  # doctest: +SKIP
    >>> s.flagged[["images", "border_energy"]]                       # doctest: +SKIP
    """
    chosen = chosen_classes(df) is not None
    labelled = has_labels(df) and not chosen
    by = by or ("label" if labelled else "class")
    if by == "label" and chosen:
        raise ValueError(
            "this run explains classes chosen with --classes, not its predictions: summarize it by class, "
            "or summarize a top-k run per label"
        )
    if by == "label" and not labelled:
        raise ValueError("this report has no labels: summarize by class, or run with labels")
    top = per_image(df)
    # The rows grouped: each image's top-1 (its label's group, `(unlabelled)` without one), or every chosen class.
    images = explained_rows(df) if chosen else _with_label_groups(top, by)
    errors = len(df.loc[df["status"] == "error", image_key(df)].drop_duplicates())
    key = "label" if by == "label" else "class_name"
    grouped = images.groupby(key, observed=True)
    table = pd.DataFrame(
        {
            "images": grouped.size(),
            "mean_probability": grouped["probability"].mean(),
            **({"accuracy": grouped["correct"].mean().astype(float)} if labelled else {}),
            "active_area": grouped["active_area"].mean(),
            "border_energy": grouped["border_energy"].mean(),
            "entropy": grouped["entropy"].mean(),
        }
    )
    annotated = "energy_in_gt" in images.columns and bool(images["energy_in_gt"].notna().any())
    if annotated:
        table["energy_in_gt"] = grouped["energy_in_gt"].mean()
        table["pointing_acc"] = grouped["pointing_hit"].mean().astype(float)
    table.index = table.index.astype(str)
    table.index.name = by
    median_border = float(images["border_energy"].median())
    median_area = float(images["active_area"].median())
    table["border_flag"] = table["border_energy"] >= thresholds.border_ratio * median_border
    table["spread_flag"] = table["active_area"] >= thresholds.spread_ratio * median_area
    table["fixed_location_flag"] = False
    baseline = float("nan")
    if "map" in images.columns:
        table, baseline = _with_position_lock(table, images, key, thresholds)
    median_energy = float(images["energy_in_gt"].median()) if annotated else float("nan")
    if annotated:
        table["off_object_flag"] = table["energy_in_gt"] <= thresholds.off_object_ratio * median_energy
    off_object = table["off_object_flag"] if annotated else [False] * len(table)
    trust, trust_means = trust_table(images, key, thresholds)
    table = table.join(trust)
    flags = {"border": table["border_flag"], "spread": table["spread_flag"]}
    flags |= {"off-object": off_object, "fixed-location": table["fixed_location_flag"]}
    flags |= {name: table[column] for name, (column, _, _) in FLAGS.items()}
    table["flags"] = [
        ", ".join(name for name, hit in zip(flags, hits, strict=True) if hit)
        for hits in zip(*flags.values(), strict=True)
    ]
    summary = ClassSummary(
        table,
        by,
        len(top),
        errors,
        median_border,
        median_area,
        thresholds,
        dict(df.attrs),
        baseline,
        chosen_classes=chosen,
    )
    summary.median_energy_in_gt = median_energy
    summary.trust = trust_means
    return summary


def _with_label_groups(top: pd.DataFrame, by: GroupBy) -> pd.DataFrame:
    """Per label, the images without one grouped as `UNLABELLED`: the table then adds up to every image."""
    if by != "label":
        return top
    return top.assign(label=top["label"].astype(object).where(top["label"].notna(), UNLABELLED))


def _with_position_lock(
    table: pd.DataFrame, images: pd.DataFrame, key: str, thresholds: Thresholds
) -> tuple[pd.DataFrame, float]:
    """The position lock, flag and mean-map peak of each group (images whose rows hold no map take no part)."""
    mapped = images[images["map_height"].notna()].dropna(subset=[key]).reset_index(drop=True)
    if mapped.empty:
        return table, float("nan")
    patterns, baseline = class_patterns(mapped, key, thresholds)[:2]
    patterns.index = patterns.index.astype(str)
    wanted = ["position_lock", "peak_x", "peak_y", "peak_x0", "peak_y0", "peak_x1", "peak_y1"]
    joined = table.join(patterns[wanted])
    joined["fixed_location_flag"] = patterns["fixed_location"].reindex(joined.index, fill_value=False).astype(bool)
    return joined, baseline


def summarize_run(out: Path | str, by: GroupBy | None = None, thresholds: Thresholds = Thresholds()) -> ClassSummary:
    """`summarize` on the report in `out`, reading only the columns it needs."""
    wanted = [
        "input_root",
        "path",
        "rank",
        "class_name",
        "probability",
        "active_area",
        "border_energy",
        "entropy",
        "status",
        "run_id",
        "label",
        "correct",
        "map",
        "map_height",
        "map_width",
        "energy_in_gt",
        "pointing_hit",
        *TRUST_NAMES,
    ]
    present = set(report_columns(out))
    return summarize(load_report(out, columns=[c for c in wanted if c in present]), by, thresholds)
