"""Colour a map and blend it over its photo (PIL's C code: fast, and it frees the GIL). Torch-free."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .colormaps import palette


def overlay(photo: Image.Image, display_map: np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """Upsample a uint8 display map [h, w] bilinearly to the photo's size, colour it, blend it."""
    heat = Image.fromarray(display_map, mode="L").resize(photo.size, Image.BILINEAR)
    heat.putpalette(palette(colormap))
    return Image.blend(photo, heat.convert("RGB"), alpha)
