"""The gallery's mean-map pictures: coloured with the run's palette on the 0..1 scale, written under gallery/maps/."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cambatch.inspection.shortcut_pictures import PICTURE_SIDE, _picture
from cambatch.layout import OutputLayout
from cambatch.render.colormaps import palette


def test_a_mean_map_is_coloured_like_the_overlays(tmp_path):
    layout = OutputLayout(tmp_path)
    mean = np.zeros((32, 32), np.float32)
    mean[:16] = 1.0  # top half hot, bottom half cold
    rel = _picture(mean, layout, layout.gallery_map_rel("class", 3, "Jack-o'-lantern"), "viridis")
    assert rel == "maps/class/00003_jack_o_lantern.png"
    with Image.open(tmp_path / "gallery" / rel) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape == (2 * PICTURE_SIDE, 2 * PICTURE_SIDE, 3)
    colours = np.array(palette("viridis")).reshape(256, 3)
    assert tuple(pixels[0, 0]) == tuple(colours[255]) and tuple(pixels[-1, -1]) == tuple(colours[0])
