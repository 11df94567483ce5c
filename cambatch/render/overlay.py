"""Colour a map and blend it over its photo: OpenCV's upsample, PIL's palette and blend (C code that frees the GIL).

Torch-free; OpenCV is imported when the first overlay is drawn.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .colormaps import palette

JPEG_QUALITY = 90  # of every overlay file (`cambatch run` and `cambatch overlays`)


def overlay(photo: Image.Image, display_map: np.ndarray, *, colormap: str, alpha: float) -> Image.Image:
    """Upsample a uint8 display map [h, w] bilinearly to the photo's size, colour it, blend it."""
    heat = _upsampled(display_map, photo.size)
    heat.putpalette(palette(colormap))
    # PIL for the palette and the blend, as before. cv2.applyColorMap and cv2.addWeighted are faster alone (0.19
    # and 0.19 against 0.22 and 0.52 ms, 735 x 551), but the photo comes in and the overlay goes out as PIL
    # images, and the copies to and from arrays take that back: over the 256 photos of the benchmark the two
    # ways came within 7 % of each other, the faster changing from run to run.
    return Image.blend(photo, heat.convert("RGB"), alpha)


def _upsampled(display_map: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The map at `size` (width, height), bilinear with pixel centres aligned, as PIL's BILINEAR makes it, as an
    "L" image.

    PIL resizes in two passes, across then down, rounded to uint8 between them. The first pass, over the map's
    few rows, stays PIL's; the second, which makes every pixel, is OpenCV's INTER_LINEAR on float32, rounded:
    0.17 against 0.69 ms for 7 x 7 to 735 x 551. The two agree but where the bilinear value falls on a half,
    or within float32's error of one, and PIL's 22-bit coefficients break the tie their own way: one grey
    level, on 0.1 % of the pixels of 7 x 7 maps over photos capped at 1024 (1.3 % at most on one photo). A
    pixel one level off is one palette entry off, so the overlay moves there by up to alpha x the palette's
    largest step (`tests/test_render_overlay.py`). Not OpenCV's uint8 INTER_LINEAR, though faster (0.12 ms):
    its fixed-point pass truncates, so it is darker than the exact value by 0.1 level on average and 13 % of
    its pixels differ from PIL's, which moves the golden run's overlay thumbnails.

    Shrinking an axis, PIL's BILINEAR widens its filter (antialiasing) and INTER_LINEAR does not (nor is
    INTER_AREA close: up to 65 levels apart on random maps), so a map larger than its photo keeps PIL's resize.

    OpenCV's thread count is left as it is (one thread a core by default): it is the whole process's setting,
    not this module's to change, and one thread bought too little to ask for it. Two nice-19 writer threads
    drawing overlays and JPEGs on 2 cores beside a 1-thread torch loop (6 paired runs): 2.06 against 2.11 ms
    an overlay and 139 against 136 loop iterations/s, medians, each within the runs' spread (2.0-2.2 ms,
    132-143/s). The pool's threads are created by its first caller (in a CPU run a writer, at nice 19) and
    keep that priority, so they never outrank the forward.
    """
    width, height = size
    rows, columns = display_map.shape
    heat = Image.fromarray(display_map, mode="L")
    if columns > width or rows > height:
        return heat.resize(size, Image.BILINEAR)
    import cv2  # here, not at the top: only drawing an overlay pays for OpenCV's import

    across = np.asarray(heat.resize((width, rows), Image.BILINEAR), dtype=np.float32)  # PIL's first pass
    down = cv2.resize(across, size, interpolation=cv2.INTER_LINEAR)  # the width is kept: rows alone move
    return Image.fromarray(cv2.convertScaleAbs(down), mode="L")  # rounded to the nearest level (values >= 0)


def unit_maps(raw: np.ndarray) -> np.ndarray:
    """Raw maps [n, h, w] to [0, 1]: ReLU, then min-max per map; flat maps -> 0 (numpy twin of `methods.normalize`)."""
    relu = np.maximum(raw.astype(np.float32), 0)
    low = relu.min(axis=(-2, -1), keepdims=True)
    span = relu.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (relu - low) / np.maximum(span, 1e-12), 0).astype(np.float32)


def display_map(raw: np.ndarray) -> np.ndarray:
    """A raw map [h, w] as the uint8 display map overlays are drawn from (`methods.normalize.display_maps`)."""
    return (unit_maps(raw[None])[0] * 255 + 0.5).astype(np.uint8)
