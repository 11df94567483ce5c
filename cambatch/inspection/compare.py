"""`cambatch compare OUT_A OUT_B`: what changed between two runs over the same images.

Images are matched by their INPUT and path (the report's `input_root` and `path`: two INPUTs holding `x.png`
hold two images). For each image processed in both runs: whether the
top-1 class changed and, for A's top-1 class (the shared top-1 when nothing changed; when it did,
still compared if B explained that class at another rank), how far the map's peak moved
(`peak_shift`: sqrt(dx^2 + dy^2), x and y as fractions of the image's width and height) and how
much the CAM boxes overlap (`box_iou`, intersection over union). Fixed and broken images are
counted among those labelled in both runs. A `--classes` run has no top-1 (it explains the classes
it was given, not its predictions), so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..report.reader import chosen_classes, has_labels, image_key, load_report, per_image, report_columns

_KEEP = [
    "input_root",
    "path",
    "rank",
    "class_name",
    "probability",
    "peak_x",
    "peak_y",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
    "border_energy",
    "status",
    "run_id",
    "label",
    "correct",
]
_BOX = ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]


@dataclass
class Comparison:
    """Per-image rows and a per-class summary of two runs A (before) and B (after)."""

    images: pd.DataFrame  # one row per image seen in either run; see `compare_reports`
    classes: pd.DataFrame  # per top-1 class of A; see `compare_reports`
    settings_a: dict[str, Any] = field(default_factory=dict)
    settings_b: dict[str, Any] = field(default_factory=dict)

    @property
    def compared(self) -> int:
        """Images processed successfully by both runs."""
        return int((self.images["status"] == "both").sum())

    @property
    def changed(self) -> int:
        """Images whose top-1 class differs between the runs."""
        return int(self.images["top1_changed"].fillna(False).sum())

    def overview(self) -> dict[str, Any]:
        """Dataset-wide figures: counts, the share changed, mean IoU, median peak shift."""
        both = self.images[self.images["status"] == "both"]
        figures: dict[str, Any] = {
            "run_a": self.settings_a.get("run_id"),
            "run_b": self.settings_b.get("run_id"),
            "model_a": self.settings_a.get("model"),
            "model_b": self.settings_b.get("model"),
            "compared": self.compared,
            "top1_changed": self.changed,
            "changed_share": self.changed / self.compared if self.compared else 0.0,
            "mean_box_iou": float(both["box_iou"].mean()),
            "median_peak_shift": float(both["peak_shift"].median()),
            **{
                status: int((self.images["status"] == status).sum())
                for status in ("only_a", "only_b", "error_a", "error_b", "error_both")
            },
        }
        if "correct_a" in both.columns and "correct_b" in both.columns:
            # Only where both runs judged the image: a run without its label says nothing of it.
            judged = both[both["correct_a"].notna() & both["correct_b"].notna()]
            a, b = judged["correct_a"].astype(bool), judged["correct_b"].astype(bool)
            if len(judged):
                figures["labelled_in_both"] = len(judged)
                figures["fixed"] = int((~a & b).sum())  # wrong in A, right in B
                figures["broken"] = int((a & ~b).sum())  # right in A, wrong in B
        return figures


def compare_reports(a: pd.DataFrame, b: pd.DataFrame) -> Comparison:
    """Compare two report DataFrames (from `load_report`).

    `images` columns: `input_root` and `path` (the image); `status` (`both`, `only_a`, `only_b`, `error_a`, `error_b`,
    `error_both`); `class_a`, `class_b`, `probability_a`, `probability_b` (top-1 of each run);
    `top1_changed`; `compared_class` (A's top-1); `probability_b_of_a` (B's probability for that
    class, when B explained it); `peak_shift` and `box_iou` for that class; with labels, `label`,
    `correct_a`, `correct_b`.

    `classes`, per top-1 class of A (index), sorted by most changed first: `images`, `changed`,
    `changed_share`, `mean_box_iou`, `mean_peak_shift`, `to` (B's most common top-1 for the
    changed images). Classes are ordered most changed first, then by lowest box overlap.

    >>> import cambatch
    >>> c = cambatch.compare_runs("cams-monday", "cams-tuesday")  # doctest: +SKIP
    >>> c.images[c.images.top1_changed]                        # doctest: +SKIP
    """
    for frame, name in ((a, "A"), (b, "B")):
        if chosen_classes(frame) is not None:
            raise ValueError(
                f"run {name} explains classes chosen with --classes ({', '.join(map(str, chosen_classes(frame)))}), "
                "not its predictions, so it has no top-1 to compare: compare two top-k runs"
            )
    key = [column for column in image_key(a) if column in b.columns]
    a, b = _keyed(a, key), _keyed(b, key)
    top_a, top_b = per_image(a), per_image(b)
    rows = pd.concat([a[key], b[key]]).drop_duplicates().sort_values(key).reset_index(drop=True)
    rows["status"] = _status(rows[key], a[key], b[key], top_a[key], top_b[key])
    labelled = has_labels(a) or has_labels(b)
    rows = rows.merge(_top(top_a, key, "_a", labelled), on=key, how="left").merge(
        _top(top_b, key, "_b", labelled), on=key, how="left"
    )
    both = rows["status"] == "both"
    rows["top1_changed"] = pd.array(
        np.where(both, rows["class_a"].astype(str) != rows["class_b"].astype(str), None), dtype="boolean"
    )
    rows["compared_class"] = rows["class_a"].where(both)

    # The map of A's top-1 class in each run: B's row for that class, at whatever rank B put it.
    ok_b = b[b["status"] == "ok"]
    pairs = (
        top_a[[*key, "class_name", "peak_x", "peak_y", *_BOX]]
        .merge(
            ok_b[[*key, "class_name", "probability", "peak_x", "peak_y", *_BOX]].astype({"class_name": str}),
            on=[*key, "class_name"],
            how="inner",
            suffixes=("_a", "_b"),
        )
        .astype({"class_name": str})
    )
    pairs["peak_shift"] = np.hypot(pairs["peak_x_a"] - pairs["peak_x_b"], pairs["peak_y_a"] - pairs["peak_y_b"])
    pairs["box_iou"] = box_iou(
        pairs[[c + "_a" for c in _BOX]].to_numpy(float), pairs[[c + "_b" for c in _BOX]].to_numpy(float)
    )
    pairs = pairs.rename(columns={"probability": "probability_b_of_a"})[
        [*key, "probability_b_of_a", "peak_shift", "box_iou"]
    ]
    rows = rows.merge(pairs, on=key, how="left")
    rows.loc[~both, ["probability_b_of_a", "peak_shift", "box_iou"]] = np.nan
    if labelled:
        rows["label"] = rows["label_a"].combine_first(rows["label_b"])
    rows = rows.drop(columns=[c for c in ("label_a", "label_b") if c in rows.columns])
    for column in ("status", "class_a", "class_b", "compared_class", *(["label"] if "label" in rows.columns else [])):
        rows[column] = rows[column].astype("category")
    return Comparison(rows, _by_class(rows), dict(a.attrs), dict(b.attrs))


def compare_runs(out_a: Path | str, out_b: Path | str) -> Comparison:
    """`compare_reports` on the reports in two output folders, reading only the columns it needs."""
    frames = [load_report(out, columns=[c for c in _KEEP if c in set(report_columns(out))]) for out in (out_a, out_b)]
    return compare_reports(*frames)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes [N, 4] (x0, y0, x1, y1); NaN where either box is missing."""
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def _keyed(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """`frame` with its image key as text: the two runs' columns then join whatever their dtypes."""
    return frame.assign(**{column: frame[column].astype(str) for column in key})


def _top(top: pd.DataFrame, key: list[str], suffix: str, labelled: bool) -> pd.DataFrame:
    """The top-1 columns of one run, suffixed; label and correctness only when there are labels."""
    columns = {
        "class_name": "class",
        "probability": "probability",
        **({"label": "label", "correct": "correct"} if labelled else {}),
    }
    present = {k: v + suffix for k, v in columns.items() if k in top.columns}
    frame = top[[*key, *present]].rename(columns=present)
    return frame.astype({"class" + suffix: str})


def _status(images: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame, top_a: pd.DataFrame, top_b: pd.DataFrame):
    """Where each image stands: in both runs and processed by both, in one run only, or failed (all frames:
    the image key's columns).
    """
    index = pd.MultiIndex.from_frame(images)
    in_a, in_b, ok_a, ok_b = (index.isin(pd.MultiIndex.from_frame(f)) for f in (a, b, top_a, top_b))
    return np.select(
        [in_a & ~in_b, ~in_a & in_b, ok_a & ok_b, ~ok_a & ~ok_b, ~ok_a],
        ["only_a", "only_b", "both", "error_both", "error_a"],
        default="error_b",
    )


def _by_class(rows: pd.DataFrame) -> pd.DataFrame:
    both = rows[rows["status"] == "both"].astype({"class_a": str, "class_b": str})
    grouped = both.groupby("class_a")
    changed = both[both["top1_changed"].fillna(False).astype(bool)]
    table = pd.DataFrame(
        {
            "images": grouped.size(),
            "changed": changed.groupby("class_a").size(),
            "mean_box_iou": grouped["box_iou"].mean(),
            "mean_peak_shift": grouped["peak_shift"].mean(),
            "to": changed.groupby("class_a")["class_b"].agg(lambda s: s.value_counts().index[0]),
        }
    )
    table["changed"] = table["changed"].fillna(0).astype(int)
    table["changed_share"] = table["changed"] / table["images"]
    table = table[["images", "changed", "changed_share", "mean_box_iou", "mean_peak_shift", "to"]]
    table["to"] = table["to"].fillna("")
    table.index.name = "class (A)"
    # Most changed first; among equals, the maps that moved most (lowest box overlap).
    order = table.assign(_name=table.index.str.lower()).sort_values(
        ["changed", "changed_share", "mean_box_iou", "_name"], ascending=[False, False, True, True], na_position="last"
    )
    return order.drop(columns="_name")
