"""Boxes from score maps and box IoU: the reference protocol's own unit-test cases (clovaai/wsolevaluation,
`evaluation_test.py`, `EvalUtilTest`), with the expected values taken from there, plus the batching."""

import numpy as np
import pytest

from cambatch.evaluation.boxes import box_iou, components, largest, resize_boxes

GRID = np.arange(0, 1, 0.2)  # the reference tests' `scoremap_threshold_list`


def boxes_of(scoremap, thresholds=GRID):
    return largest(components(np.asarray(scoremap)[None], thresholds), len(thresholds)).tolist()


def test_iou_of_degenerate_zero_boxes_is_one_with_the_shape_of_both_sets():
    ious = box_iou(np.zeros((3, 4), int), np.zeros((5, 4), int))
    assert ious.shape == (3, 5) and ious.dtype == np.float64
    assert (ious == 1.0).all()


def test_iou_refuses_boxes_against_the_x0y0x1y1_convention():
    with pytest.raises(ValueError):
        box_iou(np.array([[1, 1, 0, 0]]), np.array([[1, 1, 2, 2]]))


def test_iou_of_eye_boxes():
    boxes = np.array([[1, 1, 3, 3], [4, 4, 5, 5]])
    assert (box_iou(boxes, boxes) == np.eye(2)).all()


def test_iou_realistic_value_counts_pixels_inclusively():
    assert box_iou(np.array([[1, 2, 5, 6]]), np.array([[3, 1, 4, 5]]))[0, 0] == pytest.approx(8 / 27, abs=1e-6)


def test_resize_box_cases():
    assert tuple(resize_boxes((1, 2, 4, 3), (10, 20), (35, 10))) == (3, 1, 14, 1)
    assert tuple(resize_boxes((1, 2, 1, 2), (3, 3), (3, 3))) == (1, 2, 1, 2)


def test_all_zero_map_gives_the_empty_box_at_every_threshold():
    assert boxes_of(np.zeros((3, 3))) == [[0, 0, 0, 0]] * 5


def test_unimodal_map_boxes_per_threshold():
    scoremap = np.array(
        [[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.4, 0.4, 0.4, 0.6], [0.0, 0.4, 1.0, 0.8, 0.6], [0.0, 0.4, 0.4, 0.4, 0.6]]
    )
    assert boxes_of(scoremap) == [[1, 1, 4, 3], [1, 1, 4, 3], [2, 1, 4, 3], [2, 2, 4, 3], [2, 2, 3, 3]]


MULTIMODAL = np.array(
    [[0.4, 0.0, 0.2, 0.2, 0.2], [0.4, 0.4, 0.0, 0.4, 0.0], [0.0, 0.0, 0.0, 0.4, 0.0], [1.0, 0.6, 0.8, 0.2, 0.2]]
)


def test_multimodal_map_keeps_the_region_of_largest_outline_area():
    # At 0.2 the 5-pixel chain (outline area 0) loses to the 3-pixel corner (area 1/2), as with cv2.contourArea.
    assert boxes_of(MULTIMODAL) == [[0, 0, 4, 3], [0, 0, 2, 2], [0, 3, 3, 3], [2, 3, 3, 3], [0, 3, 1, 3]]


def test_nan_map_is_refused():
    with pytest.raises(ValueError):
        boxes_of(np.full((3, 3), np.nan))


def test_all_regions_are_kept_per_threshold():
    found = components(MULTIMODAL[None], np.array([0.2]))
    assert sorted(found.boxes.tolist()) == [[0, 0, 2, 2], [0, 1, 4, 3]]
    assert found.pixels.tolist() == [3, 5]


def test_a_batch_gives_what_each_map_gives_alone_and_tiles_never_touch():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 9, 7))
    maps[1, -1, :] = 1.0  # a region on the bottom row: must not join the next map's top row
    maps[2, 0, :] = 1.0
    grid = np.arange(0, 1, 0.1)
    batched = largest(components(maps, grid), 5 * len(grid)).reshape(5, len(grid), 4)
    for i in range(5):
        assert batched[i].tolist() == boxes_of(maps[i], grid)
    alone = components(maps[1:2], grid)
    together = components(maps, grid)
    in_second = together.tile // len(grid) == 1
    assert sorted(together.boxes[in_second].tolist()) == sorted(alone.boxes.tolist())


def test_packed_rows_give_the_regions_of_each_full_mask_labelled_alone():
    import cv2

    from cambatch.evaluation.boxes import quantize
    from cambatch.evaluation.maps import score_maps

    rng = np.random.default_rng(3)
    maps = score_maps(rng.random((6, 5, 5)) - 0.3, 48)
    maps[:2] = np.clip(maps[:2] * 3 - 1, 0, 1)  # plateaus, holes, regions touching the bottom row
    grid = np.arange(0, 1, 0.05)
    found = components(maps, grid)
    scores = quantize(maps)
    for i in range(len(maps)):
        for j, threshold in enumerate(grid):
            mask = (scores[i] > int(threshold * scores[i].max())).astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            x, y, w, h, pixels = stats[1:].T
            expected = sorted(zip(x, y, np.minimum(x + w, 47), np.minimum(y + h, 47), pixels, strict=True))
            mine = found.tile == i * len(grid) + j
            got = sorted(map(tuple, np.c_[found.boxes[mine], found.pixels[mine]].tolist()))
            assert got == ([tuple(map(int, e)) for e in expected] or [(0, 0, 0, 0, 0)]), (i, j)
