"""Colour a map and blend it over its photo (PIL's C code: fast, and it frees the GIL). Torch-free."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .colormaps import palette

JPEG_QUALITY = 90  # of every overlay file (`cambatch run` and `cambatch overlays`)


def overlay(photo: Image.Image, display_map: np.ndarray, *, colormap: str, alpha: float) -> Image.Image:
    """Upsample a uint8 display map [h, w] bilinearly to the photo's size, colour it, blend it."""
    heat = Image.fromarray(display_map, mode="L").resize(photo.size, Image.BILINEAR)
    heat.putpalette(palette(colormap))
    return Image.blend(photo, heat.convert("RGB"), alpha)


def unit_maps(raw: np.ndarray) -> np.ndarray:
    """Raw maps [n, h, w] to [0, 1]: ReLU, then min-max per map; flat maps -> 0 (numpy twin of `methods.normalize`)."""
    relu = np.maximum(raw.astype(np.float32), 0)
    low = relu.min(axis=(-2, -1), keepdims=True)
    span = relu.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (relu - low) / np.maximum(span, 1e-12), 0).astype(np.float32)


def display_map(raw: np.ndarray) -> np.ndarray:
    """A raw map [h, w] as the uint8 display map overlays are drawn from (`methods.normalize.display_maps`)."""
    return (unit_maps(raw[None])[0] * 255 + 0.5).astype(np.uint8)
