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

import math
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..report.reader import IMAGE_KEY, chosen_classes, frame_of, has_labels, image_key, per_image
from ..report.scan import BUCKET_ROWS, ReportScan, partition, read_bucket
from .medians import medians

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
    """Per-class summary and figures of two runs A (before) and B (after); their per-image rows on request."""

    classes: pd.DataFrame  # per top-1 class of A; see `compare_reports`
    figures: dict[str, Any]  # dataset-wide counts and means (`overview` adds the runs and models)
    settings_a: dict[str, Any] = field(default_factory=dict)
    settings_b: dict[str, Any] = field(default_factory=dict)
    rows: Callable[[], pd.DataFrame] = field(default=pd.DataFrame, repr=False, compare=False)

    @cached_property
    def images(self) -> pd.DataFrame:
        """One row per image seen in either run, by INPUT and path (read back on first use); see `compare_reports`."""
        return self.rows()

    @property
    def compared(self) -> int:
        """Images processed successfully by both runs."""
        return self.figures["compared"]

    @property
    def changed(self) -> int:
        """Images whose top-1 class differs between the runs."""
        return self.figures["top1_changed"]

    def overview(self) -> dict[str, Any]:
        """Dataset-wide figures: counts, the share changed, mean IoU, median peak shift."""
        return {
            "run_a": self.settings_a.get("run_id"),
            "run_b": self.settings_b.get("run_id"),
            "model_a": self.settings_a.get("model"),
            "model_b": self.settings_b.get("model"),
            **self.figures,
        }


def compare_reports(a: pd.DataFrame, b: pd.DataFrame) -> Comparison:
    """Compare two report DataFrames (from `load_report`).

    `images` columns: `input_root` and `path` (the image); `status` (`both`, `only_a`, `only_b`, `error_a`, `error_b`,
    `error_both`); `class_a`, `class_b`, `probability_a`, `probability_b` (top-1 of each run);
    `top1_changed`; `compared_class` (A's top-1); `probability_b_of_a` (B's probability for that
    class, when B explained it); `peak_shift` and `box_iou` for that class; with labels, `label`,
    `correct_a`, `correct_b`. The figures (`overview`) count `fixed` and `broken` among the images labelled in
    both runs (`labelled_in_both`).

    `classes`, per top-1 class of A (index), sorted by most changed first: `images`, `changed`,
    `changed_share`, `mean_box_iou`, `mean_peak_shift`, `to` (B's most common top-1 for the
    changed images; among equals, the one of the first path). Classes are ordered most changed
    first, then by lowest box overlap.

    >>> import cambatch
    >>> c = cambatch.compare_runs("cams-monday", "cams-tuesday")  # doctest: +SKIP
    >>> c.images[c.images.top1_changed]                        # doctest: +SKIP
    """
    for frame, name in ((a, "A"), (b, "B")):
        _refuse_chosen(chosen_classes(frame), name)
    rows = _image_rows(a, b)
    tally = _Tally()
    tally.add(rows)
    both = rows.loc[rows["status"] == "both", "peak_shift"].to_numpy(np.float64)
    middle = medians(lambda: [{"peak_shift": both}], {"peak_shift": np.float64})["peak_shift"]
    return Comparison(tally.classes(), tally.figures(middle), dict(a.attrs), dict(b.attrs), lambda: rows)


def compare_runs(out_a: Path | str, out_b: Path | str) -> Comparison:
    """`compare_reports` on the reports in two output folders, streamed: both reports are split by the hash of
    their images (INPUT and path) into files of about `scan.BUCKET_ROWS` rows (an image's rows of both runs land
    in one pair of files), each pair is compared alone, and the per-image rows wait in a temporary folder until
    asked for.
    """
    scans = [ReportScan(out) for out in (out_a, out_b)]
    for scan, name in zip(scans, "AB", strict=True):
        _refuse_chosen(scan.chosen_classes, name)
    key = [c for c in IMAGE_KEY if all(c in scan.columns for scan in scans)]  # the same hash on both sides
    folder = tempfile.TemporaryDirectory(prefix="cambatch-compare-")
    root = Path(folder.name)
    buckets = max(1, math.ceil(max(scan.rows for scan in scans) / BUCKET_ROWS))
    split = []
    for side, scan in zip("ab", scans, strict=True):
        (root / side).mkdir()
        files = partition(scan.batches(scan.present(_KEEP)), buckets, root / side, key=key)
        split.append(({f.name: f for f in files}, scan))
    tally, written = _Tally(), []
    # Two empty reports still give the rows' columns: one pair of empty frames.
    for name in sorted(set(split[0][0]) | set(split[1][0])) or [None]:
        frames = [_bucket_frame(files.get(name), scan, _KEEP) for files, scan in split]
        rows = _image_rows(*frames)
        tally.add(rows)
        written.append(root / f"rows-{name}.parquet")
        rows.astype({c: str for c in rows.select_dtypes("category").columns}).to_parquet(written[-1], index=False)

    def shifts():
        for path in written:
            table = pq.read_table(path, columns=["status", "peak_shift"]).to_pandas()
            yield {"peak_shift": table.loc[table["status"] == "both", "peak_shift"].to_numpy(np.float64)}

    middle = medians(shifts, {"peak_shift": np.float64})["peak_shift"]
    result = Comparison(tally.classes(), tally.figures(middle), scans[0].settings, scans[1].settings)
    result.rows = lambda: _read_rows(written)
    weakref.finalize(result, folder.cleanup)  # the rows live as long as the comparison
    return result


def _bucket_frame(path: Path | None, scan: ReportScan, wanted) -> pd.DataFrame:
    """One side's rows of a bucket (none: an empty frame with its columns), typed as `load_report` types them."""
    columns = scan.present(wanted)
    table = read_bucket(path) if path is not None else pa.schema([scan.schema.field(c) for c in columns]).empty_table()
    frame = frame_of(table)
    frame.attrs.update(scan.settings)
    return frame


def _refuse_chosen(classes: list[int] | None, name: str) -> None:
    """A `--classes` run explains the classes it was given, not its predictions: it has no top-1 to compare."""
    if classes is not None:
        raise ValueError(
            f"run {name} explains classes chosen with --classes ({', '.join(map(str, classes))}), "
            "not its predictions, so it has no top-1 to compare: compare two top-k runs"
        )


def _read_rows(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(path) for path in paths]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    rows = rows.sort_values(image_key(rows), ignore_index=True) if len(rows) else rows
    for column in ("status", "class_a", "class_b", "compared_class", "label"):
        if column in rows.columns:
            rows[column] = rows[column].astype("category")
    return rows


def _image_rows(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """The per-image rows of two reports' rows (all rows of each image in both), by image (`IMAGE_KEY`)."""
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
        .astype({"class_name": str})
        .merge(
            ok_b[[*key, "class_name", "probability", "peak_x", "peak_y", *_BOX]].astype({"class_name": str}),
            on=[*key, "class_name"],
            how="inner",
            suffixes=("_a", "_b"),
        )
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
    return rows


STATUSES = ("only_a", "only_b", "error_a", "error_b", "error_both")


class _Tally:
    """Running counts and sums over per-image rows, a bucket at a time: the figures and the per-class table."""

    def __init__(self):
        self.counts = dict.fromkeys(("both", *STATUSES, "changed", "fixed", "broken", "judged", "iou_n"), 0)
        self.iou_sum = 0.0
        self.by_class = pd.DataFrame()
        self.to = pd.DataFrame()  # per (class_a, class_b) of the changed images: how many, the first path

    def add(self, rows: pd.DataFrame) -> None:
        status = rows["status"].astype(str)
        for name in ("both", *STATUSES):
            self.counts[name] += int((status == name).sum())
        both = rows[status == "both"].astype({"class_a": str, "class_b": str})
        changed = both["top1_changed"].fillna(False).astype(bool)
        self.counts["changed"] += int(changed.sum())
        self.iou_sum += float(both["box_iou"].sum())
        self.counts["iou_n"] += int(both["box_iou"].notna().sum())
        if "correct_a" in both.columns and "correct_b" in both.columns:
            # Only where both runs judged the image: a run without its label says nothing of it.
            judged = both[both["correct_a"].notna() & both["correct_b"].notna()]
            a, b = judged["correct_a"].astype(bool), judged["correct_b"].astype(bool)
            self.counts["judged"] += len(judged)
            self.counts["fixed"] += int((~a & b).sum())  # wrong in A, right in B
            self.counts["broken"] += int((a & ~b).sum())  # right in A, wrong in B
        grouped = both.assign(changed=changed).groupby("class_a")
        sums = pd.DataFrame(
            {
                "images": grouped.size(),
                "changed": grouped["changed"].sum(),
                "iou": grouped["box_iou"].sum(),
                "iou_n": grouped["box_iou"].count(),
                "shift": grouped["peak_shift"].sum(),
                "shift_n": grouped["peak_shift"].count(),
            }
        )
        self.by_class = sums if self.by_class.empty else self.by_class.add(sums, fill_value=0)
        moved = both[changed].groupby(["class_a", "class_b"])["path"].agg(["size", "min"])
        self.to = moved if self.to.empty else _merged_to(self.to, moved)

    def figures(self, median_shift: float) -> dict[str, Any]:
        c = self.counts
        figures: dict[str, Any] = {
            "compared": c["both"],
            "top1_changed": c["changed"],
            "changed_share": c["changed"] / c["both"] if c["both"] else 0.0,
            "mean_box_iou": self.iou_sum / c["iou_n"] if c["iou_n"] else float("nan"),
            "median_peak_shift": median_shift,
            **{status: c[status] for status in STATUSES},
        }
        if c["judged"]:
            figures["labelled_in_both"] = c["judged"]
            figures["fixed"], figures["broken"] = c["fixed"], c["broken"]
        return figures

    def classes(self) -> pd.DataFrame:
        sums = self.by_class
        columns = ["images", "changed", "changed_share", "mean_box_iou", "mean_peak_shift", "to"]
        if sums.empty:
            return pd.DataFrame(columns=columns).rename_axis("class (A)")
        table = pd.DataFrame(
            {
                "images": sums["images"].astype(int),
                "changed": sums["changed"].astype(int),
                "mean_box_iou": sums["iou"] / sums["iou_n"].where(sums["iou_n"] > 0),
                "mean_peak_shift": sums["shift"] / sums["shift_n"].where(sums["shift_n"] > 0),
            }
        )
        table["changed_share"] = table["changed"] / table["images"]
        to = self.to.reset_index().sort_values(["class_a", "size", "min"], ascending=[True, False, True])
        table["to"] = to.drop_duplicates("class_a").set_index("class_a")["class_b"].reindex(table.index).fillna("")
        table = table[columns]
        table.index.name = "class (A)"
        # Most changed first; among equals, the maps that moved most (lowest box overlap).
        order = table.assign(_name=table.index.str.lower()).sort_values(
            ["changed", "changed_share", "mean_box_iou", "_name"],
            ascending=[False, False, True, True],
            na_position="last",
        )
        return order.drop(columns="_name")


def _merged_to(total: pd.DataFrame, more: pd.DataFrame) -> pd.DataFrame:
    joined = total.join(more, how="outer", rsuffix="_more")
    return pd.DataFrame(
        {
            "size": joined["size"].fillna(0) + joined["size_more"].fillna(0),
            "min": joined[["min", "min_more"]].min(axis=1),
        }
    )


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
