"""Decoding and discovery: EXIF orientation, colour modes, broken files as error rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES
from PIL import Image

from cambatch.config import RunConfig
from cambatch.data.decode import DecodeError, decode, to_rgb
from cambatch.runner.pipeline import run
from cambatch.sources.discover import discover


def cat_on_the_left(path, orientation):
    """A landscape file (stored pixels) with the cat in its left half and plain grey on the right."""
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((300, 200))
    stored = Image.new("RGB", (600, 200), (128, 128, 128))
    stored.paste(cat, (0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif)


def test_exif_rotation_gives_a_portrait_overlay_that_lines_up(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cat_on_the_left(photos / "rotated.jpg", orientation=6)  # displayed turned 90 deg clockwise: left -> top
    out = tmp_path / "out"
    result = run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=1))
    row = pd.read_parquet(out / "report").iloc[0]
    assert (row.width, row.height) == (200, 600)
    assert row.class_name in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
    assert row.centroid_y < 0.5 and row.peak_y < 0.5  # the cat is at the top of the upright photo
    overlay = np.asarray(Image.open(out / row.overlay_path).convert("RGB"), dtype=np.float32)
    assert overlay.shape == (600, 200, 3)
    # Jet makes heat red and cold blue; the upright photo's hot half is its top.
    redness = overlay[..., 0] - overlay[..., 2]
    assert redness[:300].mean() > redness[300:].mean() + 20
    assert result.ok == 1


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


def test_broken_files_are_one_error_row_each_and_the_rest_succeed(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ["coffee.png", "chelsea.png"]:
        (photos / name).write_bytes((SAMPLES / name).read_bytes())
    whole = (SAMPLES / "rocket.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.JPG").write_text("this is text, not a picture")
    (photos / "README.txt").write_text("not an image extension: skipped silently")
    out = tmp_path / "out"
    result = run(RunConfig.create(inputs=[photos], out=out, workers=1, batch_size=2))
    df = pd.read_parquet(out / "report")
    assert result.ok == 2 and result.errors == 3
    errors = df[df.status == "error"].set_index("path")
    assert sorted(errors.index) == ["empty.png", "notes.JPG", "truncated.jpg"]
    assert errors.loc["empty.png", "error"] == "empty file (0 bytes)"
    assert "not a readable image" in errors.loc["notes.JPG", "error"]
    assert "truncated" in errors.loc["truncated.jpg", "error"]
    assert errors.class_name.isna().all() and errors.overlay_path.isna().all()
    ok = df[df.status == "ok"]
    assert sorted(ok.path.unique()) == ["chelsea.png", "coffee.png"] and len(ok) == 6
    assert ok[ok["rank"] == 1].set_index("path").loc["coffee.png", "class_name"] == "espresso"


def test_discover_is_sorted_case_blind_and_skips_the_output_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.PNG").write_bytes(b"x")
    (tmp_path / "b" / "c.jpeg").write_bytes(b"x")
    (tmp_path / "b" / "d.txt").write_bytes(b"x")
    (tmp_path / "cams" / "overlays").mkdir(parents=True)
    (tmp_path / "cams" / "overlays" / "old.jpg").write_bytes(b"x")
    found = discover([tmp_path], exclude=tmp_path / "cams")
    assert [s.rel for s in found] == ["a.PNG", "b/c.jpeg"]
    assert all(s.input_root == tmp_path for s in found)
    single = discover([tmp_path / "b" / "c.jpeg"])
    assert single[0].rel == "c.jpeg" and single[0].input_root == tmp_path / "b"


def test_decode_error_messages_are_for_people(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnonsense")
    with pytest.raises(DecodeError, match="not a readable image|corrupt"):
        decode(tmp_path / "bad.png")
