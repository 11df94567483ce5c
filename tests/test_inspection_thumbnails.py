"""`cambatch.inspection.thumbnails`: small JPEG copies for the gallery, made only when stale."""

from __future__ import annotations

import os

from PIL import Image

from cambatch.inspection.thumbnails import ThumbJob, make_thumbnails


def photo_with_orientation(path, orientation: int) -> None:
    picture = Image.new("RGB", (400, 100), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 200, 100))  # red left half
    exif = Image.Exif()
    exif[0x0112] = orientation
    picture.save(path, exif=exif)


def test_thumbnails_fit_their_side_and_photos_are_upright(tmp_path):
    Image.new("RGB", (640, 480), (10, 200, 30)).save(tmp_path / "overlay.jpg")
    photo_with_orientation(tmp_path / "photo.jpg", 6)  # displayed 100 x 400, the red half on top
    jobs = [
        ThumbJob(tmp_path / "overlay.jpg", tmp_path / "g" / "thumbs" / "a.jpg", 64, photo=False),
        ThumbJob(tmp_path / "photo.jpg", tmp_path / "g" / "photos" / "b.jpg", 80, photo=True),
        ThumbJob(tmp_path / "overlay.jpg", tmp_path / "g" / "big.jpg", 2000, photo=False),  # never enlarged
    ]
    stats = make_thumbnails(jobs, workers=2)
    assert (stats.written, stats.fresh, stats.failed) == (3, 0, {})
    with Image.open(jobs[0].target) as thumb:
        assert thumb.size == (64, 48) and thumb.format == "JPEG"
    with Image.open(jobs[1].target) as thumb:
        assert thumb.size == (20, 80)
        top, bottom = thumb.convert("RGB").getpixel((10, 10)), thumb.convert("RGB").getpixel((10, 70))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]
    with Image.open(jobs[2].target) as thumb:
        assert thumb.size == (640, 480)
    assert not [p for p in (tmp_path / "g").rglob(".*")]  # written through temporary names, none left


def test_fresh_thumbnails_are_kept_and_stale_ones_remade(tmp_path):
    Image.new("RGB", (100, 100), (200, 0, 0)).save(tmp_path / "a.jpg")
    Image.new("RGB", (100, 100), (0, 200, 0)).save(tmp_path / "b.jpg")
    jobs = [ThumbJob(tmp_path / n, tmp_path / "t" / n, 32, photo=False) for n in ("a.jpg", "b.jpg")]
    assert make_thumbnails(jobs).written == 2
    again = make_thumbnails(jobs)
    assert (again.written, again.fresh) == (0, 2)
    later = jobs[1].target.stat().st_mtime + 10
    Image.new("RGB", (100, 100), (0, 0, 200)).save(tmp_path / "b.jpg")
    os.utime(tmp_path / "b.jpg", (later, later))  # the source changed after its thumbnail
    remade = make_thumbnails(jobs)
    assert (remade.written, remade.fresh) == (1, 1)
    with Image.open(jobs[1].target) as thumb:
        assert thumb.convert("RGB").getpixel((16, 16))[2] > 150  # the new picture


def test_an_unreadable_source_is_a_failure_not_a_crash(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (50, 50)).save(tmp_path / "ok.png")
    jobs = [
        ThumbJob(tmp_path / "broken.jpg", tmp_path / "t" / "broken.jpg", 32, photo=True),
        ThumbJob(tmp_path / "missing.jpg", tmp_path / "t" / "missing.jpg", 32, photo=False),
        ThumbJob(tmp_path / "ok.png", tmp_path / "t" / "ok.jpg", 32, photo=True),
    ]
    stats = make_thumbnails(jobs)
    assert stats.written == 1 and set(stats.failed) == {str(jobs[0].target), str(jobs[1].target)}
    assert "not a readable image" in stats.failed[str(jobs[0].target)]
    assert stats.failed[str(jobs[1].target)].startswith("FileNotFoundError")
    assert not jobs[0].target.exists() and jobs[2].target.is_file()
