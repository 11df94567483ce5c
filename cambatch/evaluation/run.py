"""`cambatch evaluate`: a run's maps (read from its report) against ground truth, per row and per run.

Torch-free: the maps come from the report's `map` column, the ground truth from `cambatch.annotations`.
Per image (its `input_root` and `path`: two INPUTs holding `x.png` are two images), the map evaluated by the
protocol is the label's class (GT-known) when the image has a label, else the top-1 prediction's. Ground
truth is matched to the report's images by `annotations.match`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..annotations.masks import readable_mask
from ..annotations.match import GroundTruth, Image, match
from ..annotations.model import Annotations, Truth
from ..annotations.orient import orientation, visible_boxes
from ..annotations.readers import load_annotations
from ..errors import UsageError
from ..names import name_key
from ..report.reader import image_ids, load_report, map_stack
from ..report.schema import GROUND_TRUTH_NAMES
from ..sources.remote import is_url
from . import rows as per_row
from .boxes import resize_boxes
from .maps import EVAL_SIZE, score_maps
from .options import DEFAULT_THRESHOLDS
from .protocol import (
    CAM_PAPER_THRESHOLD,
    BoxSweep,
    average_precision,
    pixel_histograms,
    sweep_boxes,
    threshold_grid,
)

ROW_CHUNK = 256  # rows resized to EVAL_SIZE at a time: bounds memory on large runs


@dataclass
class Evaluation:
    """What `evaluate` found: the run-level metrics, a per-class table and the per-row columns."""

    metrics: dict[str, float | int | str | None]
    per_class: pd.DataFrame
    rows: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def annotations_of(out: Path | str, settings: dict, annotations: Path | str | None) -> Annotations:
    """The ground truth: the one given, else the run's `--annotations`; a UsageError (exit 2) without either."""
    path = annotations or (settings.get("options") or {}).get("annotations")
    if not path:
        raise UsageError(f"the run in {out} has no annotations: pass --annotations PATH (see docs/ground-truth.md)")
    return load_annotations(path)


def evaluate(
    out: Path | str, annotations: Path | str | None = None, *, thresholds: int = DEFAULT_THRESHOLDS
) -> Evaluation:
    """Localization of the run in `out` against ground truth: MaxBoxAcc, MaxBoxAccV2, GT-known and top-1
    localization (at 20 % and at the best threshold), pointing game, energy in the ground truth; with masks,
    PxAP and the mean mask IoU. An image's label class is scored where the run explained it (`--explain-label`).
    """
    frame = load_report(out, status="ok", maps=True)
    truth = annotations_of(out, frame.attrs, annotations)
    if frame.empty:
        raise UsageError(f"the report in {out} has no successful rows to evaluate")
    frame = frame.reset_index(drop=True)
    # Every image of the report takes part in the matching, failed ones too, as in the run.
    everyone = load_report(out, columns=["input_root", "path"]).drop_duplicates()
    images = _image_truth(frame, match(truth, image_ids(everyone)))
    problems = truth.problems + images.problems
    rows = _row_metrics(frame, images)
    sweep, chosen, pixels = _sweep(frame, images, rows, threshold_grid(thresholds))
    metrics = _metrics(sweep, chosen, rows, pixels, explain_label=bool(frame.attrs.get("explain_label")))
    metrics.update(annotations=truth.source, format=truth.kind, problems=len(problems))
    return Evaluation(metrics, _per_class(sweep, chosen, rows), rows.drop(columns="has_mask"), problems)


@dataclass
class _Images:
    """Per report row: its image's ground truth, in displayed pixels (inclusive indices)."""

    gt: np.ndarray  # [R, G, 4]
    valid: np.ndarray  # [R, G]
    label: list[str | None]
    annotated: np.ndarray  # [R] bool: the image has ground truth (maybe no box)
    error: list[str | None]
    masks: dict[Image, np.ndarray]  # the union of an image's masks on the EVAL_SIZE grid (bool), for those with one
    problems: list[str]  # boxes wholly outside their image, one line each (those images have no ground truth)

    def mask_rows(self, images: list[Image]) -> np.ndarray | None:
        """The masks [R, S, S] of rows by image (all False without one); None when no image has a mask."""
        if not self.masks:
            return None
        blank = np.zeros((EVAL_SIZE, EVAL_SIZE), bool)
        return np.stack([self.masks.get(i, blank) for i in images]) if images else np.zeros((0, *blank.shape), bool)


def _orientation(stated, root, path) -> int:
    """The EXIF orientation the run applied: from the report, else (a report written before it was kept)
    read again from the local image.
    """
    if not _missing(stated):
        return int(stated)
    return orientation(Path(str(root)) / str(path)) if root and not is_url(str(root)) else 1


def _displayed_truth(found: Truth, size: tuple[int, int], orient: int) -> tuple[Truth, np.ndarray, list[str]]:
    """The truth with its boxes in the displayed image, clipped to it; a box wholly outside the image leaves
    the image without ground truth (an annotation error, as a malformed entry), and is a problem line.
    """
    boxes, outside = visible_boxes(found, size, orient)
    if outside:
        return dataclasses.replace(found, boxes=(), masks=(), error=f"bad annotation: {outside[0]}"), boxes[:0], outside
    return found, boxes, []


def _image_truth(frame: pd.DataFrame, truth: GroundTruth) -> _Images:
    by_image: dict[Image, tuple[np.ndarray, Truth | None]] = {}
    masks: dict[Image, np.ndarray] = {}
    problems: list[str] = []
    if "orientation" not in frame.columns:  # a report written before the column existed
        frame = frame.assign(orientation=None)
    columns = ["input_root", "path", "width", "height", "orientation"]
    for root, path, width, height, stated in frame[columns].drop_duplicates(["input_root", "path"]).values:
        image = (str(root), str(path))
        found = truth.find(image)
        boxes = np.zeros((0, 4))
        if found is not None and found.error is None and (found.boxes or found.masks):
            orient = _orientation(stated, root, path)
            size = (int(width), int(height))
            found, boxes, outside = _displayed_truth(found, size, orient)
            problems.extend(f"{line} ({path})" for line in outside)
            mask = readable_mask(found, size, orient) if found.masks else None
            if mask is not None:
                masks[image] = per_row.grid_masks([mask])[0][0]
        by_image[image] = (boxes, found)
    images = image_ids(frame)
    most = max([len(boxes) for boxes, _ in by_image.values()] + [1])
    gt = np.zeros((len(images), most, 4))
    valid = np.zeros((len(images), most), bool)
    for i, image in enumerate(images):  # per row, to lay out the ragged boxes; the metrics below are batched
        boxes = by_image[image][0]
        gt[i, : len(boxes)], valid[i, : len(boxes)] = boxes, True
    report_labels = frame["label"].astype(object).tolist() if "label" in frame.columns else [None] * len(images)
    labels, annotated, errors = [], [], []
    for image, report_label in zip(images, report_labels, strict=True):
        found = by_image[image][1]
        labels.append((found.label if found else None) or (None if _missing(report_label) else str(report_label)))
        annotated.append(found is not None and found.error is None)
        errors.append(found.error if found else None)
    return _Images(gt, valid, labels, np.array(annotated, bool), errors, masks, problems)


def _row_metrics(frame: pd.DataFrame, images: _Images) -> pd.DataFrame:
    """The report's ground-truth columns for every row (the same code `cambatch run --annotations` uses)."""
    sizes = frame[["width", "height"]].to_numpy(np.float64)
    cam = frame[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].to_numpy(np.float64)
    values = {name: np.zeros(len(frame)) for name in GROUND_TRUTH_NAMES}
    identities = image_ids(frame)
    for group in _size_groups(frame):
        for start in range(0, len(group), ROW_CHUNK):
            idx = group[start : start + ROW_CHUNK]
            part = per_row.ground_truth_columns(
                map_stack(frame.iloc[idx]),
                images.gt[idx],
                images.valid[idx],
                sizes[idx],
                cam[idx],
                images.mask_rows([identities[i] for i in idx]),
            )
            for name in GROUND_TRUTH_NAMES:
                values[name][idx] = part[name]
    has_box = images.valid.any(1)
    rows = pd.DataFrame(
        {
            "input_root": frame["input_root"].astype(str),
            "path": frame["path"].astype(str),
            "rank": frame["rank"],
            "class_index": frame["class_index"],
            "class_name": frame["class_name"].astype(str),
            "label": images.label,
            "gt_boxes": pd.array(np.where(images.annotated, values["gt_boxes"], np.nan), dtype="Int16"),
            "gt_box_iou": values["gt_box_iou"],
            "energy_in_gt": values["energy_in_gt"],
            "pointing_hit": pd.array(values["pointing_hit"].astype(bool), dtype="boolean"),
            "mask_iou": values["mask_iou"],
            "has_mask": np.array([image in images.masks for image in identities], bool),
            "annotation_error": images.error,
        }
    )
    rows.loc[~has_box, "pointing_hit"] = pd.NA
    return rows


def _size_groups(frame: pd.DataFrame) -> list[np.ndarray]:
    """Row positions grouped by map size (a report written by several models may hold several)."""
    keys = frame["map_height"].astype(int) * 100_000 + frame["map_width"].astype(int)
    return [np.flatnonzero(keys.to_numpy() == key) for key in np.unique(keys)]


def _to_grid(gt: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Boxes in displayed pixels to the EVAL_SIZE grid, truncated like the protocol's `resize_bbox`."""
    return resize_boxes(gt, sizes[:, None, :], (EVAL_SIZE, EVAL_SIZE))


def _missing(value) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value))


def _label_matches(rows: pd.DataFrame) -> np.ndarray:
    """Whether each row explains its image's label (class name by `name_key`, or the class index as text)."""
    keys = [None if _missing(lab) else name_key(lab) for lab in rows["label"]]
    names = [name_key(n) for n in rows["class_name"]]
    index = rows["class_index"].astype(str).tolist()
    labels = rows["label"].tolist()
    return np.array(
        [k is not None and (k == n or lab == i) for k, n, lab, i in zip(keys, names, labels, index, strict=True)]
    )


@dataclass
class _Chosen:
    """The one row per annotated image with a box or a mask that the protocol scores."""

    row: np.ndarray  # [N] row positions (-1: the label's class was not explained)
    label: list[str | None]
    top1_correct: np.ndarray  # [N] bool
    explained: np.ndarray  # [N] bool
    boxed: np.ndarray  # [N] bool: the image has a ground-truth box (the box metrics score those)
    masked: np.ndarray  # [N] bool: the image has a mask (PxAP and mask IoU score those)


def _choose(rows: pd.DataFrame) -> _Chosen:
    matches = _label_matches(rows)
    top1 = (rows["rank"] == 1).to_numpy()
    scored = rows[(rows["gt_boxes"].fillna(0) > 0) | rows["has_mask"]]
    chosen_rows, labels, correct, explained, boxed, masked = [], [], [], [], [], []
    for _image, group in scored.groupby(["input_root", "path"], sort=True):  # per image, not per threshold
        label = None if _missing(group["label"].iloc[0]) else str(group["label"].iloc[0])
        hit = group.index[matches[group.index]]
        first = group.index[top1[group.index]]
        row = (hit[0] if len(hit) else -1) if label is not None else (first[0] if len(first) else group.index[0])
        chosen_rows.append(row)
        labels.append(label)
        explained.append(row >= 0)
        correct.append(bool(label is not None and len(first) and matches[first[0]]))
        boxed.append(bool(group["gt_boxes"].iloc[0] > 0))
        masked.append(bool(group["has_mask"].iloc[0]))
    return _Chosen(
        np.array(chosen_rows, int),
        labels,
        np.array(correct, bool),
        np.array(explained, bool),
        np.array(boxed, bool),
        np.array(masked, bool),
    )


def _sweep(frame: pd.DataFrame, images: _Images, rows: pd.DataFrame, thresholds: np.ndarray):
    """The box sweep of the chosen images with boxes, and the pixel histograms (PxAP) of those with masks."""
    chosen = _choose(rows)
    n = len(chosen.row)
    largest = np.zeros((n, len(thresholds)))
    regions = np.zeros((n, len(thresholds)))
    pixels = np.zeros((2, len(thresholds) + 2))
    rows = np.where(chosen.explained, chosen.row, 0)
    sizes = frame[["width", "height"]].to_numpy(np.float64)
    identities = image_ids(frame)
    for group in _size_groups(frame.iloc[rows]) if n else []:
        for start in range(0, len(group), ROW_CHUNK):
            part = group[start : start + ROW_CHUNK]
            idx = rows[part]
            scores = score_maps(map_stack(frame.iloc[idx]), EVAL_SIZE)
            scores[~chosen.explained[part]] = 0  # no map of the label's class: a miss
            box = chosen.boxed[part]
            if box.any():
                sweep = sweep_boxes(
                    scores[box], _to_grid(images.gt[idx[box]], sizes[idx[box]]), images.valid[idx[box]], thresholds
                )
                largest[part[box]], regions[part[box]] = sweep.largest, sweep.all_regions
            mask = chosen.masked[part]
            if mask.any():
                masks = images.mask_rows([identities[i] for i in idx[mask]])
                pixels += pixel_histograms(scores[mask], masks, thresholds)
    # An image whose label's class has no map scores as a miss at every threshold.
    largest[~chosen.explained] = 0
    regions[~chosen.explained] = 0
    return BoxSweep(thresholds, largest, regions), chosen, pixels


def _metrics(
    sweep: BoxSweep, chosen: _Chosen, rows: pd.DataFrame, pixels: np.ndarray, *, explain_label: bool = False
) -> dict:
    """The run-level figures: box metrics over the images with boxes, mask metrics over those with masks."""
    n = len(chosen.row)
    if n == 0:
        raise UsageError(
            "no image of the report has a ground-truth box or mask in the annotations (are the paths matched?)"
        )
    missed = int((~chosen.explained).sum())
    metrics: dict = {"images": n}
    if missed or not explain_label:  # with --explain-label every label's class has its row
        metrics["label_not_explained"] = missed
    metrics["thresholds"] = len(sweep.thresholds)
    metrics.update(_box_metrics(sweep, chosen, rows))
    if chosen.masked.any():
        ious = np.where(chosen.explained, rows["mask_iou"].iloc[np.where(chosen.explained, chosen.row, 0)], 0.0)
        metrics.update(
            masked_images=int(chosen.masked.sum()),
            PxAP=average_precision(*pixels) if pixels[0].sum() > 0 else None,
            mask_iou=float(np.nanmean(ious[chosen.masked])) if np.isfinite(ious[chosen.masked]).any() else None,
        )
    return metrics


def _box_metrics(sweep: BoxSweep, chosen: _Chosen, rows: pd.DataFrame) -> dict:
    boxed = chosen.boxed
    names = ("MaxBoxAcc", "best_threshold", "MaxBoxAccV2", "gt_known_loc@0.2", "gt_known_loc@best")
    names += ("top1_loc@0.2", "top1_loc@best", "pointing_acc", "energy_in_gt")
    if not boxed.any():
        return dict.fromkeys(names)
    sweep = BoxSweep(sweep.thresholds, sweep.largest[boxed], sweep.all_regions[boxed])
    max_acc, best_t = sweep.max_box_acc()
    at20, best = sweep.index_of(CAM_PAPER_THRESHOLD), sweep.index_of(best_t)
    hits = sweep.largest >= 0.5
    correct = chosen.top1_correct[boxed]
    has_labels = any(label is not None for label, b in zip(chosen.label, boxed, strict=True) if b)
    scored = rows.iloc[chosen.row[chosen.explained & boxed]]
    values = (max_acc, best_t, sweep.max_box_acc_v2(), float(hits[:, at20].mean()), float(hits[:, best].mean()))
    values += (
        float((hits[:, at20] & correct).mean()) if has_labels else None,
        float((hits[:, best] & correct).mean()) if has_labels else None,
        _pointing_accuracy(scored),
        float(scored["energy_in_gt"].mean()),
    )
    return dict(zip(names, values, strict=True))


def _pointing_accuracy(scored: pd.DataFrame) -> float:
    """The pointing game's accuracy: per class (label, else the predicted class), then the mean over classes."""
    classes = scored["label"].where(scored["label"].notna(), scored["class_name"]).astype(str)
    return float(scored["pointing_hit"].astype(float).groupby(classes).mean().mean())


def _per_class(sweep: BoxSweep, chosen: _Chosen, rows: pd.DataFrame) -> pd.DataFrame:
    boxed = chosen.boxed
    best_t = sweep.thresholds[0]
    if boxed.any():
        best_t = BoxSweep(sweep.thresholds, sweep.largest[boxed], sweep.all_regions[boxed]).max_box_acc()[1]
    at20, best = sweep.index_of(CAM_PAPER_THRESHOLD), sweep.index_of(best_t)
    explained = chosen.row >= 0
    safe = np.where(explained, chosen.row, 0)
    classes = [
        label if label is not None else rows["class_name"].iloc[r] for label, r in zip(chosen.label, safe, strict=True)
    ]
    on_box = np.where(boxed, 1.0, np.nan)  # images without a box count in the mask column only
    table = pd.DataFrame(
        {
            "class": classes,
            "images": 1,
            "gt_known_loc@0.2": (sweep.largest[:, at20] >= 0.5) * on_box,
            "gt_known_loc@best": (sweep.largest[:, best] >= 0.5) * on_box,
            "box_iou@0.2": sweep.largest[:, at20] * on_box,
            "pointing_acc": np.where(explained, rows["pointing_hit"].iloc[safe].astype(float).to_numpy(), np.nan),
            "energy_in_gt": np.where(explained, rows["energy_in_gt"].iloc[safe].to_numpy(), np.nan),
        }
    )
    if chosen.masked.any():
        ious = np.where(explained, rows["mask_iou"].iloc[safe].to_numpy(), 0.0)
        table["mask_iou"] = np.where(chosen.masked, ious, np.nan)
    grouped = table.groupby("class", sort=True)
    summary = grouped.mean(numeric_only=True)
    summary["images"] = grouped.size()
    return summary.sort_values(["energy_in_gt", "images"], ascending=[True, False])
