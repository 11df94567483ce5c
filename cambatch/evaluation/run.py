"""`cambatch evaluate`: a run's maps (read from its report) against ground truth, per row and per run.

Torch-free: the maps come from the report's `map` column, the ground truth from `cambatch.annotations`.
Per image (its `input_root` and `path`: two INPUTs holding `x.png` are two images), the map evaluated by the
protocol is the label's class (GT-known) when the image has a label, else the top-1 prediction's. Ground
truth is matched to the report's images by `annotations.match`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
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
from ..report.reader import IMAGE_KEY, image_ids, map_stack
from ..report.scan import ReportScan
from ..report.schema import GROUND_TRUTH_NAMES
from ..sources.remote import is_url
from . import rows as per_row
from .boxes import resize_boxes
from .maps import EVAL_SIZE, score_maps
from .options import DEFAULT_THRESHOLDS
from .protocol import (
    CAM_PAPER_THRESHOLD,
    IOU_THRESHOLDS,
    BoxSweep,
    average_precision,
    pixel_histograms,
    sweep_boxes,
    threshold_grid,
)

ROW_CHUNK = 256  # rows resized to EVAL_SIZE at a time: bounds memory on large runs


@dataclass
class Evaluation:
    """What `evaluate` found: the run-level metrics, a per-class table and the per-row columns (read on request)."""

    metrics: dict[str, float | int | str | None]
    per_class: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    row_frames: Callable[[], pd.DataFrame] = field(default=pd.DataFrame, repr=False, compare=False)

    @cached_property
    def rows(self) -> pd.DataFrame:
        """The report's ground-truth columns of every row, in the report's order."""
        return self.row_frames()


def annotations_of(out: Path | str, settings: dict, annotations: Path | str | None) -> Annotations:
    """The ground truth: the one given, else the run's `--annotations`; a UsageError (exit 2) without either."""
    path = annotations or (settings.get("options") or {}).get("annotations")
    if not path:
        raise UsageError(f"the run in {out} has no annotations: pass --annotations PATH (see docs/ground-truth.md)")
    return load_annotations(path)


def evaluate(
    out: Path | str,
    annotations: Path | str | None = None,
    *,
    thresholds: int = DEFAULT_THRESHOLDS,
    progress=None,
) -> Evaluation:
    """Localization of the run in `out` against ground truth: MaxBoxAcc, MaxBoxAccV2, GT-known and top-1
    localization (at 20 % and at the best threshold), pointing game, energy in the ground truth; with masks,
    PxAP and the mean mask IoU. An image's label class is scored where the run explained it (`--explain-label`).

    The report streams past a batch of images at a time (`report.scan`) into running counts per threshold
    and per class; the per-row columns wait in a temporary folder until `Evaluation.rows` is read. Every
    image of the report takes part in matching the ground truth (`annotations.match`), failed ones too, as
    in the run: their keys are read first.
    `progress` (`start(total)`, `advance(count)`, `stop()`, as `runner.progress` reporters) is told the rows done.
    """
    scan = ReportScan(out)
    truth = match(annotations_of(out, scan.settings, annotations), _every_image(scan))
    problems = list(truth.problems)
    grid = threshold_grid(thresholds)
    tally = _Tally(grid)
    folder = tempfile.TemporaryDirectory(prefix="cambatch-evaluate-")
    written, done = [], 0
    if progress is not None:
        progress.start(scan.rows)
    try:
        for _, rows in scan.image_rows(COLUMNS):
            frame = rows.reset_index(drop=True)
            images = _image_truth(frame, truth)
            problems += images.problems
            row_metrics = _row_metrics(frame, images)
            tally.add(*_sweep(frame, images, row_metrics, grid), row_metrics)
            written.append(Path(folder.name) / f"rows-{len(written):05d}.parquet")
            row_metrics.drop(columns="has_mask").to_parquet(written[-1], index=False)
            done += len(frame)
            if progress is not None:
                progress.advance(len(frame))
    finally:
        if progress is not None:
            progress.stop()
    if not done:
        raise UsageError(f"the report in {out} has no successful rows to evaluate")
    metrics = tally.metrics(explain_label=bool(scan.settings.get("explain_label")))
    metrics.update(annotations=truth.annotations.source, format=truth.annotations.kind, problems=len(problems))
    result = Evaluation(metrics, tally.per_class(), problems, lambda: _read_rows(written))
    weakref.finalize(result, folder.cleanup)  # the rows live as long as the evaluation
    return result


COLUMNS = (
    "input_root", "width", "height", "orientation", "class_index", "class_name", "label",
    "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "map", "map_height", "map_width",
)  # fmt: skip


def _every_image(scan: ReportScan) -> list[Image]:
    """Every image of the report (input_root, path), processed or failed, once each, in the report's order."""
    images: dict[Image, None] = {}
    for table in scan.batches(IMAGE_KEY):
        frame = table.to_pandas()
        roots = frame["input_root"] if "input_root" in frame.columns else pd.Series("", index=frame.index)
        images.update(dict.fromkeys(zip(roots.astype(str), frame["path"].astype(str), strict=True)))
    return list(images)


def _read_rows(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)


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
    """Per image with a box or a mask (by INPUT and path): the label's row when it has a label, else its top-1 row
    (else its first); all images at once, no loop over them.
    """
    scored = rows[(rows["gt_boxes"].fillna(0) > 0) | rows["has_mask"]]
    position = scored.index.to_numpy()
    matches = _label_matches(rows)[position]
    top1 = (scored["rank"] == 1).to_numpy()
    frame = pd.DataFrame(
        {
            "input_root": scored["input_root"].to_numpy(),
            "path": scored["path"].to_numpy(),
            "hit": np.where(matches, position, np.iinfo(np.int64).max),
            "first": np.where(top1, position, np.iinfo(np.int64).max),
            "row": position,
            "correct": top1 & matches,
        }
    )
    images = frame.groupby(["input_root", "path"], sort=True).agg(
        hit=("hit", "min"), first=("first", "min"), row=("row", "min"), correct=("correct", "any")
    )
    first_rows = images["row"].to_numpy()
    label = [None if _missing(v) else str(v) for v in rows["label"].to_numpy()[first_rows]]
    has_label = np.array([v is not None for v in label], bool)
    never = np.iinfo(np.int64).max
    hit, first = images["hit"].to_numpy(), images["first"].to_numpy()
    row = np.where(has_label, np.where(hit == never, -1, hit), np.where(first == never, first_rows, first))
    return _Chosen(
        row.astype(int),
        label,
        has_label & images["correct"].to_numpy(),
        row >= 0,
        (rows["gt_boxes"].fillna(0).to_numpy()[first_rows] > 0),
        rows["has_mask"].to_numpy()[first_rows].astype(bool),
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


class _Tally:
    """Running counts over the chosen images, a batch at a time: per threshold, per class, and the pixels."""

    def __init__(self, thresholds: np.ndarray):
        t = len(thresholds)
        self.thresholds = thresholds
        self.images = self.missed = self.boxed = self.masked = 0
        self.hits = np.zeros(t)  # largest region, IoU >= 0.5
        self.top1 = np.zeros(t)  # ... and the top-1 class is the label
        self.regions = {iou: np.zeros(t) for iou in IOU_THRESHOLDS}  # all regions
        self.labelled = False
        self.energy = np.zeros(2)  # sum, count over the scored (explained, boxed) images
        self.mask_iou = np.zeros(2)
        self.pixels = np.zeros((2, t + 2))
        self.pointing: dict[str, np.ndarray] = {}  # class -> (hits, judged) over the scored
        self.classes: dict[str, dict[str, np.ndarray]] = {}

    def add(self, sweep: BoxSweep, chosen: _Chosen, pixels: np.ndarray, rows: pd.DataFrame) -> None:
        explained, boxed = chosen.explained, chosen.boxed
        self.images += len(chosen.row)
        self.missed += int((~explained).sum())
        self.boxed += int(boxed.sum())
        self.masked += int(chosen.masked.sum())
        self.pixels += pixels
        hits = sweep.largest >= 0.5
        self.hits += hits[boxed].sum(axis=0)
        self.top1 += (hits & chosen.top1_correct[:, None])[boxed].sum(axis=0)
        self.labelled |= any(label is not None for label, b in zip(chosen.label, boxed, strict=True) if b)
        for iou, counts in self.regions.items():
            counts += (sweep.all_regions[boxed] >= iou).sum(axis=0)
        safe = np.where(explained, chosen.row, 0)
        scored = rows.iloc[chosen.row[explained & boxed]]
        self.energy += _sum_count(scored["energy_in_gt"])
        classes = scored["label"].where(scored["label"].notna(), scored["class_name"]).astype(str)
        for name, hit in scored["pointing_hit"].astype(float).groupby(classes):
            self.pointing[name] = self.pointing.get(name, 0) + _sum_count(hit)
        mask_iou = np.where(explained, rows["mask_iou"].iloc[safe].to_numpy(), 0.0)
        self.mask_iou += _sum_count(pd.Series(mask_iou[chosen.masked]))
        self._per_class(sweep, chosen, rows, safe, mask_iou)

    def _per_class(self, sweep, chosen: _Chosen, rows: pd.DataFrame, safe: np.ndarray, mask_iou) -> None:
        explained, boxed = chosen.explained, chosen.boxed
        names = [
            label if label is not None else rows["class_name"].iloc[r]
            for label, r in zip(chosen.label, safe, strict=True)
        ]
        pointing = np.where(explained, rows["pointing_hit"].iloc[safe].astype(float).to_numpy(), np.nan)
        energy = np.where(explained, rows["energy_in_gt"].iloc[safe].to_numpy(), np.nan)
        at20 = self.index_of(CAM_PAPER_THRESHOLD)
        for i, name in enumerate(names):
            c = self.classes.setdefault(name, {"images": np.zeros(1), "boxed": np.zeros(1), "hits": 0})
            c["images"] += 1
            for key, value in (("pointing", pointing[i]), ("energy", energy[i]), ("mask", mask_iou[i])):
                if key != "mask" or chosen.masked[i]:
                    c[key] = c.get(key, np.zeros(2)) + _sum_count(pd.Series([value]))
            if boxed[i]:
                c["boxed"] += 1
                c["hits"] = c["hits"] + (sweep.largest[i] >= 0.5)
                c["iou20"] = c.get("iou20", 0) + sweep.largest[i, at20]

    def index_of(self, threshold: float) -> int:
        """The grid index nearest to `threshold`."""
        return int(np.abs(self.thresholds - threshold).argmin())

    def best(self) -> tuple[float, float]:
        """MaxBoxAcc and its threshold (the first best; the grid's first without any boxed image)."""
        if not self.boxed:
            return float("nan"), float(self.thresholds[0])
        accuracy = self.hits / self.boxed
        best = int(np.argmax(accuracy))
        return float(accuracy[best]), float(self.thresholds[best])

    def metrics(self, *, explain_label: bool) -> dict:
        """The run-level figures: box metrics over the images with boxes, mask metrics over those with masks."""
        if self.images == 0:
            raise UsageError(
                "no image of the report has a ground-truth box or mask in the annotations (are the paths matched?)"
            )
        metrics: dict = {"images": self.images}
        if self.missed or not explain_label:  # with --explain-label every label's class has its row
            metrics["label_not_explained"] = self.missed
        metrics["thresholds"] = len(self.thresholds)
        metrics.update(self._box_metrics())
        if self.masked:
            metrics.update(
                masked_images=self.masked,
                PxAP=average_precision(*self.pixels) if self.pixels[0].sum() > 0 else None,
                mask_iou=_mean(self.mask_iou),
            )
        return metrics

    def _box_metrics(self) -> dict:
        names = ("MaxBoxAcc", "best_threshold", "MaxBoxAccV2", "gt_known_loc@0.2", "gt_known_loc@best")
        names += ("top1_loc@0.2", "top1_loc@best", "pointing_acc", "energy_in_gt")
        if not self.boxed:
            return dict.fromkeys(names)
        max_acc, best_t = self.best()
        at20, best = self.index_of(CAM_PAPER_THRESHOLD), self.index_of(best_t)
        v2 = float(np.mean([(counts / self.boxed).max() for counts in self.regions.values()]))
        values = (max_acc, best_t, v2, float(self.hits[at20] / self.boxed), float(self.hits[best] / self.boxed))
        values += (
            float(self.top1[at20] / self.boxed) if self.labelled else None,
            float(self.top1[best] / self.boxed) if self.labelled else None,
            # The pointing game: per class (label, else the predicted class), then the mean over classes.
            float(np.nanmean([_mean(counts) for counts in self.pointing.values()])) if self.pointing else float("nan"),
            _mean(self.energy),
        )
        return dict(zip(names, values, strict=True))

    def per_class(self) -> pd.DataFrame:
        at20, best = self.index_of(CAM_PAPER_THRESHOLD), self.index_of(self.best()[1])
        table = pd.DataFrame(
            [
                {
                    "class": name,
                    "images": int(c["images"][0]),
                    "gt_known_loc@0.2": _ratio(c["hits"][at20] if c["boxed"][0] else 0, c["boxed"][0]),
                    "gt_known_loc@best": _ratio(c["hits"][best] if c["boxed"][0] else 0, c["boxed"][0]),
                    "box_iou@0.2": _ratio(c.get("iou20", 0), c["boxed"][0]),
                    "pointing_acc": _mean(c["pointing"]),
                    "energy_in_gt": _mean(c["energy"]),
                    **({"mask_iou": _mean(c.get("mask", np.zeros(2)))} if self.masked else {}),
                }
                for name, c in sorted(self.classes.items())
            ]
        ).set_index("class")
        return table.sort_values(["energy_in_gt", "images"], ascending=[True, False])


def _sum_count(values: pd.Series) -> np.ndarray:
    """(sum, count) of the values that are not NaN."""
    numbers = pd.Series(values, dtype=float)
    return np.array([numbers.sum(), numbers.notna().sum()], float)


def _mean(sum_count: np.ndarray) -> float:
    return float(sum_count[0] / sum_count[1]) if sum_count[1] else float("nan")


def _ratio(part: float, whole: float) -> float:
    return float(part / whole) if whole else float("nan")
