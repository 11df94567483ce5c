"""`cambatch.report.scan`: a report streamed a batch at a time gives what `per_image` gives on the whole of it."""

from __future__ import annotations

import pandas as pd
import pytest
from test_report_reader import write_part

import cambatch
from cambatch.report import scan


def _rows(images: int, run_id: str, first: int = 0, ranks: int = 3, errors: int = 0) -> dict:
    """`images` images of `ranks` rows each (their ranks in reverse order: the best is not the first row)."""
    rows: dict[str, list] = {k: [] for k in ("path", "input_root", "status", "rank", "class_name", "run_id", "error")}
    for i in range(first, first + images):
        for rank in range(ranks, 0, -1):
            for key, value in zip(
                rows, (f"img_{i:04d}.jpg", "/in", "ok", rank, f"c{(i + rank) % 5}", run_id, None), strict=True
            ):
                rows[key].append(value)
    for i in range(errors):
        for key, value in zip(rows, (f"bad_{i}.jpg", "/in", "error", None, None, run_id, "unreadable"), strict=True):
            rows[key].append(value)
    return rows


def _streamed(out, columns=("class_name",)) -> pd.DataFrame:
    return pd.concat(list(scan.ReportScan(out).images(columns)), ignore_index=True)


def _key(frame: pd.DataFrame) -> list:
    return sorted(zip(frame["path"], frame["class_name"].astype(str), frame["run_id"].astype(str), strict=True))


def test_batches_that_split_an_image_give_one_row_per_image(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "BATCH_ROWS", 7)  # 3 rows an image: every other image straddles two batches
    rows = _rows(40, "20250101T000000Z-a", errors=3)
    write_part(tmp_path / "report" / "part-a-00000.parquet", rows, len(rows["path"]), "20250101T000000Z-a")
    streamed = _streamed(tmp_path)
    expected = cambatch.per_image(cambatch.load_report(tmp_path))
    assert len(streamed) == 40 and _key(streamed) == _key(expected)
    keys = scan.ReportScan(tmp_path).keys
    assert (keys.failed, keys.superseded) == (3, set()) and keys.failed_first[0] == ("/in", "bad_0.jpg", "unreadable")


def test_an_image_under_several_runs_counts_once_from_the_newest_through_a_partition(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "BUCKET_ROWS", 10)  # many buckets
    old, new = "20240101T000000Z-a", "20250101T000000Z-b"
    first = _rows(30, old, errors=2)  # img 0..29, bad_0, bad_1 failed
    second = _rows(20, new, first=20, ranks=2)  # img 20..39 again (or new), newer
    second["path"] += ["bad_0.jpg"]  # redone and processed now
    for key, value in (("input_root", "/in"), ("status", "ok"), ("rank", 1), ("class_name", "c0")):
        second[key].append(value)
    second["run_id"].append(new)
    second["error"].append(None)
    write_part(tmp_path / "report" / "part-a-00000.parquet", first, len(first["path"]), old)
    write_part(tmp_path / "report" / "part-b-00000.parquet", second, len(second["path"]), new)
    streamed = _streamed(tmp_path)
    expected = cambatch.per_image(cambatch.load_report(tmp_path))
    assert len(streamed) == 41 and _key(streamed) == _key(expected)
    assert set(streamed.loc[streamed["path"] == "img_0025.jpg", "run_id"].astype(str)) == {new}
    keys = scan.ReportScan(tmp_path).keys
    assert len(keys.superseded) == 10 and keys.failed == 1 and keys.failed_first == [("/in", "bad_1.jpg", "unreadable")]


@pytest.mark.parametrize("buckets", [1, 4])
def test_a_partition_puts_every_row_of_an_image_in_one_file(tmp_path, buckets):
    rows = _rows(50, "r")
    write_part(tmp_path / "report" / "part-00000.parquet", rows, len(rows["path"]), "r")
    report = scan.ReportScan(tmp_path)
    files = scan.partition(report.batches(["path", "rank"]), buckets, tmp_path)
    seen = [set(scan.read_bucket(f).column("path").to_pylist()) for f in files]
    assert sum(len(s) for s in seen) == 50 and len(set().union(*seen)) == 50
    assert sum(scan.read_bucket(f).num_rows for f in files) == 150


def test_two_inputs_holding_one_path_are_two_images_in_batches_keys_and_names(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "BATCH_ROWS", 4)  # 3 rows an image: batches split the two INPUTs' x.png apart
    rows = _rows(1, "20250101T000000Z-a", errors=1)
    other = {k: list(v) for k, v in rows.items()}
    other["input_root"] = ["/other"] * len(other["path"])
    both = {k: rows[k] + other[k] for k in rows}
    both["path"] = [p.replace("img_0000", "x") for p in both["path"]]
    write_part(tmp_path / "report" / "part-a-00000.parquet", both, len(both["path"]), "20250101T000000Z-a")
    streamed = _streamed(tmp_path)
    assert sorted(zip(streamed["input_root"], streamed["path"], strict=True)) == [("/in", "x.jpg"), ("/other", "x.jpg")]
    report = scan.ReportScan(tmp_path)
    assert report.keys.failed == 2 and [f[0] for f in report.keys.failed_first] == ["/in", "/other"]
    assert report.names.several_roots and not report.names.clashing
    files = scan.partition(report.batches(["input_root", "path"]), 8, tmp_path)
    assert sum(scan.read_bucket(f).num_rows for f in files) == len(both["path"])


def test_names_hash_only_the_images_a_case_blind_disk_would_merge(tmp_path):
    rows = _rows(3, "r")
    rows["path"] = [p.replace("img_0001", "IMG_0000") for p in rows["path"]]  # IMG_0000.jpg beside img_0000.jpg
    write_part(tmp_path / "report" / "part-00000.parquet", rows, len(rows["path"]), "r")
    names = scan.ReportScan(tmp_path).names
    expected = cambatch.report.reader.image_names(cambatch.load_report(tmp_path))
    assert names == expected and names.clashing == {("/in", "img_0000.jpg"), ("/in", "IMG_0000.jpg")}
