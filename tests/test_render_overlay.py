"""`cambatch.render.overlay`: the map upsampled to the photo's size, coloured and blended over it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cambatch.render.colormaps import palette
from cambatch.render.overlay import overlay


def photo(width: int = 37, height: int = 23) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_overlay_has_the_photos_size_and_mode():
    picture = photo(37, 23)
    result = overlay(picture, np.zeros((7, 7), np.uint8), colormap="jet", alpha=0.5)
    assert result.size == (37, 23) and result.mode == "RGB"


def test_alpha_zero_gives_the_photo_back():
    picture = photo()
    heat = np.arange(49, dtype=np.uint8).reshape(7, 7) * 5
    np.testing.assert_array_equal(np.asarray(overlay(picture, heat, colormap="jet", alpha=0.0)), np.asarray(picture))


@pytest.mark.parametrize("colormap", ["jet", "viridis"])
def test_alpha_one_gives_the_colormap_alone(colormap):
    flat = palette(colormap)
    hot = overlay(photo(), np.full((7, 7), 255, np.uint8), colormap=colormap, alpha=1.0)
    cold = overlay(photo(), np.zeros((7, 7), np.uint8), colormap=colormap, alpha=1.0)
    assert set(map(tuple, np.asarray(hot).reshape(-1, 3).tolist())) == {tuple(flat[-3:])}
    assert set(map(tuple, np.asarray(cold).reshape(-1, 3).tolist())) == {tuple(flat[:3])}


def test_half_alpha_is_the_mean_of_photo_and_heat():
    picture = photo()
    blended = np.asarray(overlay(picture, np.full((7, 7), 255, np.uint8), colormap="jet", alpha=0.5), dtype=int)
    expected = (np.asarray(picture, dtype=int) + np.array(palette("jet")[-3:])) / 2
    assert np.abs(blended - expected).max() <= 1


def test_the_map_is_laid_over_the_photo_the_right_way_round():
    # A 2 x 4 map (rows x columns), hot in its left column only, over a wide photo.
    heat = np.zeros((2, 4), np.uint8)
    heat[:, 0] = 255
    result = np.asarray(overlay(Image.new("RGB", (80, 40)), heat, colormap="jet", alpha=1.0), dtype=int)
    redness = result[..., 0] - result[..., 2]
    assert redness[:, :10].mean() > 50 and redness[:, -20:].mean() < 0  # hot left, cold right
    np.testing.assert_array_equal(result[0], result[-1])  # the same down every column
