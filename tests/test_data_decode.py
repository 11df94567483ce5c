"""`cambatch.data.decode`: EXIF orientation, every colour mode to RGB, reduced-scale JPEGs, broken files as
messages for people."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLES
from PIL import Image

from cambatch.data.decode import DecodeError, decode, to_rgb


def test_decode_reports_displayed_size_and_uses_draft(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(big)
    decoded = decode(big, min_size=lambda w, h: (500, 375))
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.image.size == (500, 375)  # decoded at 1/8 scale, never at full size


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("L", (4, 4), 200), (200, 200, 200)),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), (255, 255, 255)),  # transparent -> white
        (Image.new("RGBA", (4, 4), (255, 0, 0, 255)), (255, 0, 0)),
        (Image.new("LA", (4, 4), (0, 255)), (0, 0, 0)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)), (255, 255, 255)),  # 16-bit white
        (Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)), (128, 128, 128)),  # 16-bit mid-grey
    ],
)
def test_every_mode_becomes_correct_rgb(image, expected):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((1, 1)) == expected


def test_palette_with_transparency_and_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(0, 0, 255), (255, 0, 0)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert decode(tmp_path / "anim.gif").image.getpixel((2, 2)) == (0, 0, 255)
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 255, 0] * 256)
    palette.save(tmp_path / "p.png", transparency=0)
    assert decode(tmp_path / "p.png").image.getpixel((2, 2)) == (255, 255, 255)


def test_decode_error_messages_are_for_people(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnonsense")
    with pytest.raises(DecodeError, match="not a readable image|corrupt"):
        decode(tmp_path / "bad.png")


def left_red_right_blue(path, orientation: int) -> None:
    """A 60 x 20 stored picture, red in its left half, blue in its right, with an EXIF orientation."""
    stored = Image.new("RGB", (60, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 30, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif)


@pytest.mark.parametrize(
    "orientation, size, red_at, blue_at",
    [
        (1, (60, 20), (5, 10), (55, 10)),
        (3, (60, 20), (55, 10), (5, 10)),  # turned 180 degrees
        (6, (20, 60), (10, 5), (10, 55)),  # turned 90 degrees clockwise: the left half is on top
        (8, (20, 60), (10, 55), (10, 5)),  # counter-clockwise: the left half at the bottom
    ],
)
def test_exif_orientation_is_applied_and_the_displayed_size_reported(tmp_path, orientation, size, red_at, blue_at):
    left_red_right_blue(tmp_path / "p.jpg", orientation)
    decoded = decode(tmp_path / "p.jpg")
    assert (decoded.width, decoded.height) == size and decoded.image.size == size
    r, g, b = decoded.image.getpixel(red_at)
    assert r > 200 and b < 60
    r, g, b = decoded.image.getpixel(blue_at)
    assert b > 200 and r < 60


def test_a_rotated_jpeg_is_drafted_for_its_displayed_size(tmp_path):
    stored = Image.new("RGB", (4000, 1000), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "tall.jpg", exif=exif)
    asked = []

    def min_size(width, height):
        asked.append((width, height))
        return 125, 500  # displayed: a quarter of 1000 x 4000

    decoded = decode(tmp_path / "tall.jpg", min_size=min_size)
    assert asked == [(1000, 4000)] and (decoded.width, decoded.height) == (1000, 4000)
    assert decoded.image.size == (125, 500)  # 1/8 scale, then upright: at least what was asked


@pytest.mark.parametrize(
    "values, mode, expected",
    [
        (np.array([[0.25, 0.5], [0.75, 0.5]], np.float32), "F", [64, 128, 191, 128]),  # float in [0, 1]: x 255
        (np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32), "F", [0, 64, 128, 255]),  # other floats: min-max
        (np.array([[0, 257], [65535, 32896]], np.int32), "I", [0, 1, 255, 128]),  # 32-bit holding 16-bit
    ],
)
def test_wide_gray_is_rescaled_to_8_bits(values, mode, expected):
    image = Image.fromarray(values, mode=mode) if mode == "F" else Image.fromarray(values)
    assert image.mode == mode
    rgb = to_rgb(image)
    assert [rgb.getpixel((x, y))[0] for y in range(2) for x in range(2)] == expected
    assert rgb.getpixel((1, 1))[0] == rgb.getpixel((1, 1))[1] == rgb.getpixel((1, 1))[2]


def test_broken_and_huge_files_become_decode_errors(tmp_path, monkeypatch):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DecodeError, match=r"^empty file \(0 bytes\)$"):
        decode(tmp_path / "empty.jpg")
    whole = (SAMPLES / "rocket.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(DecodeError, match="corrupt or truncated image data"):
        decode(tmp_path / "cut.jpg")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(DecodeError, match="not a readable image: unknown format or corrupt header"):
        decode(tmp_path / "text.png")
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 90,000 pixels: past the warning threshold
    with pytest.raises(DecodeError, match="image too large \\(decompression-bomb guard\\)"):
        decode(tmp_path / "big.png")
