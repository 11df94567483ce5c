"""Per-row localization by hand: CAM box IoU, energy in the ground truth, the pointing game."""

import numpy as np
import pytest

from cambatch.evaluation.rows import box_masks, continuous_iou, energy_in, peak_points, pointing_hits


def test_continuous_iou_takes_the_best_box_and_inclusive_ground_truth():
    cam = np.array([[10.0, 10.0, 20.0, 20.0], [np.nan] * 4])
    gt = np.array([[[10, 10, 19, 19], [100, 100, 110, 110]], [[0, 0, 5, 5], [0, 0, 0, 0]]], float)
    valid = np.array([[True, True], [True, False]])
    iou = continuous_iou(cam, gt, valid)
    assert iou[0] == 1.0  # 10..19 inclusive is the edge box [10, 20)
    assert np.isnan(iou[1])


def test_box_masks_union_of_valid_boxes():
    gt = np.array([[[0, 0, 1, 1], [3, 3, 3, 3], [0, 0, 4, 4]]])
    masks = box_masks(gt, np.array([[True, True, False]]), 5)
    assert masks.sum() == 5 and masks[0, 3, 3] and masks[0, 1, 1] and not masks[0, 2, 2]


def test_energy_share_of_the_positive_mass():
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3], maps[0, 1, 1] = 3.0, 1.0, -5.0  # negatives do not count
    region = np.zeros((2, 4, 4), bool)
    region[:, :2, :2] = True
    energy = energy_in(maps, region)
    assert energy[0] == pytest.approx(0.75)
    assert np.isnan(energy[1])  # no positive mass


def test_pointing_hit_within_fifteen_pixels_of_a_box():
    maps = np.zeros((3, 4, 4))
    maps[:, 0, 0] = 1  # the peak's cell centre: (0.5, 0.5) * 100 / 4 = (12.5, 12.5) in a 100 x 100 image
    points = peak_points(maps, np.full((3, 2), 100.0))
    assert points.tolist() == [[12.5, 12.5]] * 3
    gt = np.array([[[20, 20, 50, 50]], [[28, 12, 40, 20]], [[28, 29, 40, 40]]], float)
    hits = pointing_hits(points, gt, np.ones((3, 1), bool))
    # distances: hypot(7.5, 7.5) = 10.6; 15.5 (x only); hypot(15.5, 16.5) > 15
    assert hits.tolist() == [True, False, False]
    assert pointing_hits(points, gt, np.ones((3, 1), bool), tolerance=15.5).tolist() == [True, True, False]
