"""`cambatch.runner.manifest`: run records written atomically, listed oldest first, damaged ones skipped."""

from __future__ import annotations

import json
import platform

import pytest

import cambatch
from cambatch.errors import UsageError
from cambatch.layout import OutputLayout
from cambatch.runner.lock import OutputLock
from cambatch.runner.manifest import (
    live_shard_settings,
    live_status,
    mark_died,
    read_manifests,
    versions,
    write_manifest,
)
from cambatch.runner.resume import check_settings


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


def test_write_then_read_round_trips(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    first = record("20250101T000000Z-aaaaaa", "2025-01-01T00:00:00+00:00", versions={"torch": "2.4"})
    target = write_manifest(layout.manifest_path(first["run_id"]), first)
    assert target == layout.runs_dir / "20250101T000000Z-aaaaaa.json"
    assert read_manifests(layout.root) == [first]
    assert [p.name for p in layout.runs_dir.iterdir()] == [target.name]  # no temporary file left


def test_rewriting_a_manifest_replaces_it(tmp_path):
    layout = OutputLayout(tmp_path)
    path = layout.manifest_path("20250101T000000Z-aaaaaa")
    write_manifest(path, record("20250101T000000Z-aaaaaa", "2025-01-01", status="running"))
    write_manifest(path, record("20250101T000000Z-aaaaaa", "2025-01-01", status="interrupted"))
    assert [r["status"] for r in read_manifests(tmp_path)] == ["interrupted"]


def test_manifests_are_listed_by_start_time_and_damaged_ones_skipped(tmp_path):
    layout = OutputLayout(tmp_path)
    # File names sort the other way round from the start times.
    write_manifest(layout.manifest_path("b"), record("b", "2025-01-01T00:00:00"))
    write_manifest(layout.manifest_path("a"), record("a", "2025-02-01T00:00:00"))
    (layout.runs_dir / "c.json").write_text('{"run_id": "c", "sta', encoding="utf-8")  # torn or damaged
    (layout.runs_dir / "d.json").write_bytes(b"\xff\xfe not utf-8")
    assert [r["run_id"] for r in read_manifests(tmp_path)] == ["b", "a"]
    assert read_manifests(tmp_path / "never-ran") == []


def test_values_json_cannot_hold_are_written_as_text(tmp_path):
    path = write_manifest(tmp_path / "runs" / "x.json", {"out": tmp_path, "started": "now"})
    assert json.loads(path.read_text())["out"] == str(tmp_path)


def test_versions_name_python_and_the_packages():
    found = versions()
    assert found["python"] == platform.python_version()
    assert found["cambatch"] == cambatch.__version__
    assert found["torch"] and set(found) == {"python", "cambatch", "torch", "torchvision", "timm"}


def test_a_running_run_whose_lock_is_held_stays_running_and_mark_died_marks_the_rest(tmp_path):
    layout = OutputLayout(tmp_path)
    write_manifest(layout.manifest_path("R1"), record("R1", "2025-01-01", status="running"))
    write_manifest(layout.manifest_path("R2"), record("R2", "2025-01-02", status="running", shard="1/2"))
    with OutputLock(layout.lock_path("")):
        assert [live_status(r, tmp_path) for r in read_manifests(tmp_path)] == ["running", "died"]
        assert mark_died(tmp_path, "") == ["R1"]  # only its own shard's
    assert [r["status"] for r in read_manifests(tmp_path)] == ["died", "running"]


def test_the_settings_of_other_live_shards_are_those_a_new_shard_must_share(tmp_path):
    layout = OutputLayout(tmp_path)
    for run_id, status, shard, topk in (
        ("R1", "running", "1/2", 1),
        ("R2", "running", "0/2", 2),
        ("R3", "completed", "1/2", 5),
    ):
        manifest = record(run_id, f"2025-01-0{run_id[1]}", status=status, shard=shard, settings={"topk": topk})
        write_manifest(layout.manifest_path(run_id), manifest)
    assert live_shard_settings(tmp_path, "-shard0000of0002") == []  # shard 1/2's process is gone
    with OutputLock(layout.lock_path("-shard0001of0002")):
        assert live_shard_settings(tmp_path, "-shard0000of0002") == [{"topk": 1}]  # not its own shard, not a done run
        with pytest.raises(UsageError, match=r"topk \(--topk\): 1 there, 3 now"):
            check_settings(live_shard_settings(tmp_path, "-shard0000of0002"), {"topk": 3}, tmp_path)
