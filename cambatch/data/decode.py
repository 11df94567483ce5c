"""Decode one file into an upright RGB picture, or say clearly why not."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

# EXIF orientations that swap width and height.
TRANSPOSED = {5, 6, 7, 8}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WIDE_GRAY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class DecodeError(ImageError):
    """The file could not be turned into a picture; the message is meant for a person."""


@dataclass
class Decoded:
    """An upright RGB picture and the displayed size of the full-resolution image."""

    image: Image.Image  # RGB, upright, possibly decoded at reduced scale
    width: int  # displayed size of the full-resolution image (after EXIF orientation)
    height: int
    orientation: int = 1  # the EXIF orientation applied (1-8): ground truth in stored pixels is mapped by it


def model_decode_size(width: int, height: int, *, image_size: int) -> tuple[int, int]:
    """The least displayed size the model's decode keeps: fixed by the input size alone.

    Never by the overlay options: a JPEG decoded at another reduced scale gives the model other
    pixels, so a run with `--no-overlays` or another `--max-side` would predict otherwise.
    """
    return min(width, image_size), min(height, image_size)


def overlay_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The overlay size of a `width` x `height` photo: its own, the longest side capped by `max_side` (0: no cap)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def overlay_background(path: Path | bytes, decoded: Decoded, *, max_side: int) -> np.ndarray:
    """The overlay background at overlay size, uint8 RGB [H, W, 3] (a new array), from the model's decode of
    `path` (a file, or the image's bytes as a source's reader fetched them); a JPEG decoded too small for it
    is decoded again, larger. `run`'s loader and `cambatch overlays` both draw on it.
    """
    target = overlay_size(decoded.width, decoded.height, max_side)
    image = decoded.image
    if image.width < target[0] or image.height < target[1]:
        image = decode(path, min_size=lambda w, h: overlay_size(w, h, max_side)).image
    return np.array(image if image.size == target else image.resize(target, Image.BILINEAR), dtype=np.uint8)


def decode(path: Path | bytes, min_size: Callable[[int, int], tuple[int, int]] | None = None) -> Decoded:
    """Open `path` (a file, or an image's encoded bytes), apply EXIF orientation and convert any PIL mode to RGB.

    `min_size(width, height)` gives the least displayed size the caller needs; JPEGs then decode
    at a reduced scale (PIL `draft`) that keeps at least that size: a 12 MP photo never decodes at full size to make
    a 224 input and a 1024 overlay.
    """
    encoded = isinstance(path, (bytes, bytearray))
    if (len(path) if encoded else os.path.getsize(path)) == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Past MAX_IMAGE_PIXELS PIL only warns; a bomb must become an error row, not an OOM.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(path) if encoded else path) as img:
                orientation = img.getexif().get(0x0112, 1)
                stored_w, stored_h = img.size
                width, height = (stored_h, stored_w) if orientation in TRANSPOSED else (stored_w, stored_h)
                if min_size is not None and img.format == "JPEG":
                    need_w, need_h = min_size(width, height)
                    if orientation in TRANSPOSED:
                        need_w, need_h = need_h, need_w
                    img.draft("RGB", (need_w, need_h))
                img.load()
                upright = ImageOps.exif_transpose(img)
                applied = orientation if orientation in range(1, 9) else 1
                return Decoded(image=to_rgb(upright), width=width, height=height, orientation=applied)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"image too large (decompression-bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise DecodeError("not a readable image: unknown format or corrupt header") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"corrupt or truncated image data: {exc}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha composited on white, 16-bit and float gray rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_GRAY_MODES:
        return Image.fromarray(_gray_to_uint8(np.asarray(img), img.mode)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _gray_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode != "F" and low >= 0 and high <= 65535:
        scaled = values / 257.0  # 16-bit samples (PNG and TIFF open as I;16 or I)
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        scaled = (values - low) / ((high - low) or 1.0) * 255.0
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
