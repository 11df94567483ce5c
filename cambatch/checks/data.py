"""What the metrics are computed from: the run (and its baseline), each source read once and only when a
metric of the policy asks for it, through the inspection and evaluation code.

- the run's counts: one light read of the report (no maps);
- `cambatch summarize` of the run (its per-class table and flags; the maps give the position lock) and,
  for `new_flags`, of the baseline;
- `cambatch compare` with the baseline as A and the run as B;
- `cambatch evaluate` (the run's own `--annotations`);
- the two runs' top-1 maps (`checks.similarity`);
- the error slices `cambatch slices` kept in OUT/slices.

A metric whose data is not there raises `Missing` with the reason the check shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from ..bias.slices import Slices, read_slices
from ..errors import UsageError
from ..evaluation.run import Evaluation, evaluate
from ..inspection.compare import Comparison, compare_runs
from ..inspection.options import GroupBy
from ..inspection.summarize import ClassSummary, summarize_run
from ..report.parts import read_settings
from ..report.reader import load_report, report_columns
from .metrics import Metric
from .similarity import IMAGE, map_similarity, top_rows

COUNT_COLUMNS = (*IMAGE, "rank", "class_name", "status", "run_id", "label", "correct")
# Why each need can be missing, as a check's reason says it.
MISSING = {
    "labels": "the run has no labels (--labels-from-dirs, a --from-list label column, or --annotations)",
    "annotations": "the run has no ground truth (run it with --annotations)",
    "baseline": "no baseline run (--baseline OUT)",
    "maps": "the report keeps no maps (written before cambatch kept them)",
    "slices": "no error slices kept in OUT/slices (run `cambatch slices OUT` on a run with --embeddings first)",
}


class Missing(Exception):
    """The data a metric needs is not there: its check is skipped, or fails (`on_missing = "fail"`), saying why."""


@dataclass(frozen=True)
class ClassValues:
    """A metric's value per class (or label), with the images each stands for."""

    values: pd.Series  # index: class or label names
    images: pd.Series  # the same index
    by: GroupBy  # what the names are: predicted classes or labels

    @property
    def total(self) -> float:
        return float(self.values.sum())


@dataclass(frozen=True)
class Counts:
    """The run's images: processed or failed, and how many of the labelled ones are correct."""

    images: int
    errors: int
    labelled: int
    accuracy: float  # NaN without labels

    @property
    def error_rate(self) -> float:
        return self.errors / self.images if self.images else math.nan


class RunData:
    """The run in `out` and, for the baseline metrics, the run in `baseline` (folders or store URLs)."""

    def __init__(self, out: Path | str, baseline: Path | str | None = None):
        self.out, self.baseline = out, baseline
        # Read at once: a run (or baseline) that cannot be read is refused before any check.
        self.settings = _settings(out, "run")
        self.baseline_settings = _settings(baseline, "baseline") if baseline is not None else {}
        self._columns = set(report_columns(out))

    def missing(self, metric: Metric) -> str | None:
        """Why `metric` cannot be computed here, or None."""
        for need in metric.needs:
            if need == "baseline" and self.baseline is None:
                return MISSING[need]
            if need == "annotations" and not (self.settings.get("options") or {}).get("annotations"):
                return MISSING[need]
            if need == "labels" and not self.counts.labelled:
                return MISSING[need]
            if need == "slices" and self.slices is None:
                return MISSING[need]
        if "maps" in metric.needs and not self._maps["run"]:
            return MISSING["maps"]
        if "maps" in metric.needs and "baseline" in metric.needs and not self._maps["baseline"]:
            return MISSING["maps"].replace("the report", "the baseline's report")
        return None

    @cached_property
    def _maps(self) -> dict[str, bool]:
        """Whether each run's report holds maps (a row with a map size; older reports hold none)."""
        runs = {"run": self.out, "baseline": self.baseline}
        return {role: out is not None and _holds_maps(out) for role, out in runs.items()}

    # ---- the run alone ----

    @cached_property
    def counts(self) -> Counts:
        frame = load_report(self.out, columns=[c for c in COUNT_COLUMNS if c in self._columns])
        top = top_rows(frame)
        key = [c for c in IMAGE if c in frame.columns]
        images = len(frame[key].drop_duplicates())
        correct = top["correct"].astype("boolean") if "correct" in top.columns else pd.Series([], dtype="boolean")
        labelled = int(correct.notna().sum())
        return Counts(images, images - len(top), labelled, float(correct.mean()) if labelled else math.nan)

    @cached_property
    def summary(self) -> ClassSummary:
        return summarize_run(self.out)

    def summary_column(self, column: str) -> ClassValues:
        table = self.summary.table
        if column not in table.columns:
            raise Missing(f"`cambatch summarize` gives no {column} for this run")
        return ClassValues(table[column].astype(float), table["images"], self.summary.by)

    def summary_ratio(self, column: str) -> ClassValues:
        """A class's mean of `column` over the run's median (what summarize's flags compare)."""
        median = {"border_energy": self.summary.median_border_energy, "active_area": self.summary.median_active_area}
        found = self.summary_column(column)
        return ClassValues(found.values / median[column], found.images, found.by)

    @cached_property
    def slices(self) -> Slices | None:
        """The error slices `cambatch slices` kept in OUT, if it ran."""
        try:
            return read_slices(self.out)
        except FileNotFoundError:
            return None

    def slice_column(self, column: str) -> ClassValues:
        classes = self.slices.classes
        if column not in classes.columns:
            raise Missing(f"`cambatch slices` kept no {column} for this run")
        values = classes[column].astype(float).dropna()  # NaN: a class too small to search for slices
        return ClassValues(values, classes["images"].loc[values.index], self.slices.by)

    def flags(self, flag: str) -> ClassValues:
        """Summarize's flag `flag` (`fixed-location`) per class: 1 or 0."""
        return self.summary_column(f"{flag.replace('-', '_')}_flag")

    @cached_property
    def evaluation(self) -> Evaluation:
        try:
            return evaluate(self.out)
        except UsageError as exc:  # no usable ground truth for this run: a reason, not an error of the check
            raise Missing(f"`cambatch evaluate`: {exc}") from None

    def evaluated(self, name: str) -> float:
        value = self.evaluation.metrics.get(name)
        if value is None:
            raise Missing(f"`cambatch evaluate` gives no {name} for this run (no ground truth of that kind)")
        return float(value)

    def evaluated_column(self, column: str) -> ClassValues:
        table = self.evaluation.per_class
        if column not in table.columns:
            raise Missing(f"`cambatch evaluate` gives no {column} for this run (no ground truth of that kind)")
        return ClassValues(table[column].astype(float), table["images"], "label" if self.counts.labelled else "class")

    # ---- against the baseline ----

    @cached_property
    def comparison(self) -> Comparison:
        compared = compare_runs(self.baseline, self.out)
        if not compared.compared:
            raise Missing("no image was processed in both runs")
        return compared

    def compared_column(self, column: str) -> ClassValues:
        classes = self.comparison.classes
        return ClassValues(classes[column].astype(float), classes["images"], "class")

    def peak_shift(self) -> float:
        images = self.comparison.images
        return float(images.loc[images["status"] == "both", "peak_shift"].mean())

    def _correctness(self) -> pd.DataFrame:
        """The labelled images in both runs: `label`, `correct_a` (baseline) and `correct_b` (now), as booleans."""
        images = self.comparison.images
        if not {"label", "correct_a", "correct_b"} <= set(images.columns):
            raise Missing("the baseline has no labels" if self.counts.labelled else MISSING["labels"])
        both = images[(images["status"] == "both") & images["label"].notna()]
        if both.empty:
            raise Missing("no labelled image was processed in both runs")
        correct = {c: both[c].astype("boolean").fillna(False).astype(float) for c in ("correct_a", "correct_b")}
        return pd.DataFrame({"label": both["label"].astype(str), **correct})

    def accuracy_drop(self) -> float:
        rows = self._correctness()
        return float(rows["correct_a"].mean() - rows["correct_b"].mean())

    def class_accuracy_drop(self) -> ClassValues:
        grouped = self._correctness().groupby("label")
        drop = grouped["correct_a"].mean() - grouped["correct_b"].mean()
        return ClassValues(drop, grouped.size(), "label")

    @cached_property
    def similarity(self) -> pd.DataFrame:
        return map_similarity(self.out, self.baseline)

    def map_similarity(self) -> float:
        return float(self.similarity["r"].mean())

    def map_similarity_by_class(self) -> ClassValues:
        grouped = self.similarity.groupby("class_name")["r"]
        return ClassValues(grouped.mean(), grouped.size(), "class")

    @cached_property
    def baseline_summary(self) -> ClassSummary:
        return summarize_run(self.baseline)

    def new_flags(self) -> ClassValues:
        """Per class of the run: how many of its flags its namesake in the baseline did not have."""
        before = self.baseline_summary.table["flags"]
        table = self.summary.table
        new = [
            len(_flag_set(flags) - _flag_set(before.get(name, "")))
            for name, flags in zip(table.index, table["flags"], strict=True)
        ]
        return ClassValues(pd.Series(new, index=table.index, dtype=float), table["images"], self.summary.by)


def _flag_set(flags: str) -> set[str]:
    return {flag for flag in flags.split(", ") if flag}


def _holds_maps(out: Path | str) -> bool:
    if "map_height" not in report_columns(out):
        return False
    return bool(load_report(out, status="ok", columns=["map_height"])["map_height"].notna().any())


def _settings(out: Path | str, role: str) -> dict:
    try:
        return read_settings(out)
    except FileNotFoundError as exc:
        raise UsageError(f"cannot read the {role} {out}: {exc}") from None
