"""The metrics a policy's checks can name, declared once: `METRICS`.

Each `Metric` says what it measures, which way is better, what it needs (labels, annotations, a
baseline run, the report's maps) and how it is computed: `run` gives the run's one value, `per_class`
one value per class; a metric has the levels whose function it has. Adding a metric is one entry
below (its functions read what `cambatch.checks.data.RunData` offers, through the inspection and
evaluation code); the policy's validation, `--help`, the docs' table (`metrics_markdown`) follow.

Plain Python at import (no pandas), so the CLI and the policy parser load it quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from .data import ClassValues, RunData

Level = Literal["run", "class"]
LEVELS: tuple[str, ...] = get_args(Level)
Need = Literal["labels", "annotations", "baseline", "maps", "slices"]
NEEDS: tuple[str, ...] = get_args(Need)
Better = Literal["lower", "higher"]


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One metric of the catalog: its name (what a policy's `metric` names) and how it is computed."""

    name: str
    doc: str
    better: Better
    needs: tuple[Need, ...] = ()
    run: Callable[[RunData], float] | None = None
    per_class: Callable[[RunData], ClassValues] | None = None

    @property
    def levels(self) -> tuple[Level, ...]:
        return tuple(level for level, f in zip(LEVELS, (self.run, self.per_class), strict=True) if f is not None)


def _flag(flag: str, doc: str, needs: tuple[Need, ...] = ()) -> Metric:
    """A `cambatch summarize` flag as a count: per class 1 or 0, for the run the number of classes flagged."""
    return Metric(
        name=f"flag_{flag.replace('-', '_')}",
        doc=f"`cambatch summarize`'s `{flag}` flag ({doc}): per class 1 or 0; for the run, the classes flagged",
        better="lower",
        needs=needs,
        run=lambda d: d.flags(flag).total,
        per_class=lambda d: d.flags(flag),
    )


_METRICS = (
    # ---- the run alone ----
    Metric(
        name="images",
        doc="images in the report, processed or failed",
        better="higher",
        run=lambda d: float(d.counts.images),
    ),
    Metric(
        name="error_rate",
        doc="share of the images that failed (`status` error)",
        better="lower",
        run=lambda d: d.counts.error_rate,
    ),
    Metric(
        name="accuracy",
        doc="share of the labelled images whose top-1 class is their label (`correct`)",
        better="higher",
        needs=("labels",),
        run=lambda d: d.counts.accuracy,
    ),
    Metric(
        name="class_accuracy",
        doc="per label: share of its images whose top-1 class is the label (`cambatch summarize`'s accuracy)",
        better="higher",
        needs=("labels",),
        per_class=lambda d: d.summary_column("accuracy"),
    ),
    Metric(
        name="position_lock",
        doc="how much a class's maps sit at the same place in every image, beyond two maps of the run anyway "
        "(`cambatch summarize`; about 0 for an object that moves, high for a stamp or a watermark)",
        better="lower",
        needs=("maps",),
        per_class=lambda d: d.summary_column("position_lock"),
    ),
    Metric(
        name="border_energy_ratio",
        doc="a class's mean `border_energy` / the run's median (what the `border` flag compares with `--border-ratio`)",
        better="lower",
        per_class=lambda d: d.summary_ratio("border_energy"),
    ),
    Metric(
        name="active_area_ratio",
        doc="a class's mean `active_area` / the run's median (what the `spread` flag compares with `--spread-ratio`)",
        better="lower",
        per_class=lambda d: d.summary_ratio("active_area"),
    ),
    _flag("border", "its maps lean on the image's border"),
    _flag("spread", "its maps spread over the image"),
    _flag("fixed-location", "its maps sit at one place (position_lock)", ("maps",)),
    _flag("off-object", "its maps miss the ground truth", ("annotations",)),
    # ---- against ground truth (`cambatch evaluate`) ----
    Metric(
        name="max_box_acc_v2",
        doc="MaxBoxAccV2 of `cambatch evaluate` (boxes of the maps against the ground-truth boxes, WSOL protocol)",
        better="higher",
        needs=("annotations", "maps"),
        run=lambda d: d.evaluated("MaxBoxAccV2"),
    ),
    Metric(
        name="pxap",
        doc="PxAP of `cambatch evaluate`: pixel precision-recall of the maps against ground-truth masks",
        better="higher",
        needs=("annotations", "maps"),
        run=lambda d: d.evaluated("PxAP"),
    ),
    Metric(
        name="pointing_acc",
        doc="pointing game of `cambatch evaluate`: the map's maximum within 15 px of the ground truth, per class, "
        "then the mean over classes",
        better="higher",
        needs=("annotations", "maps"),
        run=lambda d: d.evaluated("pointing_acc"),
    ),
    Metric(
        name="energy_in_gt",
        doc="share of the map's mass inside the ground-truth boxes (`cambatch evaluate`)",
        better="higher",
        needs=("annotations", "maps"),
        run=lambda d: d.evaluated("energy_in_gt"),
        per_class=lambda d: d.evaluated_column("energy_in_gt"),
    ),
    Metric(
        name="mask_iou",
        doc="IoU of the map above 20% of its maximum with the ground-truth mask (`cambatch evaluate`)",
        better="higher",
        needs=("annotations", "maps"),
        per_class=lambda d: d.evaluated_column("mask_iou"),
    ),
    # ---- error slices (`cambatch slices`, kept in OUT/slices) ----
    Metric(
        name="slice_accuracy_gap",
        doc="a class's accuracy minus that of its worst error slice (`cambatch slices`: images the model gets "
        "wrong together); 0 without an error slice; for the run, the largest gap",
        better="lower",
        needs=("slices",),
        run=lambda d: d.slice_column("slice_accuracy_gap").values.max(),
        per_class=lambda d: d.slice_column("slice_accuracy_gap"),
    ),
    Metric(
        name="error_slices",
        doc="error slices `cambatch slices` found in a class; for the run, in all classes",
        better="lower",
        needs=("slices",),
        run=lambda d: d.slice_column("error_slices").total,
        per_class=lambda d: d.slice_column("error_slices"),
    ),
    # ---- against a baseline run (`cambatch compare`, the baseline as A) ----
    Metric(
        name="top1_changed",
        doc="share of the images in both runs whose top-1 class differs; per class: of the baseline's top-1 class",
        better="lower",
        needs=("baseline",),
        run=lambda d: d.comparison.overview()["changed_share"],
        per_class=lambda d: d.compared_column("changed_share"),
    ),
    Metric(
        name="accuracy_drop",
        doc="accuracy in the baseline minus accuracy now, over the labelled images in both runs",
        better="lower",
        needs=("baseline", "labels"),
        run=lambda d: d.accuracy_drop(),
    ),
    Metric(
        name="class_accuracy_drop",
        doc="per label: its accuracy in the baseline minus its accuracy now, over its images in both runs",
        better="lower",
        needs=("baseline", "labels"),
        per_class=lambda d: d.class_accuracy_drop(),
    ),
    Metric(
        name="peak_shift",
        doc="mean distance between the peaks of the baseline's top-1 class's map in both runs (`compare`'s "
        "peak_shift: x in image widths, y in image heights)",
        better="lower",
        needs=("baseline",),
        run=lambda d: d.peak_shift(),
        per_class=lambda d: d.compared_column("mean_peak_shift"),
    ),
    Metric(
        name="map_similarity",
        doc="mean Pearson r of an image's top-1 maps in both runs, over the images whose top-1 class is the same "
        "(maps on the common grid of the shortcut tools)",
        better="higher",
        needs=("baseline", "maps"),
        run=lambda d: d.map_similarity(),
        per_class=lambda d: d.map_similarity_by_class(),
    ),
    Metric(
        name="new_flags",
        doc="`cambatch summarize` flags a class has now and did not have in the baseline (a count)",
        better="lower",
        needs=("baseline",),
        run=lambda d: d.new_flags().total,
        per_class=lambda d: d.new_flags(),
    ),
)
METRICS: dict[str, Metric] = {metric.name: metric for metric in _METRICS}


def metrics_markdown() -> str:
    """The catalog as a Markdown table (docs/check.md's `<!-- metrics table -->`)."""
    lines = ["| metric | per | better | needs | what it measures |", "|---|---|---|---|---|"]
    for metric in _METRICS:
        needs = ", ".join(metric.needs) or "the report"
        doc = metric.doc.replace("|", "\\|")
        lines.append(f"| `{metric.name}` | {', '.join(metric.levels)} | {metric.better} | {needs} | {doc} |")
    return "\n".join(lines) + "\n"
