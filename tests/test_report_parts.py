"""`cambatch.report.parts`: which files are the report, and the settings they carry."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cambatch.errors import UsageError
from cambatch.report.parts import (
    DamagedPart,
    is_published,
    part_settings,
    published_parts,
    read_settings,
    report_dir_of,
    report_files,
    report_parts,
)
from cambatch.report.reader import load_report
from cambatch.report.schema import METADATA_KEY, table


def write_part(path: Path, settings: dict | None = None, paths: tuple[str, ...] = ("a.jpg",)) -> Path:
    rows = table({"path": list(paths), "status": ["ok"] * len(paths)}, len(paths))
    if settings is not None:
        rows = rows.replace_schema_metadata({METADATA_KEY: json.dumps(settings).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, path)
    return path


def test_published_parts_skip_dot_underscore_and_temporary_files(tmp_path):
    report = tmp_path / "report"
    for name in (
        "part-b-00000.parquet",
        "part-a-00001.parquet",
        "part-a-00000.parquet",
        ".part-c-00000.parquet.tmp",  # being written
        ".part-c-00000.parquet",  # a dot-name, even with the right suffix
        "_common_metadata",
        "_part-d.parquet",
        ".purge.lock",
        "notes.txt",
    ):
        write_part(report / name)
    names = [p.name for p in published_parts(report)]
    assert names == ["part-a-00000.parquet", "part-a-00001.parquet", "part-b-00000.parquet"]  # in name order
    assert published_parts(tmp_path / "missing") == []


@pytest.mark.parametrize(
    "name, published",
    [
        ("part-x-00000.parquet", True),
        (".part-x-00000.parquet.tmp", False),
        (".part-x-00000.parquet", False),
        ("_metadata", False),
        ("_x.parquet", False),
        ("part-x-00000.parquet.tmp", False),
    ],
)
def test_is_published(name, published):
    assert is_published(name) is published


def test_read_settings_picks_the_newest_run_and_lists_run_ids(tmp_path):
    report = tmp_path / "out" / "report"
    old, new = "20250101T000000Z-aaaaaa", "20250301T000000Z-bbbbbb"
    write_part(report / f"part-{new}-00000.parquet", {"run_id": new, "model": "resnet50", "topk": 5})
    write_part(report / f"part-{old}-00000.parquet", {"run_id": old, "model": "resnet18", "topk": 3})
    write_part(report / f"part-{old}-00001.parquet", {"run_id": old, "model": "resnet18", "topk": 3})
    settings = read_settings(tmp_path / "out")
    assert settings["model"] == "resnet50" and settings["topk"] == 5 and settings["run_id"] == new
    assert settings["run_ids"] == [old, new]
    assert read_settings(report) == settings  # the report folder itself works too


def test_a_part_without_settings_is_named_by_its_file(tmp_path):
    part = write_part(tmp_path / "report" / "part-legacy.parquet")
    assert part_settings(part) == {}
    assert read_settings(tmp_path)["run_ids"] == ["part-legacy"]


def test_report_parts_of_a_folder_its_report_or_one_file(tmp_path):
    out = tmp_path / "out"
    part = write_part(out / "report" / "part-r-00000.parquet", {"run_id": "r"})
    assert report_parts(out) == [part]
    assert report_parts(out / "report") == [part]
    assert report_parts(part) == [part]
    assert report_dir_of(out) == out / "report" and report_dir_of(out / "report") == out / "report"


def test_report_parts_errors_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no cambatch report under .*missing \(expected .*missing/report\)"):
        report_parts(tmp_path / "missing")
    (tmp_path / "empty" / "report").mkdir(parents=True)
    write_part(tmp_path / "empty" / "report" / ".part-x-00000.parquet.tmp")  # only a part being written
    with pytest.raises(FileNotFoundError, match="holds no complete report part"):
        report_parts(tmp_path / "empty")


def test_a_report_given_as_a_url_is_read_in_place_with_the_same_rules(tmp_path):
    out = tmp_path / "cams"
    write_part(out / "report" / "part-r1-00000.parquet", {"run_id": "r1", "model": "m"})
    write_part(out / "report" / "part-r2-00000.parquet", {"run_id": "r2", "model": "m"}, paths=("b.jpg",))
    write_part(out / "report" / ".part-r3-00000.parquet.tmp", {"run_id": "r3"})  # being written: not the report
    for given in (f"file://{out}", f"file://{out}/report/"):
        paths, filesystem = report_files(given)
        assert filesystem is not None and [Path(p).name for p in paths] == [
            "part-r1-00000.parquet",
            "part-r2-00000.parquet",
        ]
        assert read_settings(given)["run_ids"] == ["r1", "r2"]
    assert sorted(load_report(f"file://{out}")["path"]) == ["a.jpg", "b.jpg"]
    assert report_files(str(out)) == ([str(p) for p in report_parts(out)], None)  # local: no filesystem layer
    one = f"file://{out}/report/part-r2-00000.parquet"
    assert list(load_report(one)["path"]) == ["b.jpg"]
    with pytest.raises(UsageError, match="no such object"):
        report_files(f"file://{tmp_path}/missing")
    (out / "report" / "part-r2-00000.parquet").write_bytes(b"torn")
    with pytest.raises(DamagedPart, match="part-r2-00000.parquet"):
        load_report(f"file://{out}")
