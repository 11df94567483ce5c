"""Where `reliance` occludes: boxes of cells on the common grid of `cambatch.inspection.shortcuts` (`GRID` cells a
side of the displayed image; the model sees the whole image resized, so the same fractions of its input). Torch-free.

- **The class's region**: the box of the cells at or above half its mean map's maximum that are
  connected (4-neighbours) to the peak cell, each side cut to at most `MAX_REGION_SIDE` of the image
  around the peak. Connected, because a small peak (a stamp on a fifth of the images) stands above a
  plateau of half its height elsewhere (where the others' objects were), which is not where it peaks;
  cut, because a diffuse mean map (an object that moves) would cover most of the image and leave no
  room for the control.
- **A control**: a box of the same size at a random place (seeded) that does not overlap the region;
  where none fits, one of those overlapping it least.
- **Off the object** (with ground-truth boxes): a box of the same size at the place where the
  image's own map holds the most mass among the places that overlap no ground-truth box; where
  none fits, the least overlapping ones.

Boxes are (x0, y0, x1, y1) in cells, right and bottom exclusive.
"""

from __future__ import annotations

import numpy as np

from ..inspection.shortcuts import GRID

MAX_REGION_SIDE = 1 / 3  # of the width and height: a control box of its size always fits beside it


def class_region(mean_map: np.ndarray) -> np.ndarray:
    """The box [4] a class's mean map [GRID, GRID] peaks in (see the module's docstring)."""
    peak = np.unravel_index(int(mean_map.argmax()), mean_map.shape)
    component = _connected(mean_map >= 0.5 * mean_map[peak], peak)
    rows, cols = np.flatnonzero(component.any(1)), np.flatnonzero(component.any(0))
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    longest = max(1, round(MAX_REGION_SIDE * GRID))
    for axis, centre in ((0, peak[1]), (1, peak[0])):
        if box[axis + 2] - box[axis] > longest:
            start = min(max(centre - longest // 2, 0), GRID - longest)
            box[axis], box[axis + 2] = start, start + longest
    return box


def _connected(mask: np.ndarray, seed: tuple[int, ...]) -> np.ndarray:
    """The cells of `mask` 4-connected to `seed`, grown one step at a time (steps: the component's longest path)."""
    grown = np.zeros_like(mask)
    grown[seed] = True
    while True:
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        step &= mask
        if (step == grown).all():
            return grown
        grown = step


def placements(width: int, height: int) -> np.ndarray:
    """Every box [P, 4] of `width` x `height` cells that fits on the grid."""
    ys, xs = np.mgrid[0 : GRID - height + 1, 0 : GRID - width + 1]
    x0, y0 = xs.ravel(), ys.ravel()
    return np.stack([x0, y0, x0 + width, y0 + height], 1)


def overlap(boxes: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Cells each of `boxes` [P, 4] shares with `other` [4]."""
    width = np.minimum(boxes[:, 2], other[2]) - np.maximum(boxes[:, 0], other[0])
    height = np.minimum(boxes[:, 3], other[3]) - np.maximum(boxes[:, 1], other[1])
    return np.maximum(width, 0) * np.maximum(height, 0)


def control_boxes(region: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` boxes [count, 4] of the region's size at random places off it."""
    candidates = placements(int(region[2] - region[0]), int(region[3] - region[1]))
    shared = overlap(candidates, region)
    allowed = np.flatnonzero(shared == shared.min())
    return candidates[rng.choice(allowed, size=count)]


def off_object_boxes(grids: np.ndarray, truth: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """Per image (its map on the grid [GRID, GRID], its ground-truth boxes [k, 4] in cells): the box of
    `width` x `height` cells holding the most map mass among those overlapping the boxes least (none, where one fits).
    """
    candidates = placements(width, height)
    integral = np.pad(grids.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    x0, y0, x1, y1 = candidates.T
    mass = integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0] + integral[:, y0, x0]  # [n, P]
    chosen = np.empty((len(grids), 4), int)
    for i, boxes in enumerate(truth):
        shared = sum((overlap(candidates, box) for box in boxes), np.zeros(len(candidates), int))
        allowed = shared == shared.min()
        chosen[i] = candidates[np.argmax(np.where(allowed, mass[i], -np.inf))]
    return chosen


def truth_cells(coords: np.ndarray, width: float, height: float) -> np.ndarray:
    """Ground-truth boxes (`gt_box_coords`: x0, y0, x1, y1 inclusive displayed pixels, flat) as boxes [k, 4] of
    the cells they touch.
    """
    boxes = np.asarray(coords, float).reshape(-1, 4)
    scale = np.array([width, height, width, height])
    fractions = (boxes + [0, 0, 1, 1]) / scale
    return np.concatenate([np.floor(fractions[:, :2] * GRID), np.ceil(fractions[:, 2:] * GRID)], axis=1).astype(int)
