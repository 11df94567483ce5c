"""`cambatch.bias.regions`: where a class is occluded, its controls, and the hottest box off its object."""

from __future__ import annotations

import numpy as np

from cambatch.bias.regions import (
    MAX_REGION_SIDE,
    class_region,
    control_boxes,
    off_object_boxes,
    overlap,
    placements,
    truth_cells,
)
from cambatch.inspection.shortcuts import GRID


def test_the_region_is_the_peaks_connected_blob_not_a_plateau_elsewhere():
    mean = np.zeros((GRID, GRID))
    mean[2:6, 3:8] = 1.0  # the peak: a stamp
    mean[12:30, 10:30] = 0.6  # above half the peak, but apart from it
    assert class_region(mean).tolist() == [3, 2, 8, 6]


def test_a_diffuse_region_is_cut_around_its_peak():
    mean = np.full((GRID, GRID), 0.8)
    mean[20, 25] = 1.0
    box = class_region(mean)
    longest = round(MAX_REGION_SIDE * GRID)
    assert (box[2] - box[0], box[3] - box[1]) == (longest, longest)
    assert box[0] <= 25 < box[2] and box[1] <= 20 < box[3] and box[2] <= GRID


def test_controls_have_the_regions_size_and_never_overlap_it():
    region = np.array([10, 12, 20, 23])
    boxes = control_boxes(region, 200, np.random.default_rng(0))
    assert ((boxes[:, 2] - boxes[:, 0]) == 10).all() and ((boxes[:, 3] - boxes[:, 1]) == 11).all()
    assert (overlap(boxes, region) == 0).all() and len({tuple(b) for b in boxes}) > 50  # spread, off the region
    assert ((boxes >= 0) & (boxes <= GRID)).all()


def test_off_the_object_is_the_hottest_place_that_misses_every_box():
    grid = np.zeros((2, GRID, GRID))
    grid[:, 15:20, 15:20] = 1.0  # the object, hottest
    grid[0, 2:4, 2:4] = 0.5  # something else, off it
    truth = [np.array([[14, 14, 21, 21]]), np.array([[0, 0, GRID, GRID]])]  # image 1: the box is everything
    boxes = off_object_boxes(grid, truth, 3, 3)
    assert overlap(boxes[:1], truth[0][0])[0] == 0 and boxes[0].tolist() in (
        [1, 1, 4, 4],
        [2, 2, 5, 5],
        [1, 2, 4, 5],
        [2, 1, 5, 4],
    )
    x0, y0, x1, y1 = boxes[1]  # nowhere misses its box: the hottest of all places, then
    assert boxes[1].tolist() in placements(3, 3).tolist() and grid[1, y0:y1, x0:x1].sum() == 9


def test_truth_cells_cover_every_cell_a_box_touches():
    cells = truth_cells([0, 0, 9, 9, 50, 40, 99, 79], 100, 80)
    assert cells.tolist() == [[0, 0, 4, 4], [16, 16, 32, 32]]
