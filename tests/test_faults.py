"""Fault injection: what a run does when it is killed, the disk fills or vanishes, or a report part is damaged.

README's "Reliability" section lists the same faults; each test here is one of its lines. Real
processes where the fault needs one (kill -9 with loader workers alive).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from conftest import make_folder
from PIL import Image

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
