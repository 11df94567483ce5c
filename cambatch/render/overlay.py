"""Colour a map and blend it over its photo: OpenCV's upsample, PIL's palette and blend (C code; the blend keeps the
GIL, the upsample and the JPEG encode free it).

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
    # PIL's palette and blend: OpenCV's, with the copies between PIL images and arrays, were no faster.
    return Image.blend(photo, heat.convert("RGB"), alpha)


def _upsampled(display_map: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The map at `size` (width, height), bilinear with pixel centres aligned, as PIL's BILINEAR makes it, as an
    "L" image.

    PIL resizes in two passes, across then down. The first, over the map's few rows, stays PIL's; the
    second, which makes every pixel, is OpenCV's INTER_LINEAR on float32, rounded (4x faster). They differ
    only where the value is a rounding tie that PIL's fixed-point coefficients break their own way: one
    level on about 0.1 % of the pixels (`tests/test_render_overlay.py`). Not OpenCV's uint8 INTER_LINEAR:
    its fixed-point pass truncates, a darker map. Shrinking, PIL's filter widens (antialiasing) and
    OpenCV's does not, so a map larger than its photo keeps PIL's resize. OpenCV's thread count is the
    process's, left as it is (one thread measured no better beside the writers).
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
