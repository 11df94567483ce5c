"""`cambatch.render.overlay`: the map upsampled to the photo's size, coloured and blended over it, against the PIL
pipeline (BILINEAR resize, palette, `Image.blend`) that drew every overlay before."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cambatch.render.colormaps import COLORMAPS, palette
from cambatch.render.overlay import JPEG_QUALITY, overlay, save_jpeg


def photo(width: int = 37, height: int = 23) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_saved_overlay_is_the_jpeg_pil_writes_colours_the_right_way_round(tmp_path):
    """OpenCV encodes in BGR: a photo handed over unconverted would come back with red and blue swapped."""
    picture = np.zeros((48, 64, 3), np.uint8)
    picture[:, :32, 0] = 230  # red left half
    picture[:, 32:] = np.asarray(Image.open("sample_images/chelsea.png").convert("RGB"))[:48, :32]
    save_jpeg(picture, tmp_path / "o.jpg")
    Image.fromarray(picture).save(tmp_path / "pil.jpg", quality=JPEG_QUALITY)
    assert (tmp_path / "o.jpg").read_bytes() == (tmp_path / "pil.jpg").read_bytes()
    red = np.asarray(Image.open(tmp_path / "o.jpg"))[8:40, 4:24].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 30 and red[2] < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jpg", "pil.jpg"]


def test_a_save_that_fails_leaves_neither_a_torn_file_nor_a_temp(tmp_path, monkeypatch):
    write_bytes = Path.write_bytes

    def full_disk(self, data):
        write_bytes(self, bytes(data)[:100])  # what a full disk leaves: the start of the file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_jpeg(photo(), tmp_path / "o.jpg")
    assert list(tmp_path.iterdir()) == []


def test_overlay_has_the_photos_size_and_mode():
    picture = photo(37, 23)
    result = overlay(picture, np.zeros((7, 7), np.uint8), colormap="jet", alpha=0.5)
    assert result.shape == (23, 37, 3) and result.dtype == np.uint8


def test_a_read_only_photo_is_drawn_on_and_left_as_it_was():
    picture = np.asarray(Image.fromarray(photo()))  # PIL's array view: read-only
    before = picture.copy()
    overlay(picture, np.full((7, 7), 255, np.uint8), colormap="jet", alpha=0.5)
    np.testing.assert_array_equal(picture, before)


def test_alpha_zero_gives_the_photo_back():
    picture = photo()
    heat = np.arange(49, dtype=np.uint8).reshape(7, 7) * 5
    np.testing.assert_array_equal(overlay(picture, heat, colormap="jet", alpha=0.0), picture)


@pytest.mark.parametrize("colormap", ["jet", "viridis"])
def test_alpha_one_gives_the_colormap_alone(colormap):
    flat = palette(colormap)
    hot = overlay(photo(), np.full((7, 7), 255, np.uint8), colormap=colormap, alpha=1.0)
    cold = overlay(photo(), np.zeros((7, 7), np.uint8), colormap=colormap, alpha=1.0)
    assert set(map(tuple, np.asarray(hot).reshape(-1, 3).tolist())) == {tuple(flat[-3:])}
    assert set(map(tuple, np.asarray(cold).reshape(-1, 3).tolist())) == {tuple(flat[:3])}


def test_half_alpha_is_the_mean_of_photo_and_heat():
    picture = photo()
    blended = np.asarray(overlay(picture, np.full((7, 7), 255, np.uint8), colormap="jet", alpha=0.5), dtype=int)
    expected = (np.asarray(picture, dtype=int) + np.array(palette("jet")[-3:])) / 2
    assert np.abs(blended - expected).max() <= 1


def test_the_map_is_laid_over_the_photo_the_right_way_round():
    # A 2 x 4 map (rows x columns), hot in its left column only, over a wide photo.
    heat = np.zeros((2, 4), np.uint8)
    heat[:, 0] = 255
    result = overlay(np.zeros((40, 80, 3), np.uint8), heat, colormap="jet", alpha=1.0).astype(int)
    redness = result[..., 0] - result[..., 2]
    assert redness[:, :10].mean() > 50 and redness[:, -20:].mean() < 0  # hot left, cold right
    np.testing.assert_array_equal(result[0], result[-1])  # the same down every column


@pytest.mark.parametrize("colormap", COLORMAPS)
def test_the_blend_is_pils(colormap):
    """A map at the photo's own size is not resampled, so only the blend can differ: none at alphas whose
    float sums are exact (0.5, the default, among them), one level on a few pixels at the others."""
    rng = np.random.default_rng(3)
    picture, heat = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), rng.integers(0, 256, (60, 80), np.uint8)
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0, 0.3, 0.6):
        difference = overlay(picture, heat, colormap=colormap, alpha=alpha).astype(int) - pil_overlay(
            picture, heat, colormap=colormap, alpha=alpha
        )
        if alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
            assert not difference.any(), alpha
        assert np.abs(difference).max() <= 1 and np.count_nonzero(difference) / difference.size < 0.05, alpha


# Against the PIL pipeline that drew every overlay before OpenCV upsampled the map. Maps are random (the
# hardest case: every pixel of the upsampled map is a fresh rounding); shapes include single rows and
# columns, odd sizes, large and small upscale factors, an axis left at its size, and maps larger than their
# photo in one axis or both (downscaling: PIL's resize is kept there, so nothing may change).
MAP_SHAPES = [(7, 7), (1, 9), (9, 1), (1, 1), (2, 2), (3, 5), (13, 11), (64, 64)]  # (rows, columns)
PHOTO_SIZES = [(735, 551), (1024, 683), (224, 224), (101, 7), (5, 300), (64, 64), (63, 64), (37, 23), (1, 1)]
CASES = [(shape, size) for shape in MAP_SHAPES for size in PHOTO_SIZES]


def pil_overlay(picture: np.ndarray, heat: np.ndarray, *, colormap: str, alpha: float) -> np.ndarray:
    """The oracle: the overlay as PIL alone drew it (BILINEAR resize, palette, blend)."""
    background = Image.fromarray(picture)
    upsampled = Image.fromarray(heat, mode="L").resize(background.size, Image.BILINEAR)
    upsampled.putpalette(palette(colormap))
    return np.asarray(Image.blend(background, upsampled.convert("RGB"), alpha))


def random_case(shape: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([*shape, *size])
    return photo(*size), rng.integers(0, 256, shape, dtype=np.uint8)


def palette_index(picture: np.ndarray, colormap: str) -> np.ndarray:
    """The palette entry each pixel of an alpha = 1 overlay shows (jet, the default: its 256 colours are distinct)."""
    colours = np.asarray(palette(colormap), dtype=np.int64).reshape(256, 3) @ [65536, 256, 1]
    assert len(np.unique(colours)) == 256
    packed = np.asarray(picture, dtype=np.int64) @ [65536, 256, 1]
    index = np.searchsorted(np.sort(colours), packed)
    return np.argsort(colours)[np.minimum(index, 255)]


def shown_indices(shape: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The palette entries (the upsampled map's levels) an alpha = 1 overlay shows: cambatch's, then PIL's."""
    picture, heat = random_case(shape, size)
    got = palette_index(overlay(picture, heat, colormap="jet", alpha=1.0), "jet")
    return got, palette_index(pil_overlay(picture, heat, colormap="jet", alpha=1.0), "jet")


def shrinks(shape: tuple[int, int], size: tuple[int, int]) -> bool:
    return shape[0] > size[1] or shape[1] > size[0]


@pytest.mark.parametrize(("shape", "size"), CASES, ids=[f"{h}x{w}-to-{x}x{y}" for (h, w), (x, y) in CASES])
def test_the_upsampled_map_is_pils_to_one_grey_level(shape, size):
    got, want = shown_indices(shape, size)
    if shrinks(shape, size):
        np.testing.assert_array_equal(got, want)  # PIL's own resize
    else:
        assert np.abs(got - want).max() <= 1


def test_the_upsampled_map_rarely_differs_from_pils_and_leans_to_neither_side():
    """Only PIL's tie-breaks differ: over every pixel of every upsampling case, 0.06 % differ and the mean
    difference is 0.0004 level. (OpenCV's uint8 INTER_LINEAR, which truncates: 14 %, and 0.10 level darker.)"""
    differences = [np.subtract(*shown_indices(shape, size)) for shape, size in CASES if not shrinks(shape, size)]
    every = np.concatenate([d.reshape(-1) for d in differences])
    assert np.count_nonzero(every) / every.size < 0.01
    assert abs(every.mean()) < 0.01


@pytest.mark.parametrize("colormap", COLORMAPS)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_the_overlay_is_pils_to_one_palette_step_times_alpha(colormap, alpha):
    """One grey level of the map is one palette entry, so a pixel may move by alpha x the palette's largest
    step between neighbours, rounded up (jet at 0.5: 3 levels; turbo at 1.0: 13), and by nothing more."""
    step = np.abs(np.diff(np.asarray(palette(colormap), dtype=int).reshape(256, 3), axis=0)).max()
    worst = 0
    for shape, size in CASES:
        picture, heat = random_case(shape, size)
        got = np.asarray(overlay(picture, heat, colormap=colormap, alpha=alpha), dtype=int)
        want = np.asarray(pil_overlay(picture, heat, colormap=colormap, alpha=alpha), dtype=int)
        worst = max(worst, int(np.abs(got - want).max()))
    assert worst <= math.ceil(alpha * step)
