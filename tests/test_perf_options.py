"""The speed options: precision, channels_last, thread/worker defaults, GPU JPEG decoding (its logic, on a CPU)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from PIL import Image, ImageOps

from cambatch.data.gpu_decode import (
    EncodedBatch,
    EncodedImageFiles,
    GpuDecoder,
    collate_encoded,
    gpu_decodable,
    orient,
    read_jpeg_header,
    resize_uint8,
    use_gpu_decode,
)
from cambatch.data.preprocess import Failure, ImageFiles, Preprocess
from cambatch.errors import UsageError
from cambatch.methods.cam import class_activation_maps
from cambatch.model.accel import Execution, check_precision, prepare_network
from cambatch.model.build import load_model
from cambatch.runner.tuning import plan, torch_threads
from cambatch.sources.discover import ImageSource

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return load_model("mobilenet_v2", "none")


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


# ---------------------------------------------------------------- precision, memory format


def test_precision_checks():
    check_precision("fp32", CPU)
    check_precision("bf16", CPU)
    with pytest.raises(UsageError, match="fp16 .*needs a GPU"):
        check_precision("fp16", CPU)


def test_channels_last_keeps_the_cam_identity(small_model):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = class_activation_maps(small_model, images, 3)
        prepare_network(small_model.network, CPU)
        after = class_activation_maps(small_model, images, 3)
        bias = small_model.head.bias[after.class_index]
    assert small_model.network.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(before.class_index, after.class_index)
    torch.testing.assert_close(after.maps, before.maps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after.maps.mean((2, 3)) + bias, after.logit, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_hands_float32_features_to_the_head():
    torch.manual_seed(0)
    model = load_model("resnet18", "none")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = class_activation_maps(model, images, 1)
        fast = class_activation_maps(model, images, 1, execution=Execution("cpu", "bf16"))
    assert fast.maps.dtype == torch.float32 and fast.logit.dtype == torch.float32
    scale = reference.maps.abs().max()
    assert (fast.maps - reference.maps).abs().max() < 0.1 * scale


def test_run_refuses_bad_speed_options_before_any_work(tmp_path):
    from cambatch.config import RunConfig
    from cambatch.runner.pipeline import run

    for options, message in (
        ({"precision": "fp64"}, "precision"),
        ({"gpu_decode": "always"}, "gpu-decode"),
        ({"threads": 0}, "threads"),
    ):
        with pytest.raises(UsageError, match=message):
            run(RunConfig.create(inputs=[SAMPLES], out=tmp_path / "out", **options))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- defaults from the machine


@pytest.mark.parametrize("cores", [1, 2, 4, 16, 64])
def test_cpu_plan_never_oversubscribes(cores):
    for overlays in (True, False):
        p = plan(CPU, overlays=overlays, cores=cores)
        assert p.threads >= 1 and p.workers >= 1 and p.batch_size >= 1 and p.writer_threads >= 1
        assert p.threads + p.workers <= max(cores, 2)


def test_plan_keeps_given_values_and_fits_threads_around_workers():
    p = plan(CPU, threads=3, workers=0, batch_size=5, cores=2)
    assert (p.threads, p.workers, p.batch_size) == (3, 0, 5)
    assert plan(CPU, workers=0, cores=4).threads == 4
    gpu = plan(torch.device("cuda"), cores=16)
    assert gpu.workers + gpu.writer_threads <= 16 and gpu.batch_size > plan(CPU, cores=16).batch_size


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------- GPU decoding: its logic, on a CPU


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


def test_resize_uint8_is_close_to_pil():
    photo = Image.open(SAMPLES / "chelsea.png").convert("RGB")
    ours = (
        resize_uint8(torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1), (224, 224)).permute(1, 2, 0).numpy()
    )
    pil = np.asarray(photo.resize((224, 224), Image.BILINEAR))
    assert np.abs(ours.astype(int) - pil.astype(int)).mean() < 2.0


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
    from torchvision.io import decode_jpeg

    calls = []

    def decode(data, mode, device):
        calls.append(len(data))
        if any(bytes(d[-2:].numpy()) != b"\xff\xd9" for d in data):
            raise RuntimeError("nvjpeg: bad data")
        return [t.to(device) for t in decode_jpeg(data, mode=mode)]

    return decode, calls


def test_gpu_decoder_falls_back_per_image_and_keeps_order(jpeg_folder):
    prep = Preprocess(image_size=64, overlays=True, max_side=128)
    items = [EncodedImageFiles(jpeg_folder, prep)[i] for i in range(len(jpeg_folder))]
    decode, calls = _fake_gpu()
    decoder = GpuDecoder(jpeg_folder, prep, CPU, decode_fn=decode)
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


def test_gpu_decode_modes_on_a_cpu():
    assert use_gpu_decode("auto", CPU) is False
    assert use_gpu_decode("off", CPU) is False
    with pytest.raises(UsageError, match="needs a CUDA device"):
        use_gpu_decode("on", CPU)


def test_plain_batches_pass_through_the_decoder(jpeg_folder):
    from cambatch.data.preprocess import Batch

    batch = Batch(torch.zeros(0, dtype=torch.uint8), [], [Failure(0, "x")])
    assert GpuDecoder(jpeg_folder, Preprocess(image_size=64), CPU)(batch) is batch
