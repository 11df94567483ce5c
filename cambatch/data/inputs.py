"""What one file becomes before the model: its input square and its overlay background, as arrays.

Torch-free on purpose: a process that only decodes (a Ray Data CPU task, `runner.ray_decode`)
then imports PIL and numpy and never torch, whose import alone costs such a worker about 2.5 s
of CPU. `preprocess` wraps these arrays as tensors for the plain engine's loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import ImageError, UsageError
from .decode import decode, model_decode_size, overlay_background, overlay_size

# The resizes models' configs ask for (timm's `interpolation`, torchvision's weight transforms), as PIL filters.
RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@dataclass(frozen=True, kw_only=True)
class Preprocess:
    """How a picture becomes a model input (the whole image, no crop) and, with `overlays`, an overlay background."""

    image_size: int
    interpolation: str = "bilinear"  # the model's own (`CamModel.interpolation`), never an output option
    overlays: bool = False
    max_side: int = 0  # cap on the overlay background's longest side; 0 keeps the photo's size

    def __post_init__(self) -> None:
        if self.interpolation not in RESAMPLING:
            raise UsageError(
                f"the model's config asks for {self.interpolation!r} resizing; cambatch resizes with "
                f"{' or '.join(RESAMPLING)}"
            )

    def overlay_size(self, width: int, height: int) -> tuple[int, int]:
        """The photo's own size, its longest side capped by `max_side`."""
        return overlay_size(width, height, self.max_side)

    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        """The least displayed size the model's decode keeps (`decode.model_decode_size`)."""
        return model_decode_size(width, height, image_size=self.image_size)


@dataclass
class Prepared:
    """One decoded file: the model's input and, when overlays are wanted, the overlay background."""

    pixels: np.ndarray  # uint8 [3, S, S], not normalized (normalization happens on the device)
    photo: np.ndarray | None  # uint8 [H, W, 3] at overlay size
    width: int  # displayed size of the full-resolution image
    height: int
    orientation: int  # the EXIF orientation the decode applied: the writer maps ground truth by it


def prepare(data: bytes, prep: Preprocess) -> Prepared:
    """Decode `data` (a whole file's bytes) and resize it to the model's square; raises on a bad file."""
    decoded = decode(data, min_size=prep.decode_size)
    size = prep.image_size
    resized = decoded.image.resize((size, size), RESAMPLING[prep.interpolation])
    pixels = np.ascontiguousarray(_as_array(resized).transpose(2, 0, 1))
    photo = overlay_background(data, decoded, max_side=prep.max_side) if prep.overlays else None
    return Prepared(pixels, photo, decoded.width, decoded.height, decoded.orientation)


def failure_message(exc: Exception) -> str:
    """A file's failure as its error row says it: an `ImageError`'s own words, else the type and message."""
    return str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"


def _as_array(image: Image.Image) -> np.ndarray:
    return np.array(image, dtype=np.uint8)
