"""Boxes from thresholded score maps and box IoU, batched, with the WSOL protocol's conventions.

The protocol (Choe et al., CVPR 2020, clovaai/wsolevaluation) quantizes a min-max normalized map to
uint8, keeps the pixels strictly above `int(threshold * max)`, and boxes the 8-connected regions:
`x1 = left + width`, clipped to the last column (one pixel wider than the region, as the reference
does), and `[0, 0, 0, 0]` when nothing is kept. IoU counts pixels inclusively (`x1 - x0 + 1`).

The regions of every threshold come from one pass over each map (`component_tree.regions`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

# The compiled pass releases the GIL: maps are shared out over the cores.
THREADS = min(4, len(os.sched_getaffinity(0)))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [..., A, B] of boxes a [..., A, 4] and b [..., B, 4] (x0, y0, x1, y1), pixels counted inclusively.

    A box with x1 < x0 or y1 < y0 is a ValueError; a pair whose union is empty scores 0.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for boxes in (a, b):
        if ((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])).any():
            raise ValueError("boxes must be x0, y0, x1, y1 with x0 <= x1 and y0 <= y1")
    a, b = a[..., :, None, :], b[..., None, :, :]
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _area(box: np.ndarray) -> np.ndarray:
    return (box[..., 2] - box[..., 0] + 1) * (box[..., 3] - box[..., 1] + 1)


def resize_boxes(boxes: np.ndarray, size, new_size) -> np.ndarray:
    """Boxes [..., 4] from an image of `size` (width, height; or an array [..., 2] broadcasting with the boxes)
    to `new_size`, truncated to ints like the protocol's `resize_bbox`.
    """
    ratio = np.asarray(new_size, dtype=np.float64) / np.asarray(size, dtype=np.float64)
    scale = np.concatenate([ratio, ratio], axis=-1)
    return np.trunc(np.asarray(boxes, dtype=np.float64) * scale).astype(np.int64)


def quantize(maps: np.ndarray) -> np.ndarray:
    """Normalized maps [N, H, W] in [0, 1] as the protocol's uint8 score images (`(map * 255).astype(uint8)`)."""
    maps = np.asarray(maps)
    if np.isnan(maps).any():
        raise ValueError("score maps contain NaN")
    return (maps * 255).astype(np.uint8)


@dataclass(frozen=True)
class Components:
    """The 8-connected regions of every (map, threshold) tile: boxes in the protocol's convention.

    `tile` is `map * thresholds + threshold`; regions are in tile order, and within a tile in the raster
    order of their first pixel (OpenCV's label order). A tile with no region holds one `[0, 0, 0, 0]` box
    with `area` -1 (the protocol scores that box like any other).
    """

    tile: np.ndarray  # [R] int64
    boxes: np.ndarray  # [R, 4] int64
    area: np.ndarray  # [R] float64: the region's outline area (through its pixel centres)
    pixels: np.ndarray  # [R] int64


def components(maps: np.ndarray, thresholds: np.ndarray) -> Components:
    """Regions of normalized maps [N, H, W] at each threshold (the protocol's cuts `int(threshold * max)`)."""
    scores = quantize(maps)
    n = len(scores)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    cuts = (thresholds[None, :] * scores.reshape(n, -1).max(1, initial=0)[:, None].astype(np.float64)).astype(np.int64)
    regions = _regions()
    shares = [share for share in np.array_split(np.arange(n), THREADS) if len(share)]
    with ThreadPoolExecutor(len(shares) or 1) as pool:
        parts = list(pool.map(lambda share: regions(scores[share], cuts[share]), shares))
    for share, (found, _) in zip(shares, parts, strict=True):
        found[:, 0] += share[0] * len(thresholds)  # tiles numbered over the whole batch
    found = np.concatenate([found for found, _ in parts]) if parts else np.zeros((0, 7), np.int64)
    area = np.concatenate([area for _, area in parts]) if parts else np.zeros(0)
    order = np.lexsort((found[:, 1], found[:, 0]))  # by tile, then first pixel
    return Components(found[order, 0], found[order, 2:6], area[order], found[order, 6])


def _regions():
    """The compiled pass (numba, an extra): imported on first use, so reading a report never needs it."""
    try:
        from .component_tree import regions
    except ImportError as exc:  # pragma: no cover - the extra is part of dev
        raise ImportError("evaluation needs numba: pip install 'cambatch[evaluation]'") from exc
    return regions


def largest(found: Components, tiles: int) -> np.ndarray:
    """One box per tile [tiles, 4]: the region of largest outline area, ties to the one found last in raster
    order (the protocol takes the first maximum of OpenCV's contour list, which lists regions last-found first).
    """
    order = np.lexsort((np.arange(len(found.tile)), found.area, found.tile))
    last = np.r_[found.tile[order][1:] != found.tile[order][:-1], True]
    chosen = order[last]
    boxes = np.zeros((tiles, 4), np.int64)
    boxes[found.tile[chosen]] = found.boxes[chosen]
    return boxes


def best_iou(
    found: Components, gt: np.ndarray, gt_valid: np.ndarray, thresholds: int, *, all_regions: bool
) -> np.ndarray:
    """Best IoU [N, T] of each tile's box(es) with its image's ground-truth boxes gt [N, G, 4] (gt_valid [N, G]).

    `all_regions` scores every region (MaxBoxAccV2); else only the largest (MaxBoxAcc).
    """
    n = gt.shape[0]
    if all_regions:
        tile, boxes = found.tile, found.boxes
    else:
        tile, boxes = np.arange(n * thresholds), largest(found, n * thresholds)
    image = tile // thresholds
    ious = box_iou(boxes[:, None, :], gt[image])[:, 0, :]  # [R, G]
    ious = np.where(gt_valid[image], ious, -np.inf).max(1, initial=-np.inf)
    best = np.full(n * thresholds, -np.inf)
    np.maximum.at(best, tile, ious)
    return np.maximum(best, 0.0).reshape(n, thresholds)
