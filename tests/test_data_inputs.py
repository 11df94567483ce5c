"""`cambatch.data.inputs`: a file's model input and overlay background as arrays, its failure as a message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cambatch.data.decode import DecodeError
from cambatch.data.inputs import Preprocess, failure_message, prepare
from cambatch.errors import UsageError


@pytest.mark.parametrize(
    "max_side, size, expected",
    [
        (0, (4000, 3000), (4000, 3000)),  # 0: the photo's own size
        (1024, (800, 600), (800, 600)),  # already under the cap
        (1024, (4000, 3000), (1024, 768)),
        (300, (400, 600), (200, 300)),  # portrait: the longest side is the height
        (1024, (4000, 40), (1024, 10)),
        (100, (5000, 10), (100, 1)),  # never 0 pixels
    ],
)
def test_overlay_size_caps_the_longest_side(max_side, size, expected):
    assert Preprocess(image_size=224, overlays=True, max_side=max_side).overlay_size(*size) == expected


def test_the_model_decode_size_follows_the_input_size_alone_and_the_background_the_overlay():
    without = Preprocess(image_size=224)
    with_overlays = Preprocess(image_size=224, overlays=True, max_side=1024)
    for prep in (without, with_overlays, Preprocess(image_size=224, overlays=True, max_side=0)):
        assert prep.decode_size(4000, 3000) == (224, 224)  # only the model input, whatever the overlay options
        assert prep.decode_size(100, 80) == (100, 80)  # never more than the photo
    assert with_overlays.overlay_size(4000, 3000) == (1024, 768)
    assert with_overlays.overlay_size(4000, 200) == (1024, 51)


def _png(pixels: np.ndarray) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_prepare_squashes_the_whole_image_channels_first_and_keeps_the_background_upright():
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)
    prepared = prepare(_png(pixels), Preprocess(image_size=32, overlays=True, max_side=50))
    assert prepared.pixels.shape == (3, 32, 32) and prepared.pixels.dtype == np.uint8
    assert prepared.pixels.flags.c_contiguous
    assert prepared.pixels[0, :, :10].mean() > 250 and prepared.pixels[0, :, -10:].mean() < 5  # red stays left
    assert prepared.photo.shape == (20, 50, 3) and prepared.photo.dtype == np.uint8
    assert (prepared.width, prepared.height, prepared.orientation) == (100, 40, 1)
    assert prepare(_png(pixels), Preprocess(image_size=32)).photo is None


@pytest.mark.parametrize("interpolation, resample", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_prepare_resizes_with_the_models_own_filter(interpolation, resample):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize((24, 24), resample)).transpose(2, 0, 1)
    got = prepare(_png(pixels), Preprocess(image_size=24, interpolation=interpolation)).pixels
    np.testing.assert_array_equal(got, expected)


def test_an_unknown_filter_is_refused_in_words():
    with pytest.raises(UsageError, match="'nearest' resizing; cambatch resizes with bilinear or bicubic"):
        Preprocess(image_size=24, interpolation="nearest")


def test_a_failure_message_is_a_decode_errors_words_else_its_type_and_message():
    with pytest.raises(DecodeError) as bad:
        prepare(b"", Preprocess(image_size=24))
    assert failure_message(bad.value) == "empty file (0 bytes)"
    assert failure_message(FileNotFoundError("no such file: a.jpg")) == "FileNotFoundError: no such file: a.jpg"
