"""`cambatch.bias.occlusion`: the blur occluder changes only what it is asked to hide, and hides a small mark."""

from __future__ import annotations

import torch

from cambatch.bias.occlusion import blur_fill, box_masks


def test_box_masks_cover_the_boxes_fractions():
    masks = box_masks(torch.tensor([[0.0, 0.0, 0.5, 0.25], [0.25, 0.5, 1.0, 1.0]]), 8)
    assert masks.shape == (2, 1, 8, 8) and masks.dtype == torch.bool
    assert masks[0, 0].sum() == 4 * 2 and masks[0, 0, :2, :4].all()
    assert masks[1, 0].sum() == 6 * 4 and masks[1, 0, 4:, 2:].all()


def test_blur_fill_hides_a_small_mark_and_leaves_the_rest_untouched():
    images = torch.zeros(2, 3, 64, 64)
    images[:, 0, 10:16, 10:16] = 4.0  # a small bright mark
    masks = box_masks(torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]]), 64)
    hidden = blur_fill(images, masks)
    outside = ~masks.expand_as(images)
    assert torch.equal(hidden[outside], images[outside])
    assert hidden[0, 0, 10:16, 10:16].max() < 0.6 * 4.0  # a faint smear is all that is left of the mark
    assert (hidden[1, 0, 10:16, 10:16] == 4.0).all()  # image 1's box misses it


def test_blur_fill_keeps_a_plain_image_as_it_is():
    """A blur of a constant is the constant (borders reflected): the occluder adds no colour of its own."""
    images = torch.full((1, 3, 32, 32), 0.7)
    masks = box_masks(torch.tensor([[0.0, 0.0, 0.5, 1.0]]), 32)
    torch.testing.assert_close(blur_fill(images, masks), images)
