"""Boxes from thresholded score maps and box IoU, batched, with the WSOL protocol's conventions.

The protocol (Choe et al., CVPR 2020, clovaai/wsolevaluation) quantizes a min-max normalized map to
uint8, keeps the pixels strictly above `int(threshold * max)`, and boxes the 8-connected regions:
`x1 = left + width`, clipped to the last column (one pixel wider than the region, as the reference
does), and `[0, 0, 0, 0]` when nothing is kept. IoU counts pixels inclusively (`x1 - x0 + 1`).

Every (map, threshold) pair becomes one tile of a single tall image, the tiles separated by a zero
row, so one `cv2.connectedComponentsWithStats` call labels a whole chunk of the sweep: no Python
loop over maps x thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Bytes of int32 labels per chunk of the sweep: bounds memory whatever the run's size.
CHUNK_PIXELS = 1 << 24


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - the extra is part of dev
        raise ImportError("evaluation needs OpenCV: pip install 'cambatch[evaluation]'") from exc
    return cv2


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

    `tile` is `map * thresholds + threshold`; a tile with no region holds one `[0, 0, 0, 0]` box
    with `area` -1 (the protocol scores that box like any other).
    """

    tile: np.ndarray  # [R] int64
    boxes: np.ndarray  # [R, 4] int64
    area: np.ndarray  # [R] float64: the region's outline area (pixel centres); 0 for a tile's only region
    pixels: np.ndarray  # [R] int64


def components(maps: np.ndarray, thresholds: np.ndarray, *, outline: bool = True) -> Components:
    """Regions of normalized maps [N, H, W] at each threshold, in chunks (see CHUNK_PIXELS).

    `outline=False` skips the outline areas (`area` is then the pixel count): only `largest` needs them.
    """
    scores = quantize(maps)
    n, h, w = scores.shape
    per_chunk = max(1, CHUNK_PIXELS // max(1, (h + 1) * w * len(thresholds)))
    thresholds = np.asarray(thresholds, dtype=np.float64)
    parts = [_chunk(scores[i : i + per_chunk], thresholds, i, outline) for i in range(0, n, per_chunk)]
    if not parts:
        empty = np.zeros((0,), np.int64)
        return Components(empty, np.zeros((0, 4), np.int64), empty.astype(np.float64), empty)
    return Components(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))


def _chunk(scores: np.ndarray, thresholds: np.ndarray, first: int, outline: bool) -> tuple[np.ndarray, ...]:
    n, h, w = scores.shape
    t = len(thresholds)
    cut = (thresholds[None, :] * scores.reshape(n, -1).max(1)[:, None].astype(np.float64)).astype(np.int64)
    tall = np.zeros((n, t, h + 1, w), np.uint8)  # the extra zero row keeps tiles apart
    np.greater(scores[:, None], cut[:, :, None, None], out=tall[:, :, :h].view(bool))
    rows, packed = _compact_rows(tall.reshape(-1, w))
    count, labels, stats = _label(packed)
    stats = stats[1:].astype(np.int64)
    top, bottom = rows[stats[:, 1]], rows[stats[:, 1] + stats[:, 3] - 1]  # rows of the tall image
    tile = top // (h + 1)
    x0, y0, y_last = stats[:, 0], top % (h + 1), bottom % (h + 1)
    boxes = np.stack([x0, y0, np.minimum(x0 + stats[:, 2], w - 1), np.minimum(y_last + 1, h - 1)], 1)
    area = _outline_areas(packed, labels, count, rows // (h + 1), tile, n * t) if outline else stats[:, 4] * 1.0
    empty = np.setdiff1d(np.arange(n * t), tile)
    tile = np.concatenate([tile, empty])
    boxes = np.concatenate([boxes, np.zeros((len(empty), 4), np.int64)])
    area = np.concatenate([area, np.full(len(empty), -1.0)])
    pixels = np.concatenate([stats[:, 4], np.zeros(len(empty), np.int64)])
    return tile + first * t, boxes, area, pixels


def _label(packed: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """OpenCV's 8-connected labels and stats (row 0: the background) of a 0/1 image, which may have no rows."""
    cv2 = _cv2()  # first: a missing extra is refused whatever the maps hold
    if not len(packed):  # no pixel above any threshold: OpenCV 5 refuses an empty image, and there is nothing to label
        return 1, np.zeros(packed.shape, np.int32), np.zeros((1, 5), np.int32)
    # Grana's block-based labelling: the fastest of OpenCV's on these smooth masks.
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(packed, 8, cv2.CV_32S, cv2.CCL_GRANA)
    return count, labels, stats


def _compact_rows(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a 0/1 image [H, W] that labelling needs, and those rows: every row with a pixel set, and the
    first empty row after each such row. One empty row separates 8-connected regions as well as many, so the
    regions (and their outline cells) are those of the whole image; high thresholds keep few rows.
    """
    filled = mask.any(1)
    keep = filled | np.r_[False, filled[:-1]]
    rows = np.flatnonzero(keep)
    return rows, mask[rows]


def _outline_areas(
    packed: np.ndarray, labels: np.ndarray, count: int, row_tile: np.ndarray, tile: np.ndarray, tiles: int
) -> np.ndarray:
    """Outline areas of the regions (labels 1..count-1), measured only on the rows of tiles holding several
    regions: a tile's only region is its largest whatever its area (it gets 0). Each tile's packed rows end
    with an empty row, so the rows of the chosen tiles never form a cell across two tiles.
    """
    per_tile = np.bincount(tile, minlength=tiles)
    crowded = per_tile[row_tile] > 1
    area = _outline_area(packed[crowded], labels[crowded], count)[1:] if crowded.any() else np.zeros(count - 1)
    return np.where(per_tile[tile] == 1, 0.0, area)


def _outline_area(mask: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Per label, the area of the polygon through its outer boundary's pixel centres (what `cv2.contourArea`
    gives the protocol's contour): each 2x2 cell of pixel centres adds 1 when all four belong to the region
    and 1/2 when three do (the 8-connected outline cuts the cell's diagonal). Unlike `contourArea`, a hole's
    area is left out: holes are rare in upsampled CAMs and matter only between regions of nearly equal area.
    """
    flat = mask.reshape(-1, mask.shape[-1])
    inside = flat[:-1, :-1] + flat[:-1, 1:] + flat[1:, :-1] + flat[1:, 1:]  # uint8 sums of 0/1
    cells = inside >= 3
    # With three or four corners in, one of the two diagonals is whole; any two pixels of a cell touch,
    # so every corner in belongs to the same region.
    owner = np.maximum(labels[:-1, :-1][cells], labels[1:, 1:][cells])
    weight = np.where(inside[cells] == 4, 1.0, 0.5)
    return np.bincount(owner, weights=weight, minlength=count)


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
