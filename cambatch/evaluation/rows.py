"""Per-row localization against ground truth, on arrays: the CAM box's IoU, the energy-based pointing
game (Score-CAM, Wang et al. 2020) and the pointing game (TorchRay's 15 px tolerance). Torch-free.
"""

from __future__ import annotations

import numpy as np

from .boxes import resize_boxes
from .maps import EVAL_SIZE, resize

POINTING_TOLERANCE = 15.0  # pixels of the displayed image (TorchRay's pointing-game benchmark)
MASK_THRESHOLD = 0.2  # of the map's max: the CAM paper's, as for `bbox_*` (`methods.statistics.BOX_THRESHOLD`)


def continuous_iou(cam: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray) -> np.ndarray:
    """Best IoU [R] of each CAM box cam [R, 4] (edges, displayed pixels) with ground-truth boxes gt [R, G, 4]
    (inclusive pixel indices: box x0..x1 covers [x0, x1 + 1)). NaN where the CAM box is undefined or no box.
    """
    gt_edges = gt + np.array([0, 0, 1, 1])
    a, b = cam[:, None, :], gt_edges
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = (
        (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    )
    iou = np.where(gt_valid & (union > 0), inter / np.where(union > 0, union, 1), -np.inf).max(1, initial=-np.inf)
    return np.where(np.isfinite(iou) & np.isfinite(cam).all(1), iou, np.nan)


def box_masks(gt: np.ndarray, gt_valid: np.ndarray, size: int) -> np.ndarray:
    """The union [R, size, size] of each row's boxes gt [R, G, 4], given as inclusive indices of that grid."""
    grid = np.arange(size)
    inside_x = (grid >= gt[..., 0:1]) & (grid <= gt[..., 2:3])  # [R, G, size]
    inside_y = (grid >= gt[..., 1:2]) & (grid <= gt[..., 3:4])
    inside_x &= gt_valid[..., None]
    return np.einsum("rgy,rgx->ryx", inside_y.astype(np.uint8), inside_x.astype(np.uint8)) > 0


def energy_in(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Share [R] of each map's positive mass inside its region (maps and regions [R, S, S]); NaN without mass."""
    positive = np.maximum(maps, 0)
    mass = positive.sum((1, 2))
    inside = np.einsum("ryx,ryx->r", positive, regions)  # one pass, no product array
    return np.where(mass > 0, inside / np.where(mass > 0, mass, 1), np.nan)


def peak_points(maps: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each map's maximum [R, 2] as (x, y) in displayed pixels: the centre of its cell on the S x S grid."""
    r, s, _ = maps.shape
    flat = maps.reshape(r, -1).argmax(1)
    cells = np.stack([flat % s, flat // s], 1) + 0.5
    return cells * sizes / s


def pointing_hits(points: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray, tolerance: float = POINTING_TOLERANCE):
    """Whether each point [R, 2] lies within `tolerance` pixels of one of its boxes gt [R, G, 4] (inclusive indices)."""
    x, y = points[:, None, 0], points[:, None, 1]
    dx = np.maximum(np.maximum(gt[..., 0] - x, 0), x - (gt[..., 2] + 1))
    dy = np.maximum(np.maximum(gt[..., 1] - y, 0), y - (gt[..., 3] + 1))
    near = np.hypot(dx, dy) <= tolerance
    return (near & gt_valid).any(1)


def mask_iou(grid: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """IoU [R] of each map grid [R, S, S] kept at >= 20 % of its maximum (the CAM paper's threshold, as `bbox_*`;
    nothing is kept when the maximum is not positive) with its mask masks [R, S, S]; NaN for an empty mask.
    """
    peak = grid.reshape(len(grid), -1).max(1)
    kept = (grid >= MASK_THRESHOLD * peak[:, None, None]) & (peak > 0)[:, None, None]
    inter = (kept & masks).sum((1, 2))
    union = (kept | masks).sum((1, 2))
    return np.where(masks.any((1, 2)), inter / np.maximum(union, 1), np.nan)


def grid_masks(masks: list[np.ndarray | None], size: int = EVAL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Displayed-image masks (bool [H, W], or None) resized nearest to size x size: ([R, S, S], has_mask [R])."""
    from PIL import Image

    out = np.zeros((len(masks), size, size), bool)
    for i, mask in enumerate(masks):  # per image: masks are ragged, one resize each
        if mask is not None:
            picture = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
            out[i] = np.asarray(picture) > 0
    return out, np.array([m is not None for m in masks], bool)


def ground_truth_columns(
    maps: np.ndarray,
    gt: np.ndarray,
    gt_valid: np.ndarray,
    sizes: np.ndarray,
    cam_boxes: np.ndarray,
    masks: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The report's ground-truth columns (`report.schema.GROUND_TRUTH_COLUMNS`) of R rows.

    maps [R, h, w] raw; gt [R, G, 4] boxes in displayed pixels (inclusive indices), gt_valid [R, G];
    sizes [R, 2] displayed (width, height); cam_boxes [R, 4] the CAM-paper box as fractions (bbox_*);
    masks [R, 224, 224] bool (`grid_masks`; all False or None: no mask). The map is resized to the
    protocol's 224 x 224 grid (`evaluation.maps`) for energy, peak and mask IoU.
    """
    grid = resize(maps, EVAL_SIZE)
    grid_boxes = resize_boxes(gt, sizes[:, None, :], (EVAL_SIZE, EVAL_SIZE))
    has_box = gt_valid.any(1)
    return {
        "gt_boxes": gt_valid.sum(1),
        "gt_box_iou": np.where(has_box, continuous_iou(cam_boxes * np.tile(sizes, 2), gt, gt_valid), np.nan),
        "energy_in_gt": np.where(has_box, energy_in(grid, box_masks(grid_boxes, gt_valid, EVAL_SIZE)), np.nan),
        "pointing_hit": np.where(has_box, pointing_hits(peak_points(grid, sizes), gt, gt_valid), False),
        "mask_iou": mask_iou(grid, masks) if masks is not None else np.full(len(maps), np.nan),
    }
