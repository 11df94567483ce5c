"""Fault injection: what a run does when it is killed, the disk fills or vanishes, or a report part is damaged.

docs/reliability.md lists the same faults; each test here is one of its lines. Real
processes where the fault needs one (kill -9 with loader workers alive).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from conftest import SAMPLES, make_folder
from PIL import Image
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.report.parts import DamagedPart, published_parts
from cambatch.runner import writer as writer_module

TRIALS = 10


def _cambatch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cambatch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _complete_jpeg(path: Path) -> bool:
    data = path.read_bytes()
    if not (data.startswith(b"\xff\xd8") and data.rstrip(b"\x00").endswith(b"\xff\xd9")):
        return False
    with Image.open(path) as image:
        image.load()
    return True


def test_kill_9_at_random_moments_with_2_loader_workers_then_an_immediate_rerun_succeeds(tmp_path):
    names = make_folder(tmp_path / "photos", 10, side=120)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "photos"), "--out", str(out), "--workers", "2", "--batch-size", "2"]
    args += ["--images-per-part", "2", "--topk", "2", "--quiet"]
    moments = random.Random(10).sample(range(300, 9000), TRIALS)  # ms after the start: import, load, mid-run
    for trial, moment in enumerate(moments):
        killed = _cambatch(*args, "--overwrite")
        time.sleep(moment / 1000)
        killed.send_signal(signal.SIGKILL)  # the main pid only: its loader workers live on a while
        killed.wait()
        rerun = _cambatch(*args)  # at once: no sleep, the workers may still be alive
        _, stderr = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, (trial, moment, stderr)
        df = pd.read_parquet(out / "report")
        assert sorted(df.path.unique()) == sorted(names), (trial, moment)
        assert (df.groupby("path").size() == 2).all() and not df.duplicated(["path", "rank"]).any(), (trial, moment)
        assert df.overlay_path.notna().all() and all(_complete_jpeg(out / p) for p in df.overlay_path), (trial, moment)
        left = [p.name for p in (out / "report").iterdir() if p.name.endswith(".tmp")]
        assert not left, (trial, moment, left)  # the killed run's open part was swept by the rerun
        torn = list((out / "overlays").rglob(".*.tmp"))
        assert not torn, (trial, moment, torn)  # and the overlays it was writing, when the rerun redid their images
    listing = subprocess.run(
        [sys.executable, "-m", "cambatch", "runs", str(out)], capture_output=True, text=True, check=True
    ).stdout  # a pipe, as `| cat`: every cell whole
    ids = [p.stem for p in (out / "runs").glob("*.json")]
    assert all(run_id in listing for run_id in ids)
    assert "running" not in listing and "…" not in listing
    assert listing.count("completed") >= TRIALS  # every rerun, and any killed run that had already finished


def test_runs_shows_a_killed_run_as_died_with_every_cell_whole(tmp_path):
    make_folder(tmp_path / "photos", 24, side=120)
    out = tmp_path / "out"
    proc = _cambatch("run", str(tmp_path / "photos"), "--out", str(out), "--workers", "2", "--batch-size", "1")
    deadline = time.monotonic() + 120
    while not list((out / "runs").glob("*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    listing = subprocess.run(
        [sys.executable, "-m", "cambatch", "runs", str(out)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "60"},
    ).stdout
    run_id = next((out / "runs").glob("*.json")).stem
    assert run_id in listing and "died" in listing and "efficientnet_lite0" in listing, listing
    assert "…" not in listing


# ---- a full, read-only or vanished OUT ----


def _assert_failed_cleanly(out: Path, result_output: str, exit_code: int, fragment: str) -> None:
    lines = [line for line in result_output.splitlines() if line.strip()]
    assert exit_code == 4, result_output
    assert len(lines) == 1 and lines[0].startswith("cambatch: error: ") and fragment in lines[0], result_output
    assert "images already saved are kept" in lines[0] and "rerun" in lines[0]
    manifests = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert [m["status"] for m in manifests] == ["failed"]
    report = out / "report"
    assert not [p.name for p in report.iterdir() if p.name.endswith(".tmp")]  # only complete parts remain
    for part in published_parts(report):
        pq.read_table(part)  # each one whole
    assert not [p for p in (out / "overlays").rglob(".*.tmp")]  # no torn overlay left behind


def test_an_injected_enospc_fails_in_one_line_exit_4_manifest_failed_and_a_rerun_completes(tmp_path, monkeypatch):
    names = make_folder(tmp_path / "photos", 8, side=96)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "photos"), "--out", str(out), "--workers", "0", "--batch-size", "2"]
    args += ["--images-per-part", "2", "--topk", "2", "--writer-threads", "1", "--quiet"]
    real_save = writer_module.save_jpeg
    calls = []

    def full_disk(picture, target):
        calls.append(target)
        if len(calls) > 9:  # 4 images' overlays fit, the fifth image's second one does not
            target.with_name(f".{target.name}.x.tmp").write_bytes(b"\xff\xd8 half")  # what a full disk leaves
            target.with_name(f".{target.name}.x.tmp").unlink()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        real_save(picture, target)

    monkeypatch.setattr(writer_module, "save_jpeg", full_disk)
    failed = CliRunner().invoke(app, args)
    _assert_failed_cleanly(out, failed.output, failed.exit_code, f"no space left on device writing {out}/overlays/")
    saved = pd.read_parquet(out / "report").path.nunique()
    assert 0 < saved < len(names) and f"{saved} images already saved are kept" in failed.output

    monkeypatch.setattr(writer_module, "save_jpeg", real_save)
    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0 and f"{saved} already done" in rerun.output, rerun.output
    df = pd.read_parquet(out / "report")
    assert sorted(df.path.unique()) == sorted(names) and (df.groupby("path").size() == 2).all()
    assert all(_complete_jpeg(out / p) for p in df.overlay_path)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 600 KB tmpfs (root and a working `mount` only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tmpfs needs root and mount")
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount_point)]).returncode:
        pytest.skip("mount -t tmpfs refused here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_tmpfs_then_a_read_only_one_then_room_again(tmp_path, small_tmpfs):
    names = make_folder(tmp_path / "photos", 12, side=400)
    out = small_tmpfs / "out"
    args = ["run", str(tmp_path / "photos"), "--out", str(out), "--workers", "0", "--batch-size", "2"]
    args += ["--images-per-part", "2", "--topk", "3", "--max-side", "0", "--quiet"]
    failed = subprocess.run([sys.executable, "-m", "cambatch", *args], capture_output=True, text=True, timeout=300)
    _assert_failed_cleanly(out, failed.stderr, failed.returncode, "no space left on device writing")

    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    read_only = subprocess.run([sys.executable, "-m", "cambatch", *args], capture_output=True, text=True, timeout=300)
    assert read_only.returncode == 4 and "not writable (Read-only file system)" in read_only.stderr, read_only.stderr
    assert len(read_only.stderr.strip().splitlines()) == 1

    subprocess.run(["mount", "-o", "remount,rw,size=64m", str(small_tmpfs)], check=True)
    rerun = subprocess.run([sys.executable, "-m", "cambatch", *args], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    df = pd.read_parquet(out / "report")
    assert sorted(df.path.unique()) == sorted(names) and (df.groupby("path").size() == 3).all()
    assert all(_complete_jpeg(out / p) for p in df.overlay_path)


# ---- a damaged report part ----


@pytest.mark.parametrize("damage", ["truncated", "not_parquet"])
def test_a_damaged_part_is_named_in_one_line_by_each_command(tmp_path, sample_run, damage):
    import cambatch

    result, _ = sample_run
    out = tmp_path / "out"
    shutil.copytree(result.out, out)
    part = published_parts(out / "report")[0]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"path,class\ncoffee.png,espresso\n")
    fragment = f"damaged report part {part} (not a complete Parquet file"

    with pytest.raises(DamagedPart, match=re.escape(fragment)):
        cambatch.load_report(out)
    commands = {
        "run": ["run", str(SAMPLES), "--out", str(out), "--workers", "0", "--quiet"],
        "summarize": ["summarize", str(out)],
        "compare": ["compare", str(out), str(result.out)],
        "gallery": ["gallery", str(out)],
    }
    for name, args in commands.items():
        done = CliRunner().invoke(app, args)
        lines = [line for line in done.output.splitlines() if line.strip()]
        assert done.exit_code == 2 and len(lines) == 1, (name, done.output)
        assert lines[0].startswith("cambatch: error: ") and fragment in lines[0] and "move it out of" in lines[0]
    assert part.read_bytes() != data  # nothing rewrote or dropped the damaged file
    assert not (out / "gallery" / "index.html").exists()


def test_an_out_that_vanishes_mid_run_fails_in_one_line_and_is_not_recreated(tmp_path, monkeypatch):
    names = make_folder(tmp_path / "photos", 6, side=96)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "photos"), "--out", str(out), "--workers", "0", "--batch-size", "2"]
    args += ["--images-per-part", "2", "--writer-threads", "1", "--quiet"]
    real_save = writer_module.save_jpeg
    calls = []

    def vanish(picture, target):
        calls.append(target)
        if len(calls) == 7:  # mid-run, with a part published
            shutil.rmtree(out)
        real_save(picture, target)

    monkeypatch.setattr(writer_module, "save_jpeg", vanish)
    failed = CliRunner().invoke(app, args)
    lines = [line for line in failed.output.splitlines() if line.strip()]
    assert failed.exit_code == 4 and len(lines) == 1, failed.output
    assert lines[0] == f"cambatch: error: the output folder {out} vanished during the run; rerun to start it again"
    assert not out.exists()
    monkeypatch.setattr(writer_module, "save_jpeg", real_save)
    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert sorted(pd.read_parquet(out / "report").path.unique()) == sorted(names)


# ---- never wrong, never lost: refusals before any work, every image accounted for ----

# A tiny random model: these cases are about what happens to OUT, not about the maps.
FAST = ["--model", "resnet18", "--weights", "none", "--image-size", "64", "--workers", "0", "--quiet"]


def _run(*args) -> Result:
    return CliRunner().invoke(app, ["run", *map(str, args), *FAST])


def _snapshot(out: Path) -> dict[str, str]:
    """Every file under OUT and its content: what a refused command must leave as it was."""
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()
    }


def _one_error_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("cambatch: error: "), result.output
    return lines[0]


def test_overwrite_of_one_shard_beside_shards_of_other_settings_is_refused_before_anything_is_purged(tmp_path):
    make_folder(tmp_path / "photos", 7, side=48)
    out = tmp_path / "ow"
    for shard in ("0/2", "1/2"):
        assert _run(tmp_path / "photos", "--out", out, "--shard", shard).exit_code == 0
    before = _snapshot(out)
    refused = _run(tmp_path / "photos", "--out", out, "--shard", "0/2", "--topk", "1", "--overwrite")
    line = _one_error_line(refused)
    assert "holds other shards' results made with other settings (topk (--topk): 3 there, 1 now)" in line
    assert "--overwrite redoes only shard 0/2: give this run another --out, or delete" in line
    assert _snapshot(out) == before and pd.read_parquet(out / "report").path.nunique() == 7  # nothing purged
    # With the other shards' settings, --overwrite redoes its own shard and keeps theirs.
    assert _run(tmp_path / "photos", "--out", out, "--shard", "0/2", "--overwrite").exit_code == 0
    assert pd.read_parquet(out / "report").groupby("path").size().to_dict() == dict.fromkeys(_paths(out), 3)
    assert len(_paths(out)) == 7


def _paths(out: Path) -> list[str]:
    return sorted(pd.read_parquet(out / "report").path.unique())


def test_an_out_inside_the_input_is_never_read_back_by_a_later_run_with_another_out(tmp_path):
    names = make_folder(tmp_path / "photos", 3, side=48)
    first = _run(tmp_path / "photos", "--out", tmp_path / "photos" / "cams", "--gallery")
    assert first.exit_code == 0, first.output
    assert (tmp_path / "photos" / "cams" / "gallery" / "thumbs").is_dir()
    second = _run(tmp_path / "photos", "--out", tmp_path / "photos" / "cams2")
    assert second.exit_code == 0 and _paths(tmp_path / "photos" / "cams2") == names  # no overlay, thumbnail or map


def test_an_out_equal_to_the_input_or_an_input_without_images_says_no_images_found(tmp_path):
    make_folder(tmp_path / "photos", 1, side=48)
    (tmp_path / "empty").mkdir()
    for inputs, out in ((tmp_path / "photos", tmp_path / "photos"), (tmp_path / "empty", tmp_path / "out")):
        line = _one_error_line(_run(inputs, "--out", out))
        assert f"no images found in {inputs} " in line and "output folders" in line
    assert not (tmp_path / "out" / "report").exists()


def test_an_out_that_is_a_file_or_under_one_is_refused_in_one_line(tmp_path):
    make_folder(tmp_path / "photos", 1, side=48)
    (tmp_path / "f").write_text("mine")
    line = _one_error_line(_run(tmp_path / "photos", "--out", tmp_path / "f"))
    assert f"--out {tmp_path / 'f'} is a file, not a folder" in line
    line = _one_error_line(_run(tmp_path / "photos", "--out", tmp_path / "f" / "sub"))
    assert f"is under {tmp_path / 'f'}, a file, not a folder" in line
    assert (tmp_path / "f").read_text() == "mine"


def test_a_long_name_with_a_capital_letter_runs_beside_coffee_and_plain_capitals_keep_their_names(tmp_path):
    photos = tmp_path / "m"
    photos.mkdir()
    small = Image.open(SAMPLES / "coffee.png").convert("RGB").resize((60, 40))
    for name in ("A" + "b" * 245 + ".png", "coffee.png", "IMG_0001.JPG"):
        small.save(photos / name, format="PNG" if name.endswith(".png") else "JPEG")
    done = _run(photos, "--out", tmp_path / "out", "--topk", "1")
    assert done.exit_code == 0, done.output
    report = pd.read_parquet(tmp_path / "out" / "report").set_index("path")
    assert (report["status"] == "ok").all() and len(report) == 3  # coffee's row too
    folders = {path: overlay.split("/")[1] for path, overlay in report["overlay_path"].items()}
    assert folders["coffee.png"] == "coffee.png" and folders["IMG_0001.JPG"] == "IMG_0001.JPG"
    assert all(len(part.encode()) <= 255 for overlay in report["overlay_path"] for part in overlay.split("/"))
    assert all((tmp_path / "out" / overlay).is_file() for overlay in report["overlay_path"])


def test_one_unreadable_tar_is_one_error_row_and_the_folder_goes_on(tmp_path):
    photos = tmp_path / "m"
    photos.mkdir()
    (photos / "bad.tar").write_text("x\n")
    Image.open(SAMPLES / "coffee.png").convert("RGB").resize((60, 40)).save(photos / "coffee.png")
    done = _run(photos, "--out", tmp_path / "out", "--topk", "1")
    assert done.exit_code == 0, done.output
    report = pd.read_parquet(tmp_path / "out" / "report").set_index("path")
    assert report.loc["coffee.png", "status"] == "ok" and report.loc["bad.tar", "status"] == "error"
    assert "cannot read tar shard" in report.loc["bad.tar", "error"]


def test_fail_on_error_judges_what_the_report_holds_for_the_runs_images(tmp_path):
    make_folder(tmp_path / "e", 1, side=48)
    (tmp_path / "e" / "broken.jpg").write_bytes(b"not a jpeg")
    args = [tmp_path / "e", "--out", tmp_path / "o", "--fail-on-error"]
    assert _run(*args).exit_code == 1
    again = _run(*args)  # requeued: nothing to do, and the broken image still failed
    assert again.exit_code == 1 and "2 already done (1 of them failed; --retry-errors redoes them)" in again.output
    Image.open(SAMPLES / "coffee.png").convert("RGB").resize((60, 40)).save(tmp_path / "e" / "broken.jpg")
    fixed = _run(*args)  # a changed file is redone
    assert fixed.exit_code == 0, fixed.output
    assert set(pd.read_parquet(tmp_path / "o" / "report").status) == {"ok"}


def test_a_rerun_that_adds_labels_applies_them_and_a_new_ground_truth_is_refused(tmp_path):
    make_folder(tmp_path / "train" / "espresso", 2, side=48)
    out = tmp_path / "out"
    assert _run(tmp_path / "train", "--out", out).exit_code == 0
    labelled = _run(tmp_path / "train", "--out", out, "--labels-from-dirs")
    assert labelled.exit_code == 0 and "2 redone for their new labels" in labelled.output, labelled.output
    report = pd.read_parquet(out / "report")
    assert set(report.label) == {"espresso"} and report.correct.notna().all() and len(report) == 6
    again = _run(tmp_path / "train", "--out", out)  # without the flag: the labels stay, nothing is redone
    assert again.exit_code == 0 and "2 already done" in again.output and "redone" not in again.output
    assert set(pd.read_parquet(out / "report").label) == {"espresso"}
    before = _snapshot(out)
    csv = tmp_path / "boxes.csv"
    csv.write_text("path,x0,y0,x1,y1,label\nespresso/img_000.jpg,1,1,20,20,espresso\n")
    line = _one_error_line(_run(tmp_path / "train", "--out", out, "--annotations", csv))
    assert f"annotations (--annotations): none there, {csv} now" in line and "--overwrite" in line
    assert _snapshot(out) == before


def test_the_summary_counts_overlays_and_the_images_they_show(tmp_path):
    make_folder(tmp_path / "photos", 2, side=48)
    done = CliRunner().invoke(app, ["run", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), *FAST[:-1]])
    assert done.exit_code == 0 and "(6 overlays of 2 images)" in done.output, done.output
