"""Ground-truth boxes of the stored image mapped into the displayed (EXIF-oriented) image."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from cambatch.annotations.model import Box, Truth
from cambatch.annotations.orient import displayed_boxes, orient_boxes, orientation, visible_boxes


@pytest.mark.parametrize("orient", range(1, 9))
def test_each_orientation_moves_the_box_with_its_pixels(tmp_path, orient):
    stored = np.zeros((6, 10), np.uint8)  # H x W
    stored[1:3, 2:7] = 255  # box x 2..6, y 1..2
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orient
    image.save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as img:
        shown = np.asarray(ImageOps.exif_transpose(img))
    ys, xs = np.nonzero(shown)
    assert orientation(tmp_path / "o.png") == orient
    box = orient_boxes(np.array([[2, 1, 6, 2]]), orient, (10, 6))
    assert box.tolist() == [[xs.min(), ys.min(), xs.max(), ys.max()]]


def test_boxes_of_another_stated_size_are_scaled_first():
    truth = Truth(boxes=(Box(10, 20, 30, 40),), size=(100, 200))
    assert displayed_boxes(truth, (50, 100)).tolist() == [[5, 10, 15, 20]]
    # rotated 90 clockwise: stored 50 x 100 (boxes scaled to 5, 10, 15, 20), displayed 100 x 50: x' = 99 - y, y' = x
    assert displayed_boxes(truth, (100, 50), 6).tolist() == [[99 - 20, 5, 99 - 10, 15]]


def test_orientation_of_an_unreadable_file_is_one(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"nope")
    assert orientation(tmp_path / "x.jpg") == 1


def test_visible_boxes_are_clipped_to_the_image_and_a_box_wholly_outside_is_a_problem_line():
    past = Box(100, 50, 900, 700, where="boxes.csv:2")
    inside = Box(10, 10, 20, 20, where="boxes.csv:3")
    boxes, problems = visible_boxes(Truth(boxes=(past, inside)), (451, 300))
    assert boxes.tolist() == [[100, 50, 450, 299], [10, 10, 20, 20]] and problems == []
    outside = Box(500, 320, 900, 700, where="boxes.csv:4")
    boxes, problems = visible_boxes(Truth(boxes=(inside, outside)), (451, 300))
    assert problems == ["boxes.csv:4: box 500,320,900,700 lies wholly outside the 451x300 image"]
    # Turned by its EXIF orientation (6: 90 degrees clockwise), a stored box still clips to the displayed image.
    boxes, problems = visible_boxes(Truth(boxes=(Box(0, 0, 10, 500),)), (300, 451), 6)
    assert boxes.tolist() == [[0, 0, 299, 10]] and problems == []
    assert visible_boxes(Truth(), (10, 10))[0].shape == (0, 4)
