"""`cambatch.inspection.runs`: the runs of OUT as `cambatch runs` prints them (table, CSV, JSON)."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.inspection.runs import print_runs, run_rows
from cambatch.layout import OutputLayout
from cambatch.report.schema import table
from cambatch.runner.manifest import write_manifest


def record(run_id: str, started: str, **extra) -> dict:
    return {
        "run_id": run_id,
        "status": "completed",
        "started": started,
        "shard": "0/1",
        "model": "efficientnet_lite0",
        "counts": {"images": 3, "ok": 2, "error": 1, "skipped": 0},
        "images_per_s": 12.345,
        **extra,
    }


def test_print_runs_lists_each_run_and_counts_them(tmp_path):
    layout = OutputLayout(tmp_path)
    write_manifest(layout.manifest_path("20250101T000000Z-aaaaaa"), record("20250101T000000Z-aaaaaa", "2025-01-01"))
    write_manifest(
        layout.manifest_path("20250102T000000Z-bbbbbb"),
        record("20250102T000000Z-bbbbbb", "2025-01-02", status="interrupted", images_per_s=None),
    )
    stream = io.StringIO()
    assert print_runs(tmp_path, Console(file=stream, width=250)) == 2
    text = stream.getvalue()
    assert "20250101T000000Z-aaaaaa" in text and "20250102T000000Z-bbbbbb" in text
    assert "interrupted" in text and "12.3" in text
    assert print_runs(tmp_path / "none", Console(file=io.StringIO())) == 0


def test_off_a_terminal_every_cell_is_whole_and_csv_json_list_the_same(tmp_path):
    layout = OutputLayout(tmp_path)
    model = "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k_with_a_very_long_name"
    write_manifest(layout.manifest_path("20250101T000000Z-aaaaaa"), record("20250101T000000Z-aaaaaa", "2025-01-01"))
    write_manifest(
        layout.manifest_path("20250102T000000Z-bbbbbb"),
        record("20250102T000000Z-bbbbbb", "2025-01-02", status="running", model=model),  # no process holds its lock
    )
    stream = io.StringIO()
    print_runs(tmp_path, Console(file=stream, width=60))  # a pipe: no terminal to fit
    text = stream.getvalue()
    assert "…" not in text and model in text and "20250102T000000Z-bbbbbb" in text
    assert "died" in text and "running" not in text  # its process is gone
    stream = io.StringIO()
    print_runs(tmp_path, Console(file=stream), "csv")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("run,status,") and lines[2].startswith("20250102T000000Z-bbbbbb,died,")
    stream = io.StringIO()
    print_runs(tmp_path, Console(file=stream), "json")
    assert [r["status"] for r in json.loads(stream.getvalue())] == ["completed", "died"]


@pytest.mark.parametrize("command", ["runs", "gallery"])
def test_a_url_is_refused_in_one_line_with_the_url_as_given(command):
    result = CliRunner().invoke(app, [command, "s3://bucket/cams"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "s3://bucket/cams" in lines[0] and "reads a local output folder" in lines[0]


def test_a_run_that_died_is_counted_from_the_parts_it_published(tmp_path):
    layout = OutputLayout(tmp_path)
    dead, other = "20250103T000000Z-cccccc", "20250103T000000Z-dddddd"
    counts = {"images": 14, "ok": 0, "error": 0, "skipped": 0}  # what its manifest said when it started
    write_manifest(layout.manifest_path(dead), record(dead, "2025-01-03", status="running", counts=counts))
    layout.report_dir.mkdir()

    def part(run_id: str, name: str, paths: list[str], status: str) -> None:
        columns = {"input_root": ["/in"] * len(paths), "path": paths, "status": [status] * len(paths)}
        pq.write_table(
            table(columns, len(paths)), layout.report_dir / f"{layout.part_name(run_id, name)}-00000.parquet"
        )

    part(dead, "", [f"img_{i:02d}.jpg" for i in range(12) for _ in range(2)], "ok")  # 12 images, 2 rows each
    part(dead, "-w1a2b", ["broken.jpg"], "error")  # another writer of the same run
    part(other, "", ["x.jpg"], "ok")  # another run's: not counted
    (row,) = run_rows(tmp_path)
    assert (row["status"], row["ok"], row["error"]) == ("died", 12, 1)
