"""Turn decoded pictures into model inputs and overlay backgrounds, in loader workers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UsageError
from ..render.overlay import overlay_size
from ..sources.discover import ImageSource
from .decode import DecodeError, decode, model_decode_size, overlay_background

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
class Sample:
    """A decoded image: its model input and, when overlays are wanted, its overlay background."""

    index: int  # position in the run's list of sources
    pixels: torch.Tensor  # uint8 [3, S, S], not normalized (normalization happens on the device)
    photo: torch.Tensor | None  # uint8 [H, W, 3] at overlay size
    width: int
    height: int
    orientation: int = 1  # the EXIF orientation the decode applied: the writer maps ground truth by it


@dataclass
class Failure:
    """An image that could not be read; becomes one error row."""

    index: int
    error: str


@dataclass
class Batch:
    """What the loader hands to the model: good images stacked, failures carried alongside."""

    pixels: torch.Tensor  # uint8 [B, 3, S, S], B = len(samples)
    samples: list[Sample]
    failures: list[Failure]

    def pin_memory(self) -> Batch:
        self.pixels = self.pixels.pin_memory()
        return self


class ImageFiles(Dataset):
    """Decodes `sources[i]`; never raises for a bad file (the failure travels with the batch)."""

    def __init__(self, sources: list[ImageSource], prep: Preprocess):
        self.sources = sources
        self.prep = prep

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> Sample | Failure:
        try:
            return self._load(index)
        except DecodeError as exc:
            return Failure(index, str(exc))
        except Exception as exc:  # noqa: BLE001 - any one file's failure must stay one row
            return Failure(index, f"{type(exc).__name__}: {exc}")

    def _load(self, index: int) -> Sample:
        # Read here, in the worker: local, remote and container samples alike, never on the device path.
        return self._decoded(index, self.sources[index].read_bytes())

    def _decoded(self, index: int, data: bytes) -> Sample:
        prep = self.prep
        decoded = decode(data, min_size=prep.decode_size)
        size = prep.image_size
        resized = decoded.image.resize((size, size), RESAMPLING[prep.interpolation])
        pixels = _as_tensor(resized).permute(2, 0, 1).contiguous()
        photo = _as_tensor(overlay_background(data, decoded, max_side=prep.max_side)) if prep.overlays else None
        return Sample(index, pixels, photo, decoded.width, decoded.height, decoded.orientation)


def _as_tensor(image: Image.Image) -> torch.Tensor:
    """RGB picture to uint8 [H, W, 3]; tensors travel from loader workers through shared memory."""
    return torch.from_numpy(np.array(image, dtype=np.uint8))


def collate(items: list[Sample | Failure]) -> Batch:
    samples = [item for item in items if isinstance(item, Sample)]
    failures = [item for item in items if isinstance(item, Failure)]
    pixels = torch.stack([s.pixels for s in samples]) if samples else torch.empty(0, dtype=torch.uint8)
    return Batch(pixels, samples, failures)
