"""The WSOL protocol's run-level metrics on arrays (Choe et al., CVPR 2020): box accuracy swept over CAM
thresholds (MaxBoxAcc, MaxBoxAccV2) and the pixel average precision (PxAP). Torch-free, batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import best_iou, components

# The protocol's IoU criteria: 0.5 for MaxBoxAcc, the mean over these for MaxBoxAccV2.
IOU_THRESHOLDS = (0.3, 0.5, 0.7)
CAM_PAPER_THRESHOLD = 0.2  # Zhou et al. 2016: keep the map above 20 % of its maximum


def threshold_grid(count: int = 100) -> np.ndarray:
    """`count` CAM thresholds 0, 1/count, ..., 1 - 1/count (the protocol's `np.arange(0, 1, interval)`)."""
    return np.arange(count, dtype=np.float64) / count


@dataclass(frozen=True)
class BoxSweep:
    """Best IoU per image and CAM threshold, for the largest region and for all regions."""

    thresholds: np.ndarray  # [T]
    largest: np.ndarray  # [N, T]
    all_regions: np.ndarray  # [N, T]

    def accuracy(self, iou: float = 0.5, *, all_regions: bool = False, weights: np.ndarray | None = None) -> np.ndarray:
        """Share [T] of images whose box reaches `iou` at each threshold (`weights` 0/1 masks images as failures)."""
        best = self.all_regions if all_regions else self.largest
        hits = best >= iou
        if weights is not None:
            hits = hits & weights[:, None]
        return hits.mean(0) if len(best) else np.full(len(self.thresholds), np.nan)

    def max_box_acc(self) -> tuple[float, float]:
        """MaxBoxAcc (IoU >= 0.5, largest region) and its best threshold."""
        acc = self.accuracy(0.5)
        best = int(np.nanargmax(acc)) if np.isfinite(acc).any() else 0
        return float(acc[best]), float(self.thresholds[best])

    def max_box_acc_v2(self) -> float:
        """MaxBoxAccV2: the mean over IoU 0.3, 0.5, 0.7 of the best accuracy over thresholds, all regions."""
        return float(np.mean([self.accuracy(iou, all_regions=True).max() for iou in IOU_THRESHOLDS]))

    def index_of(self, threshold: float) -> int:
        """The grid index nearest to `threshold`."""
        return int(np.abs(self.thresholds - threshold).argmin())


def sweep_boxes(
    scores: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray, thresholds: np.ndarray, *, largest: bool = True
) -> BoxSweep:
    """Score maps [N, S, S] (normalized) against ground-truth boxes gt [N, G, 4] (same S x S pixel grid).

    `largest=False` scores all regions only (MaxBoxAccV2); `largest` is then NaN.
    """
    found = components(scores, thresholds)
    t = len(thresholds)
    return BoxSweep(
        thresholds=np.asarray(thresholds),
        largest=best_iou(found, gt, gt_valid, t, all_regions=False) if largest else np.full((len(gt), t), np.nan),
        all_regions=best_iou(found, gt, gt_valid, t, all_regions=True),
    )


def pixel_histograms(
    scores: np.ndarray, masks: np.ndarray, thresholds: np.ndarray, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms (positive, negative) of the scores [N, S, S] of object and background pixels (masks [N, S, S]),
    with the protocol's bins [t_0, t_1), ..., [t_last, 1), [1, 2), [2, 3); `ignore` pixels count neither way.
    Summed over chunks of a run, they give its PxAP (`average_precision`) with bounded memory.
    """
    edges = np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])
    keep = np.ones(masks.shape, bool) if ignore is None else ~ignore
    positive = np.histogram(scores[masks & keep], bins=edges)[0].astype(np.float64)
    negative = np.histogram(scores[~masks & keep], bins=edges)[0].astype(np.float64)
    return positive, negative


def average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """PxAP from `pixel_histograms`: their reversed cumulative sums give TP and FP at each threshold, and
    AP = sum(precision[1:] * diff(recall)), as the protocol computes it.
    """
    tp, fp = positive[::-1].cumsum(), negative[::-1].cumsum()
    if positive.sum() <= 0:
        raise ValueError("no positive ground-truth pixel in the set")
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = tp / positive.sum()
    return float((precision[1:] * np.diff(recall))[predicted[1:] > 0].sum())


def pxap(scores: np.ndarray, masks: np.ndarray, thresholds: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """PxAP: area under the pixel precision-recall curve over the whole set, as the protocol computes it.

    scores [N, S, S] in [0, 1]; masks [N, S, S] bool; `ignore` pixels count neither way
    (`pixel_histograms`, then `average_precision`).
    """
    return average_precision(*pixel_histograms(scores, masks, thresholds, ignore))
