"""Colour a map and blend it over its photo, as arrays: PIL's upsample across the map's few rows, then OpenCV's
down every pixel, colouring and blend (the OpenCV steps free the GIL for the other writer threads).

Torch-free; OpenCV is imported when the first overlay is drawn.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from .colormaps import palette

JPEG_QUALITY = 90  # of every overlay file (`cambatch run` and `cambatch overlays`)


def overlay(photo: np.ndarray, display_map: np.ndarray, *, colormap: str, alpha: float) -> np.ndarray:
    """Upsample a uint8 display map [h, w] bilinearly to the photo's size (uint8 RGB [H, W, 3]), colour it,
    blend it: a new uint8 RGB array.

    The blend is PIL's `Image.blend`, which drew every overlay before: photo + alpha (heat - photo),
    rounded down. OpenCV rounds to the nearest, so its offset takes 0.499 back: equal to PIL's but where
    the float sums differ at a level's edge (one level; none at the default alpha, 0.5). With PIL's palette
    and blend an overlay of a 0.43 MP photo took 1.20 ms of CPU, now 0.78 (one OpenCV thread).
    """
    import cv2  # here, not at the top: only drawing an overlay pays for OpenCV's import

    height, width = photo.shape[:2]
    heat = cv2.applyColorMap(_upsampled(display_map, (width, height)), _lut(colormap))
    return cv2.addWeighted(photo, 1.0 - alpha, heat, alpha, -0.499)


def save_jpeg(picture: np.ndarray, target: Path) -> None:
    """Save a uint8 RGB picture as a JPEG at `JPEG_QUALITY`, atomically: written under a dot-name, then renamed, so
    a killed run or a full disk never leaves a torn overlay in place.

    OpenCV encodes it: the same libjpeg-turbo settings as PIL's `save` (4:2:0, not optimized), the same bytes,
    for 1.98 ms of CPU a 1 MP overlay against PIL's 2.39-2.67 (PIL first copies it into its 4-byte pixels).
    """
    import cv2

    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)  # OpenCV's channel order
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {picture.shape} overlay as JPEG")
    temp = target.with_name(f".{target.name}.{threading.get_ident()}.tmp")
    try:
        temp.write_bytes(encoded.data)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's own thread pool at `count` threads for the block, then as it was.

    cambatch draws overlays in parallel by image (a run's writer threads, `cambatch overlays`' threads), so
    OpenCV's pool on top of that only spends CPU: on 2 cores one thread drew an overlay (0.43 MP) for 0.78 ms
    of CPU, two for 1.05-1.43 ms.
    """
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@cache
def _lut(colormap: str) -> np.ndarray:
    """The colormap as OpenCV's user colormap: 256 x 1 RGB entries (RGB in, RGB out)."""
    return np.array(palette(colormap), dtype=np.uint8).reshape(256, 1, 3)


def _upsampled(display_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The map at `size` (width, height), bilinear with pixel centres aligned, as PIL's BILINEAR makes it: uint8
    [height, width].

    PIL resizes in two passes, across then down. The first, over the map's few rows, stays PIL's; the
    second, which makes every pixel, is OpenCV's INTER_LINEAR on float32, rounded (4x faster). They differ
    only where the value is a rounding tie that PIL's fixed-point coefficients break their own way: one
    level on about 0.1 % of the pixels (`tests/test_render_overlay.py`). Not OpenCV's uint8 INTER_LINEAR:
    its fixed-point pass truncates, a darker map. Shrinking, PIL's filter widens (antialiasing) and
    OpenCV's does not, so a map larger than its photo keeps PIL's resize.
    """
    import cv2

    width, height = size
    rows, columns = display_map.shape
    heat = Image.fromarray(display_map, mode="L")
    if columns > width or rows > height:
        return np.asarray(heat.resize(size, Image.BILINEAR))
    across = np.asarray(heat.resize((width, rows), Image.BILINEAR), dtype=np.float32)  # PIL's first pass
    down = cv2.resize(across, size, interpolation=cv2.INTER_LINEAR)  # the width is kept: rows alone move
    return cv2.convertScaleAbs(down)  # rounded to the nearest level (values >= 0)


def unit_maps(raw: np.ndarray) -> np.ndarray:
    """Raw maps [n, h, w] to [0, 1]: ReLU, then min-max per map; flat maps -> 0 (numpy twin of `methods.normalize`)."""
    relu = np.maximum(raw.astype(np.float32), 0)
    low = relu.min(axis=(-2, -1), keepdims=True)
    span = relu.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (relu - low) / np.maximum(span, 1e-12), 0).astype(np.float32)


def display_map(raw: np.ndarray) -> np.ndarray:
    """A raw map [h, w] as the uint8 display map overlays are drawn from (`methods.normalize.display_maps`)."""
    return (unit_maps(raw[None])[0] * 255 + 0.5).astype(np.uint8)
