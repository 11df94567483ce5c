"""The gallery's mean-map pictures: coloured with the run's palette on the 0..1 scale, written under gallery/maps/."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cambatch.inspection.shortcut_pictures import PICTURE_SIDE, map_picture
from cambatch.layout import OutputLayout
from cambatch.render.colormaps import palette


def test_a_mean_map_is_coloured_like_the_overlays(tmp_path):
    layout = OutputLayout(tmp_path)
    mean = np.zeros((32, 32), np.float32)
    mean[:16] = 1.0  # top half hot, bottom half cold
    rel = map_picture(mean, layout, layout.gallery_map_rel("class", 3, "Jack-o'-lantern"), "viridis")
    assert rel == "maps/class/00003_jack_o_lantern.png"
    with Image.open(tmp_path / "gallery" / rel) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape == (2 * PICTURE_SIDE, 2 * PICTURE_SIDE, 3)
    colours = np.array(palette("viridis")).reshape(256, 3)
    assert tuple(pixels[0, 0]) == tuple(colours[255]) and tuple(pixels[-1, -1]) == tuple(colours[0])


def test_a_report_without_maps_adds_nothing(tmp_path):
    """Ported from the in-memory `shortcut_pictures(df, ...)`: the gallery streams the report, and a report
    without maps gives its groups no mean map, no clusters and no pictures."""
    from inspecting_support import synthesize_run
    from test_inspection_gallery import page_data

    from cambatch.inspection.gallery import build_gallery

    out = synthesize_run(tmp_path / "run", images=30, classes=3, errors=0)  # no `map` column
    data = page_data(build_gallery(out).index)
    assert data["groups"]["class"] and all("mm" not in g and "cl" not in g for g in data["groups"]["class"].values())
    assert all(image["kc"] == -1 for image in data["images"])
    assert not (tmp_path / "run" / "gallery" / "maps").exists()
