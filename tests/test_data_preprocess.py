"""`cambatch.data.preprocess`: model inputs and overlay backgrounds, failures carried as values, batches."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cambatch.data.inputs import Preprocess
from cambatch.data.preprocess import Batch, Failure, ImageFiles, Sample, collate
from cambatch.sources.discover import ImageSource


def test_a_jpeg_gives_the_model_the_same_pixels_with_and_without_overlays_and_a_full_size_background(tmp_path):
    photo = Image.effect_mandelbrot((2400, 1800), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    photo.save(tmp_path / "big.jpg", quality=90)
    files = [
        ImageFiles([source(tmp_path, "big.jpg")], prep)[0]
        for prep in (
            Preprocess(image_size=224),
            Preprocess(image_size=224, overlays=True, max_side=1024),
            Preprocess(image_size=224, overlays=True, max_side=300),
            Preprocess(image_size=224, overlays=True, max_side=0),
        )
    ]
    for sample in files[1:]:
        assert torch.equal(sample.pixels, files[0].pixels)
    assert [tuple(s.photo.shape) for s in files[1:]] == [(768, 1024, 3), (225, 300, 3), (1800, 2400, 3)]


def source(tmp_path, name: str) -> ImageSource:
    return ImageSource(tmp_path / name, tmp_path, name)


def test_image_files_give_inputs_and_overlay_backgrounds(tmp_path):
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    sample = ImageFiles([source(tmp_path, "wide.png")], Preprocess(image_size=32, overlays=True, max_side=50))[0]
    assert isinstance(sample, Sample) and sample.index == 0
    assert sample.pixels.shape == (3, 32, 32) and sample.pixels.dtype == torch.uint8  # the whole image, squashed
    assert sample.pixels[0, :, :10].float().mean() > 250 and sample.pixels[0, :, -10:].float().mean() < 5
    assert sample.photo.shape == (20, 50, 3) and sample.photo.dtype == torch.uint8  # [H, W, 3], capped
    assert (sample.width, sample.height) == (100, 40)
    no_overlay = ImageFiles([source(tmp_path, "wide.png")], Preprocess(image_size=32))[0]
    assert no_overlay.photo is None


def test_a_bad_file_becomes_a_failure_never_an_exception(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("no picture")
    files = ImageFiles(
        [source(tmp_path, "empty.jpg"), source(tmp_path, "text.png"), source(tmp_path, "missing.png")],
        Preprocess(image_size=32),
    )
    failures = [files[i] for i in range(3)]
    assert all(isinstance(f, Failure) for f in failures) and [f.index for f in failures] == [0, 1, 2]
    assert failures[0].error == "empty file (0 bytes)"
    assert "not a readable image" in failures[1].error
    assert failures[2].error.startswith("FileNotFoundError: ")  # any other failure: its type and message


def test_collate_stacks_samples_and_carries_failures():
    samples = [Sample(i, torch.full((3, 4, 4), i, dtype=torch.uint8), None, 4, 4) for i in (0, 2)]
    batch = collate([samples[0], Failure(1, "bad"), samples[1]])
    assert isinstance(batch, Batch) and batch.pixels.shape == (2, 3, 4, 4)
    assert [s.index for s in batch.samples] == [0, 2] and batch.pixels[1].unique().tolist() == [2]
    assert [f.index for f in batch.failures] == [1]
    empty = collate([Failure(0, "bad")])
    assert empty.pixels.shape == (0,) and empty.pixels.dtype == torch.uint8 and not empty.samples


def test_collate_drops_each_samples_pixels_once_stacked():
    batch = collate([Sample(i, torch.full((3, 4, 4), i, dtype=torch.uint8), None, 4, 4) for i in (0, 1)])
    assert [s.pixels for s in batch.samples] == [None, None] and batch.pixels.shape == (2, 3, 4, 4)


def test_a_batch_crosses_processes_as_two_shared_tensors(monkeypatch):
    """As a loader worker sends it (torch's reductions, file-descriptor sharing): the pixels and one buffer of
    every photo, each a socket handshake on the receiving side; the photos come back as views of that buffer."""
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing.reductions as reductions

    rng = np.random.default_rng(0)
    photos = [torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in ((5, 7, 3), (3, 2, 3))]
    items = [Sample(0, torch.zeros(3, 4, 4, dtype=torch.uint8), photos[0], 7, 5), Failure(1, "bad")]
    items += [Sample(2, torch.ones(3, 4, 4, dtype=torch.uint8), None, 4, 4)]
    items += [Sample(3, torch.full((3, 4, 4), 3, dtype=torch.uint8), photos[1], 2, 3)]
    batch = collate(items)
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(batch)
    rebuilt = []
    rebuild = reductions.rebuild_storage_fd
    monkeypatch.setattr(reductions, "rebuild_storage_fd", lambda *a: rebuilt.append(a) or rebuild(*a))
    back = pickle.loads(buffer.getvalue())
    assert torch.multiprocessing.get_sharing_strategy() != "file_descriptor" or len(rebuilt) == 2
    assert torch.equal(back.pixels, batch.pixels) and [f.index for f in back.failures] == [1]
    assert [s.index for s in back.samples] == [0, 2, 3] and back.samples[1].photo is None
    assert torch.equal(back.samples[0].photo, photos[0]) and torch.equal(back.samples[2].photo, photos[1])
    storage = back.samples[0].photo.untyped_storage().data_ptr()
    assert back.samples[2].photo.untyped_storage().data_ptr() == storage
    assert batch.samples[0].photo is not None  # the sender's batch is left whole
