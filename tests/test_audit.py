"""Audit jobs: resume after kill -9 and SIGINT, incremental reruns, the lock, shards, lists, labels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SAMPLES
from PIL import Image
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.config import RunConfig
from cambatch.errors import UsageError
from cambatch.report.parts import published_parts as parts
from cambatch.runner.lock import OutputLock, OutputLocked
from cambatch.runner.pipeline import run
from cambatch.sources.shard import Shard, parse_shard

PHOTOS = sorted(p for p in SAMPLES.iterdir() if p.suffix in {".png", ".jpg"})


def make_folder(folder: Path, count: int, side: int = 160) -> list[str]:
    """`count` small JPEGs made from the sample photos (distinct names, varied content)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        photo = Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB")
        photo = photo.rotate(15 * (i // len(PHOTOS))).resize((side, int(side * 0.75)))
        name = f"img_{i:03d}.jpg"
        photo.save(folder / name, quality=90)
        names.append(name)
    return names


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cambatch", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for_parts(report: Path, count: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if report.is_dir() and len(parts(report)) >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no report part was published in time")


def assert_exactly_once(out: Path, names: list[str], topk: int) -> pd.DataFrame:
    df = pd.read_parquet(out / "report")
    assert sorted(df.path.unique()) == sorted(names)
    assert (df.groupby("path").size() == topk).all(), df.groupby("path").size()
    assert not df.duplicated(["path", "rank"]).any()
    for overlay in df.overlay_path.dropna():
        assert (out / overlay).is_file(), overlay
    return df


def test_kill_9_then_rerun_gives_every_image_exactly_once(tmp_path):
    names = make_folder(tmp_path / "photos", 16)
    out = tmp_path / "out"
    args = [
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "--images-per-part",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--topk",
        "2",
    ]
    proc = cli(*args)
    wait_for_parts(out / "report", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    published = pd.read_parquet(out / "report")
    first_run = set(published.run_id)
    assert len(first_run) == 1 and 0 < published.path.nunique() < len(names)

    rerun = cli(*args)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert f"{published.path.nunique()} already done" in stderr
    df = assert_exactly_once(out, names, topk=2)
    kept = df[df.path.isin(published.path)]
    assert set(kept.run_id) == first_run  # finished work was not redone


def test_sigint_finishes_in_flight_work_exits_130_and_resumes(tmp_path):
    names = make_folder(tmp_path / "photos", 24)
    out = tmp_path / "out"
    args = [
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "--images-per-part",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--topk",
        "1",
    ]
    proc = cli(*args)
    wait_for_parts(out / "report", 1, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "interrupted by SIGINT" in stderr and "Traceback" not in stderr
    partial = pd.read_parquet(out / "report")
    assert 0 < partial.path.nunique() < len(names)
    assert (partial.groupby("path").size() == 1).all()
    runs = list((out / "runs").glob("*.json"))
    assert len(runs) == 1 and '"status": "interrupted"' in runs[0].read_text()

    rerun = cli(*args)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert_exactly_once(out, names, topk=1)


def test_incremental_rerun_processes_only_new_and_changed_images(tmp_path):
    photos = tmp_path / "photos"
    names = make_folder(photos, 4)
    out = tmp_path / "out"
    config = RunConfig.create(inputs=[photos], out=out, workers=0, topk=2)
    first = run(config)
    assert (first.ok, first.skipped) == (4, 0)

    Image.open(SAMPLES / "coffee.png").convert("RGB").resize((120, 80)).save(photos / "new.jpg")
    second = run(config)
    assert (second.ok, second.skipped) == (1, 4)

    Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((90, 60)).save(photos / names[0])  # changed content
    third = run(config)
    assert (third.ok, third.skipped) == (1, 4)
    df = assert_exactly_once(out, names + ["new.jpg"], topk=2)
    assert set(df[df.path == names[0]].run_id) == {third.run_id}
    assert set(df[df.path == names[0]].width) == {90}

    again = run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=2, overwrite=True))
    assert (again.ok, again.skipped) == (5, 0)
    assert set(assert_exactly_once(out, names + ["new.jpg"], topk=2).run_id) == {again.run_id}


def test_errors_are_retried_only_when_asked(tmp_path):
    photos = tmp_path / "photos"
    make_folder(photos, 2)
    (photos / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    assert run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=1)).errors == 1
    assert run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=1)).skipped == 3
    retried = run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=1, retry_errors=True))
    assert (retried.errors, retried.skipped) == (1, 2)
    df = pd.read_parquet(out / "report")
    assert (df.path == "broken.jpg").sum() == 1 and set(df[df.path == "broken.jpg"].run_id) == {retried.run_id}


def test_a_second_run_on_a_locked_output_is_refused_with_exit_3(tmp_path):
    make_folder(tmp_path / "photos", 1)
    out = tmp_path / "out"
    with OutputLock(out / ".lock"):
        result = CliRunner().invoke(app, ["run", str(tmp_path / "photos"), "--out", str(out)])
        assert result.exit_code == 3
        assert f"pid {os.getpid()}" in result.output and "in use by another cambatch run" in result.output
        with pytest.raises(OutputLocked):
            OutputLock(out / ".lock").acquire()
        OutputLock(out / ".lock-shard0001of0002").acquire().release()  # another shard is free


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from cambatch.runner.lock import OutputLock; from pathlib import Path; "
            f"OutputLock(Path({str(out / '.lock')!r})).acquire(); import os; os._exit(0)",
        ],
        timeout=60,
    )
    assert holder.returncode == 0 and '"pid"' in (out / ".lock").read_text()  # died holding it
    lock = OutputLock(out / ".lock").acquire()
    assert lock.took_over and lock.took_over["pid"] != os.getpid()
    lock.release()


def test_shards_union_equals_a_single_run(tmp_path):
    photos = tmp_path / "photos"
    make_folder(photos, 9, side=96)
    common = dict(inputs=[photos], workers=0, topk=2, overlays=False)
    full = pd.read_parquet(run(RunConfig.create(out=tmp_path / "full", **common)).report)
    results = [run(RunConfig.create(out=tmp_path / "sharded", shard=f"{i}/3", **common)) for i in range(3)]
    assert sum(r.ok for r in results) == 9 and all(r.ok > 0 for r in results)
    sharded = pd.read_parquet(tmp_path / "sharded" / "report")
    key = ["path", "rank", "class_index"]
    assert not sharded.duplicated(["path", "rank"]).any()
    pd.testing.assert_frame_equal(
        sharded[key].sort_values(key).reset_index(drop=True), full[key].sort_values(key).reset_index(drop=True)
    )
    assert len({p.name for p in parts(tmp_path / "sharded" / "report")}) == 3


def test_shard_from_option_and_environment():
    assert parse_shard("2/8", {}) == Shard(2, 8)
    assert parse_shard(
        None, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    ) == Shard(3, 4)
    assert parse_shard(None, {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    assert parse_shard(None, {}) == Shard(0, 1)
    for bad in ["8/8", "x/2", "1"]:
        with pytest.raises(UsageError):
            parse_shard(bad, {})
    owners = [sum(Shard(i, 4).owns(f"dir/img_{n}.jpg") for i in range(4)) for n in range(200)]
    assert owners == [1] * 200  # every image in exactly one shard


def test_list_inputs_labels_and_correct(tmp_path):
    photos = tmp_path / "data"
    photos.mkdir()
    for name in ["coffee.png", "chelsea.png"]:
        (photos / name).write_bytes((SAMPLES / name).read_bytes())
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,label\ndata/coffee.png,Espresso\ndata/chelsea.png,tabby\ndata/missing.jpg,cup\n../escape.png,\n"
    )
    (tmp_path.parent / "escape.png").write_bytes((SAMPLES / "camera.png").read_bytes())
    out = tmp_path / "out"
    result = run(RunConfig.create(inputs=[], from_list=listing, out=out, workers=0, topk=2))
    df = pd.read_parquet(out / "report")
    assert result.ok == 3 and result.errors == 1
    assert set(df.input_root) == {str(tmp_path)}
    coffee = df[df.path == "data/coffee.png"]
    assert set(coffee.label) == {"Espresso"} and coffee.correct.all()  # case-blind match on every row
    assert not df[df.path == "data/chelsea.png"].correct.any()  # top-1 is another cat class
    missing = df[df.path == "data/missing.jpg"].iloc[0]
    assert missing.status == "error" and "No such file" in missing.error and missing.label == "cup"
    escaped = df[df.path.str.endswith("escape.png")]
    assert escaped.correct.isna().all() and escaped.label.isna().all()
    for overlay in escaped.overlay_path:
        assert (out / overlay).resolve().is_relative_to(out.resolve())  # never outside OUT

    txt = tmp_path / "list.txt"
    txt.write_text("# a comment\ndata/coffee.png\n\n")
    assert run(RunConfig.create(inputs=[], from_list=txt, out=tmp_path / "out_txt", workers=0)).ok == 1


def test_labels_from_dirs(tmp_path):
    for label, name in [("espresso", "coffee.png"), ("Egyptian_cat", "chelsea.png"), ("dog", "camera.png")]:
        (tmp_path / "train" / label).mkdir(parents=True)
        (tmp_path / "train" / label / name).write_bytes((SAMPLES / name).read_bytes())
    out = tmp_path / "out"
    run(RunConfig.create(inputs=[tmp_path / "train"], out=out, workers=0, labels_from_dirs=True, overlays=False))
    df = pd.read_parquet(out / "report")
    per_image = df.groupby("path").agg(label=("label", "first"), correct=("correct", "all"))
    assert per_image.to_dict("index") == {
        "Egyptian_cat/chelsea.png": {"label": "Egyptian_cat", "correct": True},
        "dog/camera.png": {"label": "dog", "correct": False},
        "espresso/coffee.png": {"label": "espresso", "correct": True},
    }


def test_runs_lists_manifests(tmp_path):
    make_folder(tmp_path / "photos", 2)
    out = tmp_path / "out"
    first = run(RunConfig.create(inputs=[tmp_path / "photos"], out=out, workers=0, overlays=False))
    manifest = (out / "runs" / f"{first.run_id}.json").read_text()
    for field in ['"status": "completed"', '"ok": 2', '"torchvision"', '"weights_sha256"', '"images_per_s"']:
        assert field in manifest
    listing = CliRunner().invoke(app, ["runs", str(out)], env={"COLUMNS": "250"})
    assert listing.exit_code == 0 and first.run_id in listing.output and "completed" in listing.output
