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

A run's report streams past (`report.scan`) into sums per group: memory grows with the groups, never with
the images; the medians are exact (`inspection.medians`, two more passes over three columns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..model.catalog import MULTI_LABEL
from ..report.reader import chosen_classes, explained_rows, has_labels, image_key, per_image
from ..report.scan import ReportScan
from ..report.schema import TRUST_NAMES
from .group_sums import GroupSums
from .medians import Medians
from .options import SORT_KEYS, GroupBy, Thresholds
from .shortcuts import GroupMaps, group_key
from .trust import FLAGS, TrustSums

UNLABELLED = "(unlabelled)"  # the label group of the images without one
# Per-image batches with every explained row of their images (`ReportScan.image_rows`, or one in-memory frame),
# streamed anew on each call: one per pass.
ImageRows = Callable[[], Iterable[tuple[pd.DataFrame, pd.DataFrame]]]


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
    by = _grouping(by, labelled, chosen)
    top = per_image(df)
    rows = explained_rows(df) if chosen else top  # only a `--classes` run groups every explained row
    errors = len(df.loc[df["status"] == "error", image_key(df)].drop_duplicates())
    read = lambda: [(top, rows)]  # noqa: E731 - one batch: the whole frame
    return summarize_images(read, by, labelled, errors, dict(df.attrs), thresholds, read, chosen=chosen)


def _grouping(by: GroupBy | None, labelled: bool, chosen: bool = False) -> GroupBy:
    if by == "label" and chosen:
        raise ValueError(
            "this run explains classes chosen with --classes, not its predictions: summarize it by class, "
            "or summarize a top-k run per label"
        )
    if by == "label" and not labelled:
        raise ValueError("this report has no labels: summarize by class, or run with labels")
    return by or ("label" if labelled else "class")


def grouped_rows(images: pd.DataFrame, rows: pd.DataFrame, by: GroupBy, chosen: bool) -> pd.DataFrame:
    """The rows a grouping counts of one batch: each image's top-1 (per label, `UNLABELLED` for the images
    without one: the table then adds up to every image), or every explained row of a `--classes` run.
    """
    if chosen:
        return rows
    if by != "label" or "label" not in images.columns:
        return images
    return images.assign(label=images["label"].astype(object).where(images["label"].notna(), UNLABELLED))


class GroupTable(GroupSums):
    """Running sums per group of one row per image: `summarize`'s table, in memory that grows with the groups."""

    MEANS = {  # table column -> the per-image column it averages (NaN / NA left out)
        "mean_probability": "probability",
        "accuracy": "correct",
        "active_area": "active_area",
        "border_energy": "border_energy",
        "entropy": "entropy",
        "energy_in_gt": "energy_in_gt",
        "pointing_acc": "pointing_hit",
    }

    def __init__(self, key: str):
        super().__init__(key, self.MEANS)

    def table(self, labelled: bool, annotated: bool) -> pd.DataFrame:
        wanted = ["mean_probability", *(["accuracy"] if labelled else []), "active_area", "border_energy", "entropy"]
        wanted += ["energy_in_gt", "pointing_acc"] if annotated else []
        table = pd.DataFrame({"images": self.sizes()}, index=self.sums.index)
        for name in wanted:
            mean = self.mean(name)
            table[name] = np.nan if mean is None else mean
        table.index = table.index.astype(str)
        return table


class SummarySums:
    """What `summarize` adds up in its one pass over the images: the group table, the group maps and the first
    pass of the medians.
    """

    def __init__(self, by: GroupBy, thresholds: Thresholds, *, chosen: bool = False):
        self.by, self.thresholds, self.chosen = by, thresholds, chosen
        self.groups = GroupTable(group_key(by))
        self.trust = TrustSums(group_key(by))
        self.maps = GroupMaps(group_key(by), thresholds)
        self.middle = Medians(dict.fromkeys(MEDIANS, np.float32))
        self.images = 0
        self.annotated = self.mapped = False

    def grouped(self, images: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows this grouping counts of a batch (`grouped_rows`)."""
        return grouped_rows(images, rows, self.by, self.chosen)

    def add(self, images: pd.DataFrame, rows: pd.DataFrame) -> None:
        """A batch: its images (one row each) and their explained rows (`ReportScan.image_rows`)."""
        self.images += len(images)
        counted = self.grouped(images, rows)
        self.groups.add(counted)
        self.trust.add(counted)
        self.middle.count(_columns(counted, MEDIANS))
        self.annotated |= "energy_in_gt" in counted.columns and bool(counted["energy_in_gt"].notna().any())
        if "map" in counted.columns:
            self.mapped = True
            self.maps.add(counted)

    def medians(self, read: ImageRows) -> dict[str, float]:
        """After the pass: the run's medians the flags compare with (exact; `read` streams the images again,
        MEDIANS enough, for the passes left: `inspection.medians`).
        """
        self.middle.next_pass()
        return self.middle.finish(lambda: (_columns(self.grouped(*batch), MEDIANS) for batch in read()))

    def summary(self, middle: dict[str, float], labelled: bool, errors: int, settings: dict) -> ClassSummary:
        """The table with its flags, judged against the run's medians `middle` (`median_figures`)."""
        thresholds, annotated = self.thresholds, self.annotated
        table = self.groups.table(labelled, annotated)
        table.index.name = self.by
        table["border_flag"] = table["border_energy"] >= thresholds.border_ratio * middle["border_energy"]
        table["spread_flag"] = table["active_area"] >= thresholds.spread_ratio * middle["active_area"]
        table["fixed_location_flag"] = False
        baseline = float("nan")
        if self.mapped and self.maps.codes:
            table, baseline = _with_position_lock(table, self.maps)
        median_energy = middle["energy_in_gt"] if annotated else float("nan")
        if annotated:
            table["off_object_flag"] = table["energy_in_gt"] <= thresholds.off_object_ratio * median_energy
        off_object = table["off_object_flag"] if annotated else [False] * len(table)
        trust, trust_means = self.trust.table(thresholds, table.index)
        table = table.join(trust)
        flags = {"border": table["border_flag"], "spread": table["spread_flag"]}
        flags |= {"off-object": off_object, "fixed-location": table["fixed_location_flag"]}
        flags |= {name: table[column] for name, (column, _, _) in FLAGS.items()}
        table["flags"] = [
            ", ".join(name for name, hit in zip(flags, hits, strict=True) if hit)
            for hits in zip(*flags.values(), strict=True)
        ]
        middle_border, middle_area = middle["border_energy"], middle["active_area"]
        summary = ClassSummary(
            table,
            self.by,
            self.images,
            errors,
            middle_border,
            middle_area,
            thresholds,
            settings,
            baseline,
            chosen_classes=self.chosen,
        )
        summary.median_energy_in_gt = median_energy
        summary.trust = trust_means
        return summary


def summarize_images(
    read: ImageRows,
    by: GroupBy,
    labelled: bool,
    errors: int,
    settings: dict,
    thresholds: Thresholds,
    light: ImageRows,
    *,
    chosen: bool = False,
) -> ClassSummary:
    """`summarize` of the per-image batches `read()` streams (each with its images' explained rows): one pass
    for the sums, one more over `light()` (the same images, MEDIANS enough) for the medians.
    """
    sums = SummarySums(by, thresholds, chosen=chosen)
    for images, rows in read():
        sums.add(images, rows)
    return sums.summary(sums.medians(light), labelled, errors, settings)


MEDIANS = ("border_energy", "active_area", "energy_in_gt")  # the dataset-wide figures flags compare with


def _columns(images: pd.DataFrame, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named float columns of a batch (NaN for one the report has not)."""
    return {
        name: images[name].to_numpy(np.float32, na_value=np.nan)
        if name in images.columns
        else np.full(len(images), np.nan, np.float32)
        for name in names
    }


def _with_position_lock(table: pd.DataFrame, maps: GroupMaps) -> tuple[pd.DataFrame, float]:
    """The position lock, flag and mean-map peak of each group (images whose rows hold no map take no part)."""
    patterns, baseline = maps.patterns()[:2]
    wanted = ["position_lock", "peak_x", "peak_y", "peak_x0", "peak_y0", "peak_x1", "peak_y1"]
    joined = table.join(patterns[wanted])
    joined["fixed_location_flag"] = patterns["fixed_location"].reindex(joined.index, fill_value=False).astype(bool)
    return joined, baseline


COLUMNS = (
    "class_name",
    "probability",
    "active_area",
    "border_energy",
    "entropy",
    "label",
    "correct",
    "map",
    "map_height",
    "map_width",
    "energy_in_gt",
    "pointing_hit",
    *TRUST_NAMES,
)


def summarize_run(out: Path | str, by: GroupBy | None = None, thresholds: Thresholds = Thresholds()) -> ClassSummary:
    """`summarize` on the report in `out`, streamed: memory grows with the groups, not with the images."""
    scan = ReportScan(out)
    chosen = scan.chosen_classes is not None
    labelled = scan.labelled and not chosen
    by = _grouping(by, labelled, chosen)
    read, light = (lambda: scan.image_rows(COLUMNS)), (lambda: scan.image_rows(MEDIANS))
    return summarize_images(read, by, labelled, scan.keys.failed, scan.settings, thresholds, light, chosen=chosen)
