"""`cambatch.data.gpu_decode`: GPU JPEG decoding, its logic checked on a CPU (a stand-in for nvJPEG)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from PIL import Image, ImageOps

from cambatch.data.gpu_decode import (
    DecodedBatches,
    EncodedBatch,
    EncodedImageFiles,
    GpuDecoder,
    collate_encoded,
    decode_jpegs,
    gpu_decodable,
    orient,
    read_jpeg_header,
    resize_uint8,
    use_gpu_decode,
)
from cambatch.data.inputs import RESAMPLING, Preprocess
from cambatch.data.preprocess import Failure, ImageFiles
from cambatch.errors import UsageError
from cambatch.sources.discover import ImageSource

CPU = torch.device("cpu")


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_jpeg_headers_tell_baseline_from_the_rest():
    photo = Image.open(SAMPLES / "coffee.png").convert("RGB")
    baseline = read_jpeg_header(_jpeg(photo))
    assert (baseline.width, baseline.height, baseline.components, baseline.precision) == (600, 400, 3, 8)
    assert gpu_decodable(baseline)
    assert gpu_decodable(read_jpeg_header(_jpeg(photo.convert("L"))))
    assert not gpu_decodable(read_jpeg_header(_jpeg(photo, progressive=True)))
    assert not gpu_decodable(read_jpeg_header(_jpeg(photo.convert("CMYK"))))
    assert read_jpeg_header((SAMPLES / "coffee.png").read_bytes()) is None
    assert read_jpeg_header(b"\xff\xd8\xff") is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pil_exif_transpose(orientation):
    pixels = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))))
    got = orient(torch.from_numpy(pixels).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("interpolation, other", [("bilinear", "bicubic"), ("bicubic", "bilinear")])
def test_resize_uint8_is_close_to_pil(interpolation, other):
    photo = Image.open(SAMPLES / "chelsea.png").convert("RGB")
    picture = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)
    ours = resize_uint8(picture, (224, 224), interpolation).permute(1, 2, 0).numpy().astype(int)
    pil = {name: np.asarray(photo.resize((224, 224), RESAMPLING[name])).astype(int) for name in (interpolation, other)}
    assert np.abs(ours - pil[interpolation]).mean() < 2.0
    # closer to PIL's own filter than to the other one: the model's interpolation reaches the GPU path
    assert np.abs(ours - pil[interpolation]).mean() < np.abs(ours - pil[other]).mean()


@pytest.fixture
def jpeg_folder(tmp_path):
    photo = Image.open(SAMPLES / "chelsea.png").convert("RGB")
    (tmp_path / "baseline.jpg").write_bytes(_jpeg(photo))
    (tmp_path / "progressive.jpg").write_bytes(_jpeg(photo, progressive=True))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate: displayed portrait
    (tmp_path / "rotated.jpg").write_bytes(_jpeg(photo, exif=exif))
    good = _jpeg(photo)
    (tmp_path / "broken.jpg").write_bytes(good[: len(good) // 3])  # a good header, a third of the data
    (tmp_path / "coffee.png").write_bytes((SAMPLES / "coffee.png").read_bytes())
    names = ["baseline.jpg", "progressive.jpg", "rotated.jpg", "broken.jpg", "coffee.png"]
    return [ImageSource(tmp_path / n, tmp_path, n) for n in names]


def test_workers_hand_baseline_jpegs_over_undecoded(jpeg_folder):
    files = EncodedImageFiles(jpeg_folder, Preprocess(image_size=64, overlays=True, max_side=128))
    items = [files[i] for i in range(len(jpeg_folder))]
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["EncodedSample", "Sample", "EncodedSample", "EncodedSample", "Sample"]
    assert (items[2].width, items[2].height, items[2].orientation) == (300, 451, 6)
    batch = collate_encoded(items)
    assert isinstance(batch, EncodedBatch) and len(batch.encoded) == 3 and batch.pixels.shape == (2, 3, 64, 64)


def _fake_gpu():
    """A stand-in for decode_jpeg(device=...) that, like nvJPEG's batched call, fails whole
    when one image of the batch is bad (here: a file cut short, with no end-of-image marker)."""
    calls = []

    def decode(data, device):
        calls.append(len(data))
        if any(bytes(d[-2:].numpy()) != b"\xff\xd9" for d in data):
            raise RuntimeError("nvjpeg: bad data")
        return decode_jpegs(data, device)

    return decode, calls


@pytest.mark.parametrize("interpolation, other", [("bilinear", "bicubic"), ("bicubic", "bilinear")])
def test_gpu_decoder_falls_back_per_image_and_keeps_order(jpeg_folder, interpolation, other):
    prep = Preprocess(image_size=64, interpolation=interpolation, overlays=True, max_side=128)
    items = [EncodedImageFiles(jpeg_folder, prep)[i] for i in range(len(jpeg_folder))]
    decode, calls = _fake_gpu()
    decoder = GpuDecoder(prep, CPU, decode_fn=decode)
    batch = decoder(collate_encoded(items))
    assert calls == [3, 1, 1, 1]  # the batch fails, then one at a time
    assert decoder.gpu_images == 2 and decoder.cpu_fallbacks == 1
    assert [f.index for f in batch.failures] == [3] and "corrupt or truncated" in batch.failures[0].error
    assert [s.index for s in batch.samples] == [1, 4, 0, 2]
    assert batch.pixels.shape == (4, 3, 64, 64) and batch.pixels.dtype == torch.uint8
    rotated = batch.samples[3]
    assert rotated.photo.shape == (128, 85, 3)  # portrait, longest side capped at 128
    # the GPU path's input of the rotated photo agrees with the CPU path's
    cpu = ImageFiles(jpeg_folder, prep)[2]
    assert (batch.pixels[3].int() - cpu.pixels.int()).abs().float().mean() < 3.0
    # the model input is resized with the model's interpolation (baseline.jpg, decoded on the "GPU")
    from torchvision.io import decode_jpeg

    full = decode_jpeg(torch.frombuffer(bytearray(jpeg_folder[0].path.read_bytes()), dtype=torch.uint8))
    assert torch.equal(batch.pixels[2], resize_uint8(full, (64, 64), interpolation))
    assert not torch.equal(batch.pixels[2], resize_uint8(full, (64, 64), other))


def test_gpu_decode_modes_on_a_cpu():
    assert use_gpu_decode("auto", CPU) is False
    assert use_gpu_decode("off", CPU) is False
    with pytest.raises(UsageError, match="needs a CUDA device"):
        use_gpu_decode("on", CPU)


def test_plain_batches_pass_through_the_decoder(jpeg_folder):
    from cambatch.data.preprocess import Batch

    batch = Batch(torch.zeros(0, dtype=torch.uint8), [], [Failure(0, "x")])
    assert GpuDecoder(Preprocess(image_size=64), CPU)(batch) is batch


def test_headers_behind_other_segments_and_fill_bytes_are_found():
    data = _jpeg(Image.new("RGB", (33, 17)), exif=Image.Exif().tobytes())
    assert data.index(b"\xff\xc0") > 20  # APP segments (JFIF, EXIF) come before the frame header
    header = read_jpeg_header(data)
    assert (header.width, header.height, header.sof) == (33, 17, 0xC0)
    filled = data[:2] + b"\xff\xff" + data[2:]  # fill bytes between markers are allowed
    assert read_jpeg_header(filled).width == 33
    assert read_jpeg_header(data[:12]) is None  # the frame header out of reach


def test_resize_uint8_keeps_a_picture_already_at_size():
    picture = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    assert resize_uint8(picture, (7, 5)) is picture
    out = resize_uint8(picture, (14, 10))
    assert out.shape == (3, 10, 14) and out.dtype == torch.uint8


def test_decoded_batches_finish_every_batch_through_the_decoder(jpeg_folder):
    prep = Preprocess(image_size=32)
    loader = torch.utils.data.DataLoader(
        EncodedImageFiles(jpeg_folder, prep), batch_size=2, collate_fn=collate_encoded, num_workers=0
    )
    decode, calls = _fake_gpu()
    batches = DecodedBatches(loader, GpuDecoder(prep, CPU, decode_fn=decode))
    assert len(batches) == 3 and batches.batch_size == 2
    seen = list(batches)
    assert all(not getattr(b, "encoded", None) and b.pixels.shape[0] == len(b.samples) for b in seen)  # complete
    assert sorted(s.index for b in seen for s in b.samples) == [0, 1, 2, 4]
    assert [f.index for b in seen for f in b.failures] == [3]


def test_decode_jpegs_is_torchvisions_decoder_and_matches_pil(jpeg_folder):
    """The one call into torchvision's (deprecated) image decoding: it must still decode, as PIL does."""
    path = jpeg_folder[0].path
    picture = decode_jpegs([torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)], CPU)[0]
    reference = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape == (3, *reference.shape[:2]) and picture.dtype == torch.uint8
    assert np.abs(picture.permute(1, 2, 0).numpy().astype(int) - reference).mean() < 2  # IDCTs differ by rounding


def test_a_decompression_bomb_is_left_to_the_cpu_path_and_refused_there(jpeg_folder, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every test JPEG is past it
    prep = Preprocess(image_size=64)
    item = EncodedImageFiles(jpeg_folder[:1], prep)[0]
    assert isinstance(item, Failure) and "decompression-bomb guard" in item.error
