"""JPEG decoding on the GPU (nvJPEG through `torchvision.io.decode_jpeg(device="cuda")`).

On a CUDA device, loader workers stop decoding baseline JPEGs: they read the file's bytes and its
header (size, EXIF orientation) and hand them over; the main thread decodes the whole batch in one
nvJPEG call, turns each picture upright, and resizes it to the model input and the overlay size on
the GPU. Everything else (PNG, progressive or CMYK JPEGs, ...) is decoded by the workers as usual.

nvJPEG's batched call returns nothing when any one image of the batch fails, so a failing batch
is decoded again one image at a time, and an image that still fails on the GPU is decoded on the
CPU; one that fails there too becomes an error row, as on the CPU path.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UsageError
from .decode import TRANSPOSED, DecodeError, decode
from .inputs import Preprocess
from .preprocess import Batch, Failure, ImageFiles, Sample, collate

_BASELINE_SOF = (0xC0, 0xC1)  # baseline and extended sequential Huffman DCT: what nvJPEG's batched path takes
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_HEADER_BYTES = 1 << 16


@dataclass
class JpegHeader:
    """What the frame header of a JPEG says."""

    sof: int  # the frame marker's low byte (0xC0 = baseline)
    precision: int  # bits per sample
    width: int  # stored size
    height: int
    components: int


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header of a JPEG (None if `data` is not a JPEG or has no frame header in reach)."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS:
            if pos + 10 > len(data):
                return None
            seg = data[pos + 4 : pos + 10]
            return JpegHeader(marker, seg[0], int.from_bytes(seg[3:5], "big"), int.from_bytes(seg[1:3], "big"), seg[5])
        if marker == 0xDA or length < 2:  # scan data before any frame header: not a usable JPEG
            return None
        pos += 2 + length
    return None


def gpu_decodable(header: JpegHeader | None) -> bool:
    """Baseline 8-bit gray or 3-component JPEGs: what the GPU path decodes (the rest stays on the CPU)."""
    return header is not None and header.sof in _BASELINE_SOF and header.precision == 8 and header.components in (1, 3)


@dataclass
class EncodedSample(Sample):
    """A JPEG still to decode on the GPU: its bytes and EXIF orientation travel instead of pixels."""

    data: torch.Tensor = field(default=None)  # uint8 [n], the file's bytes


@dataclass
class EncodedBatch(Batch):
    """A batch whose `encoded` samples still need decoding; `pixels` holds the others' inputs."""

    encoded: list[EncodedSample] = field(default_factory=list)


class EncodedImageFiles(ImageFiles):
    """Like `ImageFiles`, but hands baseline JPEGs over undecoded (for `GpuDecoder`)."""

    def _load(self, index: int) -> Sample:
        source = self.sources[index]
        data = source.read_bytes()
        if os.path.splitext(source.rel)[1].lower() not in (".jpg", ".jpeg"):
            return self._decoded(index, data)
        header = read_jpeg_header(data[:_HEADER_BYTES])
        if not gpu_decodable(header):
            return self._decoded(index, data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                # Header only: EXIF, and PIL's decompression-bomb guard, which `Image.open` applies.
                with Image.open(io.BytesIO(data)) as img:
                    orientation = img.getexif().get(0x0112, 1)
                    orientation = orientation if orientation in range(1, 9) else 1
        except Exception:  # noqa: BLE001 - let the CPU path produce its usual message
            return self._decoded(index, data)
        width, height = (header.height, header.width) if orientation in TRANSPOSED else (header.width, header.height)
        return EncodedSample(
            index,
            None,
            None,
            width,
            height,
            orientation,
            data=torch.frombuffer(bytearray(data), dtype=torch.uint8),
        )


def collate_encoded(items: list[Sample | Failure]) -> EncodedBatch:
    encoded = [item for item in items if isinstance(item, EncodedSample)]
    batch = collate([item for item in items if not isinstance(item, EncodedSample)])
    return EncodedBatch(batch.pixels, batch.samples, batch.failures, encoded)


def decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes (uint8 tensors) to RGB uint8 [3, H, W] pictures on `device`, in one batched call.

    The one place cambatch calls torchvision's image decoding, which torchvision 0.29 deprecates in
    favour of TorchCodec: when it goes, only this function changes (tests/test_data_gpu_decode.py
    decodes through it on the CPU, so a removal or a changed signature fails there first).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def cuda_jpeg_available(device: torch.device) -> bool:
    """Whether nvJPEG decoding works on `device` (a one-pixel probe)."""
    if device.type != "cuda":
        return False
    try:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "JPEG")
        data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
        out = decode_jpegs([data], device)
        return out[0].shape == (3, 8, 8)
    except Exception:  # noqa: BLE001 - any failure: no GPU decoding
        return False


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1-8) to a [C, H, W] picture, as PIL's `exif_transpose` does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1, -2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return image.transpose(-1, -2).flip(-2)
    return image


def resize_uint8(image: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """[3, H, W] uint8 to [3, h, w] uint8 (size = (w, h)), bilinear or bicubic with antialiasing like PIL's
    (torch's antialiased kernels are PIL's, bicubic's a = -0.5 included).
    """
    w, h = size
    if image.shape[-2:] == (h, w):
        return image
    out = F.interpolate(image[None].float(), size=(h, w), mode=interpolation, align_corners=False, antialias=True)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


class GpuDecoder:
    """Completes `EncodedBatch`es on `device`: decode, orient, resize; CPU fallback per image."""

    def __init__(self, prep: Preprocess, device: torch.device, decode_fn=decode_jpegs):
        self.prep = prep
        self.device = device
        self._decode = decode_fn
        self.gpu_images = 0
        self.cpu_fallbacks = 0

    def __call__(self, batch: Batch) -> Batch:
        if not isinstance(batch, EncodedBatch) or not batch.encoded:
            return batch
        decoded = self._decode_all(batch.encoded)
        samples, inputs, failures = (
            list(batch.samples),
            [batch.pixels.to(self.device)] if batch.samples else [],
            list(batch.failures),
        )
        size = self.prep.image_size
        for sample, (picture, upright) in zip(batch.encoded, decoded, strict=True):
            if isinstance(picture, str):
                failures.append(Failure(sample.index, picture))
                continue
            upright = picture if upright else orient(picture, sample.orientation)
            inputs.append(resize_uint8(upright, (size, size), self.prep.interpolation)[None])
            photo = None
            if self.prep.overlays:
                photo = resize_uint8(upright, self.prep.overlay_size(sample.width, sample.height)).permute(1, 2, 0)
                photo = photo.to("cpu", non_blocking=False)
            samples.append(Sample(sample.index, None, photo, sample.width, sample.height, sample.orientation))
        pixels = torch.cat(inputs) if inputs else torch.empty(0, dtype=torch.uint8)
        return Batch(pixels, samples, failures)

    def _decode_all(self, encoded: list[EncodedSample]) -> list[tuple[torch.Tensor | str, bool]]:
        """(uint8 [3, H, W] on the device or the reason it could not be read, whether already upright)."""
        data = [s.data for s in encoded]
        try:
            pictures = self._decode(data, self.device)
            self.gpu_images += len(pictures)
            return [(picture, False) for picture in pictures]
        except Exception:  # noqa: BLE001 - the batched call gives no partial results: one at a time
            pass
        results: list[tuple[torch.Tensor | str, bool]] = []
        for sample in encoded:
            try:
                results.append((self._decode([sample.data], self.device)[0], False))
                self.gpu_images += 1
            except Exception:  # noqa: BLE001 - not for nvJPEG: the CPU decodes it
                results.append((self._cpu_decode(sample), True))
        return results

    def _cpu_decode(self, sample: EncodedSample) -> torch.Tensor | str:
        """The CPU path's decoder (EXIF orientation applied), or its one-line reason."""
        self.cpu_fallbacks += 1
        try:
            decoded = decode(sample.data.numpy().tobytes())  # the bytes the worker read
        except DecodeError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - one file's failure stays one row
            return f"{type(exc).__name__}: {exc}"
        picture = torch.from_numpy(np.array(decoded.image, dtype=np.uint8)).permute(2, 0, 1)
        return picture.to(self.device)


def use_gpu_decode(mode: str, device: torch.device) -> bool:
    """Whether a run decodes JPEGs on the GPU: `auto` where nvJPEG works, `on` insists, `off` never
    (the modes of `cambatch.config.GPU_DECODE_MODES`).
    """
    if mode == "off":
        return False
    available = cuda_jpeg_available(device)
    if mode == "on" and not available:
        raise UsageError(
            "gpu_decode on (--gpu-decode on) needs a CUDA device where torchvision's nvJPEG decoding works; "
            "use auto or off"
        )
    return available


class DecodedBatches:
    """A loader whose batches come out complete: `decoder` finishes what the workers left encoded."""

    def __init__(self, loader, decoder: GpuDecoder):
        self.loader = loader
        self.decoder = decoder
        self.batch_size = loader.batch_size

    def __iter__(self):
        for batch in self.loader:
            yield self.decoder(batch)

    def __len__(self) -> int:
        return len(self.loader)
