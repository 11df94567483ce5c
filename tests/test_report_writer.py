"""`cambatch.report.writer`: parts are published whole, by atomic rename, and an image never straddles two."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from cambatch.report.parts import part_settings, published_parts
from cambatch.report.schema import SCHEMA, table
from cambatch.report.writer import ReportWriter

SETTINGS = {"run_id": "20250101T000000Z-abcdef", "model": "tiny", "topk": 3}


def image_rows(n: int, k: int = 3):
    """The k rows of image n, as the run's writer makes them."""
    return table({"path": [f"img_{n:03d}.jpg"] * k, "rank": list(range(1, k + 1)), "status": ["ok"] * k}, k)


def writer(report_dir, **options) -> ReportWriter:
    return ReportWriter(report_dir, "part-20250101T000000Z-abcdef", SETTINGS, **options)


def test_a_part_is_published_only_once_complete(tmp_path):
    report = tmp_path / "report"
    w = writer(report, images_per_part=2, rows_per_group=1)  # rows reach the file before the part is complete
    w.add_image(image_rows(0))
    assert published_parts(report) == []
    hidden = [p.name for p in report.iterdir()]
    assert hidden == [".part-20250101T000000Z-abcdef-00000.parquet.tmp"]  # written under a dot-name
    assert pd.read_parquet(report).empty  # readers see no rows yet
    w.add_image(image_rows(1))
    assert [p.name for p in published_parts(report)] == ["part-20250101T000000Z-abcdef-00000.parquet"]
    assert sorted(p.name for p in report.iterdir()) == ["part-20250101T000000Z-abcdef-00000.parquet"]
    df = pd.read_parquet(report)
    assert sorted(df.path.unique()) == ["img_000.jpg", "img_001.jpg"] and len(df) == 6
    w.close()
    assert len(published_parts(report)) == 1  # nothing open: close adds no empty part


def test_abort_leaves_nothing_behind(tmp_path):
    report = tmp_path / "report"
    w = writer(report, images_per_part=10)
    for n in range(3):
        w.add_image(image_rows(n))
    w.abort()
    assert list(report.iterdir()) == []
    w.abort()  # nothing open: no error


def test_abort_keeps_the_parts_already_published(tmp_path):
    report = tmp_path / "report"
    w = writer(report, images_per_part=2)
    for n in range(3):
        w.add_image(image_rows(n))
    w.abort()
    assert [p.name for p in report.iterdir()] == ["part-20250101T000000Z-abcdef-00000.parquet"]
    assert sorted(pd.read_parquet(report).path.unique()) == ["img_000.jpg", "img_001.jpg"]


def test_images_per_part_splits_parts(tmp_path):
    report = tmp_path / "report"
    w = writer(report, images_per_part=2)
    for n in range(5):
        w.add_image(image_rows(n))
    w.close()
    parts = published_parts(report)
    assert [p.name[-13:] for p in parts] == ["00000.parquet", "00001.parquet", "00002.parquet"]
    assert [pq.read_table(p).column("path").to_pylist()[::3] for p in parts] == [
        ["img_000.jpg", "img_001.jpg"],
        ["img_002.jpg", "img_003.jpg"],
        ["img_004.jpg"],
    ]
    assert w.published == parts


def test_an_images_rows_never_straddle_parts(tmp_path):
    report = tmp_path / "report"
    # Row groups of 4 rows, images of 3 rows, 2 images a part: groups and parts cut at different places.
    w = writer(report, images_per_part=2, rows_per_group=4)
    for n in range(7):
        w.add_image(image_rows(n))
    w.close()
    seen = set()
    for part in published_parts(report):
        counts = pq.read_table(part).to_pandas().groupby("path").size()
        assert (counts == 3).all(), counts  # every image whole in its part
        assert not seen & set(counts.index)  # and in one part only
        seen |= set(counts.index)
    assert len(seen) == 7


def test_part_seconds_publishes_a_part_that_was_open_too_long(tmp_path):
    report = tmp_path / "report"
    w = writer(report, images_per_part=1000, part_seconds=0.0)
    w.add_image(image_rows(0))
    w.add_image(image_rows(1))
    assert len(published_parts(report)) == 2


def test_parts_carry_the_settings_and_the_schema(tmp_path):
    report = tmp_path / "report"
    w = writer(report)
    w.add_image(image_rows(0))
    w.close()
    (part,) = published_parts(report)
    assert part_settings(part) == SETTINGS
    assert pq.read_schema(part).remove_metadata() == SCHEMA


def test_a_run_that_wrote_nothing_leaves_one_readable_empty_part(tmp_path):
    report = tmp_path / "report"
    writer(report).close()
    (part,) = published_parts(report)
    assert pq.read_table(part).num_rows == 0 and part_settings(part)["run_id"] == SETTINGS["run_id"]
