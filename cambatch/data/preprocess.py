"""Model inputs and overlay backgrounds as tensors: samples, failures carried as values, batches (from the
DataLoader's workers on a GPU, from `loader.DecodePool`'s on a CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch.utils.data import Dataset

from ..sources.discover import ImageSource
from .inputs import Preprocess, failure_message, prepare
from .loader import DecodedBatch


@dataclass
class Sample:
    """A decoded image: its model input and, when overlays are wanted, its overlay background."""

    index: int  # position in the run's list of sources
    pixels: torch.Tensor | None  # uint8 [3, S, S], not normalized; None once stacked into its `Batch`
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
    """What the loader hands to the model: good images stacked, failures carried alongside.

    From a DataLoader worker (a GPU run's, or a CPU run's where `loader.DecodePool` is not available) to the
    main process a batch travels as two shared-memory tensors, its pixels and one buffer of all its photos,
    not one per image: each tensor costs the main process a socket handshake with the worker (torch's
    file-descriptor sharing), and at 17 a batch those waits took 0.45 s of the main thread's 4.3 s on 256
    photos.
    """

    pixels: torch.Tensor  # uint8 [B, 3, S, S], B = len(samples)
    samples: list[Sample]
    failures: list[Failure]

    def pin_memory(self) -> Batch:
        self.pixels = self.pixels.pin_memory()
        return self

    def __getstate__(self) -> dict:
        photos = [s.photo for s in self.samples if s.photo is not None]
        shapes = [tuple(s.photo.shape) if s.photo is not None else None for s in self.samples]
        buffer = None
        if photos:  # copied once, straight into shared memory
            buffer = torch.empty(sum(p.numel() for p in photos), dtype=torch.uint8).share_memory_()
            torch.cat([p.reshape(-1) for p in photos], out=buffer)
        return {**vars(self), "samples": [replace(s, photo=None) for s in self.samples], "photos": (buffer, shapes)}

    def __setstate__(self, state: dict) -> None:
        buffer, shapes = state.pop("photos")
        start = 0
        for sample, shape in zip(state["samples"], shapes, strict=True):
            if shape is not None:  # each photo a view of the one buffer
                sample.photo = buffer[start : start + math.prod(shape)].view(shape)
                start += math.prod(shape)
        self.__dict__.update(state)


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
        except Exception as exc:  # noqa: BLE001 - any one file's failure must stay one row
            return Failure(index, failure_message(exc))

    def _load(self, index: int) -> Sample:
        # Read here, in the worker: local, remote and container samples alike, never on the device path.
        return self._decoded(index, self.sources[index].read_bytes())

    def _decoded(self, index: int, data: bytes) -> Sample:
        # Tensors travel from loader workers to the main process through shared memory.
        prepared = prepare(data, self.prep)
        photo = torch.from_numpy(prepared.photo) if prepared.photo is not None else None
        pixels = torch.from_numpy(prepared.pixels)
        return Sample(index, pixels, photo, prepared.width, prepared.height, prepared.orientation)


def collate(items: list[Sample | Failure]) -> Batch:
    """The batch of `items`: the samples' pixels stacked (and dropped from each sample), failures apart."""
    samples = [item for item in items if isinstance(item, Sample)]
    failures = [item for item in items if isinstance(item, Failure)]
    pixels = torch.stack([s.pixels for s in samples]) if samples else torch.empty(0, dtype=torch.uint8)
    return Batch(pixels, [replace(s, pixels=None) for s in samples], failures)


def as_batch(decoded: DecodedBatch) -> Batch:
    """A `loader.DecodePool` batch as tensors, without a copy: they share the arrays' memory."""
    samples = [
        Sample(
            image.index,
            None,  # the batch's pixels hold it, as `collate` leaves it
            torch.from_numpy(image.photo) if image.photo is not None else None,
            image.width,
            image.height,
            image.orientation,
        )
        for image in decoded.images
    ]
    failures = [Failure(index, error) for index, error in decoded.failures]
    return Batch(torch.from_numpy(decoded.pixels), samples, failures)
