"""`cambatch.runner.remote_out`: OUT as a URL. A local S3 server (moto, on 127.0.0.1, started and stopped by
the fixture) takes the output of real runs of the default model: the same rows as a local OUT, overlays up
before the part that names them, resume and purges against the store, and one line for what cannot work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PHOTOS, SAMPLES, aws_env
from sources_support import assert_same_rows, by_image
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.config import RunConfig
from cambatch.errors import OutputUnwritable, UsageError
from cambatch.layout import OutputLayout
from cambatch.report.schema import SCHEMA
from cambatch.runner.pipeline import run
from cambatch.runner.remote_out import STAGING_LOCK, STAGING_PREFIX, StagedOut, sweep


@pytest.fixture
def staging(tmp_path, monkeypatch):
    """Where the runs' staging folders go, so a test can see that none is left behind."""
    folder = tmp_path / "staging"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _rows_on_store(fs, root: str) -> pd.DataFrame:
    parts = sorted(p for p in fs.find(f"{root}/report") if p.endswith(".parquet"))
    return pd.concat([pq.read_table(fs.open(p)).to_pandas() for p in parts], ignore_index=True)


def _overlays_on_store(fs, root: str) -> set[str]:
    return {p[len(root) + 1 :] for p in fs.find(f"{root}/overlays")}


def _check_overlays_go_up_first(monkeypatch, fs, root: str) -> list[str]:
    """Wrap the part upload: at that moment every overlay the part's rows name must be on the store already."""
    uploaded: list[str] = []
    original = StagedOut._put_part

    def put_part(self, part):
        named = pq.read_table(part, columns=["overlay_path"]).column("overlay_path").drop_null().to_pylist()
        missing = set(named) - _overlays_on_store(fs, root)
        assert not missing, f"{part.name} went up before its overlays {sorted(missing)[:3]}"
        uploaded.append(part.name)
        original(self, part)

    monkeypatch.setattr(StagedOut, "_put_part", put_part)
    return uploaded


def test_a_run_into_s3_gives_the_local_rows_then_resumes_and_purges_against_the_store(
    tmp_path, s3_bucket, sample_run, staging, monkeypatch
):
    name, fs = s3_bucket
    _, local_rows = sample_run
    root, url = f"{name}/cams", f"s3://{name}/cams"
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES, photos)
    uploaded = _check_overlays_go_up_first(monkeypatch, fs, root)

    cli = CliRunner().invoke(app, ["run", str(photos), "--out", url, "--workers", "0"])
    assert cli.exit_code == 0, cli.output
    assert f"report:   {url}/report" in cli.output
    assert f"overlays: {url}/overlays (21 overlays of 7 images)" in cli.output
    rows = _rows_on_store(fs, root)
    assert_same_rows(by_image(rows, str), by_image(local_rows, str))
    assert set(rows["overlay_path"]) == _overlays_on_store(fs, root) and len(uploaded) == 1
    (manifest,) = fs.find(f"{root}/runs")
    record = json.loads(fs.cat_file(manifest))
    assert record["status"] == "completed" and record["parts"] == uploaded
    assert list(staging.iterdir()) == []  # the staging folder is gone

    # Read in place: the report, a map, the settings and `summarize`.
    frame = cambatch.load_report(url, status="ok", rank=1)
    assert sorted(frame["path"]) == sorted(p.name for p in PHOTOS)
    assert cambatch.load_map(url, "chelsea.png", int(frame.set_index("path").loc["chelsea.png", "class_index"])).shape
    assert cambatch.read_settings(url)["run_ids"] == [record["run_id"]]
    shown = CliRunner().invoke(app, ["summarize", url, "--format", "csv"])
    assert shown.exit_code == 0 and "egyptian cat" in shown.output.lower(), shown.output

    again = run(RunConfig.create(photos, url, workers=0))
    assert (again.processed, again.skipped) == (0, len(PHOTOS))

    # A changed photo is redone: its old rows leave the store's part (rewritten), its new ones come in a new part.
    (photos / "coffee.png").write_bytes(PHOTOS[0].read_bytes())
    changed = run(RunConfig.create(photos, url, workers=0))
    assert (changed.processed, changed.skipped) == (1, len(PHOTOS) - 1)
    rows = _rows_on_store(fs, root)
    assert rows.groupby("path").size().to_dict() == {p.name: 3 for p in PHOTOS}
    assert set(rows.loc[rows["path"] == "coffee.png", "run_id"]) == {changed.run_id}
    assert set(rows["overlay_path"]) <= _overlays_on_store(fs, root)


def test_evaluate_and_compare_read_a_report_on_the_store(tmp_path, s3_bucket, sample_run, staging):
    name, _ = s3_bucket
    url = f"s3://{name}/cams"
    run(RunConfig.create(SAMPLES, url, workers=0, overlays=False))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x0,y0,x1,y1,label\nchelsea.png,60,10,420,299,tabby\n", encoding="utf-8")
    local = sample_run[0].out
    for args in (["evaluate", url, "--annotations", str(boxes)], ["compare", str(local), url]):
        stored = CliRunner().invoke(app, [*args, "--format", "json"])
        here = CliRunner().invoke(app, [*[str(local) if a == url else a for a in args], "--format", "json"])
        assert stored.exit_code == 0 and here.exit_code == 0, stored.output
        if args[0] == "evaluate":  # the same report in two places: the same figures
            assert json.loads(stored.stdout) == json.loads(here.stdout)
        else:
            assert '"top1_changed": 0' in stored.stdout and '"compared": 7' in stored.stdout, stored.stdout


def test_changed_settings_on_the_store_are_refused_and_overwrite_replaces_them(tmp_path, s3_bucket, staging):
    name, fs = s3_bucket
    root, url = f"{name}/cams", f"s3://{name}/cams"
    run(RunConfig.create(PHOTOS[:2], url, workers=0))
    refused = CliRunner().invoke(app, ["run", *map(str, PHOTOS[:2]), "--out", url, "--topk", "1"])
    assert refused.exit_code == 2 and "other settings" in refused.output and "topk" in refused.output

    redone = run(RunConfig.create(PHOTOS[:2], url, workers=0, topk=1, overwrite=True))
    rows = _rows_on_store(fs, root)
    assert set(rows["run_id"]) == {redone.run_id} and set(rows["rank"]) == {1}
    assert _overlays_on_store(fs, root) == set(rows["overlay_path"])  # the old top-2/top-3 overlays are gone
    assert list(staging.iterdir()) == []


# 2 images a part: the failure usually shows while the run computes; one part: only once it is done.
@pytest.mark.parametrize("images_per_part", [2, len(PHOTOS)])
def test_a_failed_upload_ends_the_run_with_exit_4_and_a_rerun_completes(
    tmp_path, s3_bucket, staging, monkeypatch, images_per_part
):
    name, fs = s3_bucket
    root, url = f"{name}/cams", f"s3://{name}/cams"
    original = StagedOut._put_part

    def refuse(self, part):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(StagedOut, "_put_part", refuse)
    with pytest.raises(OutputUnwritable, match="access denied") as failed:
        run(RunConfig.create(PHOTOS, url, workers=0, images_per_part=images_per_part))
    assert failed.value.exit_code == 4 and "a rerun of the same command redoes the rest" in str(failed.value)
    assert not fs.find(f"{root}/report")
    record = json.loads(fs.cat_file(fs.find(f"{root}/runs")[0]))
    assert record["status"] == "failed"  # the final manifest still goes up
    assert list(staging.iterdir()) == []

    monkeypatch.setattr(StagedOut, "_put_part", original)
    done = run(RunConfig.create(PHOTOS, url, workers=0, images_per_part=images_per_part))
    assert (done.processed, done.skipped) == (len(PHOTOS), 0)
    rows = _rows_on_store(fs, root)
    assert rows.groupby("path").size().to_dict() == {p.name: 3 for p in PHOTOS}
    assert set(rows["overlay_path"]) <= _overlays_on_store(fs, root)


def test_an_out_that_cannot_be_written_is_one_line_with_exit_2_before_any_work(
    tmp_path, s3_bucket, s3_server, monkeypatch
):
    name, _ = s3_bucket
    monkeypatch.chdir(tmp_path)
    for url, why in [("s3://no-bucket-here/cams", "no such object or prefix"), (f"s3://{name}/cams", "no credentials")]:
        if why == "no credentials":
            aws_env(monkeypatch, s3_server, credentials=False)
        result = CliRunner().invoke(app, ["run", str(PHOTOS[0]), "--out", url])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(f"cambatch: error: cannot write {url}") and why in lines[0]
    assert list(tmp_path.iterdir()) == []  # not a folder called `s3:` beside the photos


def test_a_gallery_needs_a_local_out_and_a_file_url_is_the_local_folder(tmp_path):
    with pytest.raises(UsageError, match="gallery"):
        RunConfig.create(SAMPLES, "s3://b/cams", gallery=True)
    assert RunConfig.create(SAMPLES, f"file://{tmp_path}/cams").out == tmp_path / "cams"
    assert RunConfig.create(SAMPLES, "s3://b/cams/").out == "s3://b/cams"


def _staged_part(staged: StagedOut, name: str, rows: int) -> None:
    staged.layout.report_dir.mkdir(parents=True, exist_ok=True)
    empty = pa.table({c: pa.nulls(rows, SCHEMA.field(c).type) for c in SCHEMA.names}, schema=SCHEMA)
    pq.write_table(empty, staged.layout.report_dir / name)


def test_a_store_without_whole_object_uploads_gets_each_part_under_a_dot_name_then_moved(tmp_path, monkeypatch):
    target = tmp_path / "store" / "cams"
    moves = []
    with StagedOut(f"file://{target}") as staged:
        assert not staged._whole_objects()
        monkeypatch.setattr(staged.fs, "mv", lambda a, b: (moves.append((a, b)), shutil.move(a, b)))
        _staged_part(staged, "part-a-00000.parquet", 2)
        staged.push()
        staged.finish()
        staging = staged.staging
    assert [p.name for p in (target / "report").iterdir()] == ["part-a-00000.parquet"]
    assert moves == [(f"{target}/report/.part-a-00000.parquet.tmp", f"{target}/report/part-a-00000.parquet")]
    assert not staging.exists()


def test_pull_takes_only_published_parts_and_a_purge_that_empties_a_part_deletes_it(tmp_path):
    target = tmp_path / "store" / "cams"
    (target / "report").mkdir(parents=True)
    layout = OutputLayout(target)
    for name in ("part-a-00000.parquet", ".part-b-00000.parquet.tmp", "_common_metadata"):
        (layout.report_dir / name).write_bytes(b"x")
    with StagedOut(f"file://{target}") as staged:
        assert sorted(p.name for p in staged.layout.report_dir.iterdir()) == ["part-a-00000.parquet"]
        (staged.layout.report_dir / "part-a-00000.parquet").unlink()  # what a purge does to an emptied part
        staged.push()
    assert sorted(p.name for p in layout.report_dir.iterdir()) == [".part-b-00000.parquet.tmp", "_common_metadata"]


def test_a_killed_runs_staging_folder_is_swept_and_a_live_or_new_one_is_kept(tmp_path, staging):
    an_hour_ago = time.time() - 3600
    dead = staging / f"{STAGING_PREFIX}dead"
    (dead / "overlays").mkdir(parents=True)
    (dead / STAGING_LOCK).write_text("")  # nobody holds it: its run was killed
    young = staging / f"{STAGING_PREFIX}young"
    young.mkdir()  # made a moment ago: its run may not have taken its lock yet
    live = StagedOut(f"file://{tmp_path}/store")
    for folder in (dead, live.staging):
        os.utime(folder, (an_hour_ago, an_hour_ago))
    try:
        assert sweep() == [dead]
        assert live.staging.is_dir() and young.is_dir() and not dead.exists()
    finally:
        live.close()
    assert not live.staging.exists()


def test_a_store_that_goes_away_mid_run_is_one_line_and_exit_4_and_a_rerun_completes(
    tmp_path, s3_bucket, s3_server, staging, monkeypatch
):
    from conftest import make_folder
    from proxy_support import Proxy

    name, fs = s3_bucket
    host, port = s3_server.removeprefix("http://").split(":")
    proxy = Proxy((host, int(port)))
    names = make_folder(tmp_path / "photos", 24)
    url, root = f"s3://{name}/cams", f"{name}/cams"
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    env["TMPDIR"] = str(staging)
    args = [sys.executable, "-m", "cambatch", "run", str(tmp_path / "photos"), "--out", url, "--workers", "0"]
    args += ["--images-per-part", "2", "--topk", "1", "--quiet"]
    started = time.monotonic()
    driver = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not fs.find(f"{root}/report") and driver.poll() is None:  # the store is written to, then it goes away
        fs.invalidate_cache()
        time.sleep(0.2)
    proxy.stop()
    out, err = driver.communicate(timeout=300)
    lines = (out + err).strip().splitlines()
    assert driver.returncode == 4, out + err
    assert len(lines) == 1 and lines[0].startswith(f"cambatch: error: cannot write {url}: endpoint unreachable"), lines
    assert time.monotonic() - started < 240

    proxy = proxy.restart()
    try:
        fs.invalidate_cache()
        for part in fs.find(f"{root}/report"):  # nothing half-published: every part on the store reads whole
            pq.read_metadata(fs.open(part))
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
        fs.invalidate_cache()
        records = [json.loads(fs.cat_file(p)) for p in fs.find(f"{root}/runs")]
        assert sorted(r["status"] for r in records) == ["completed", "failed"]  # the first one, told once reachable
        rows = _rows_on_store(fs, root)
        assert sorted(rows["path"]) == sorted(names)  # every image once
    finally:
        proxy.stop()


def test_a_killed_runs_spooled_manifest_goes_up_as_died_with_the_next_run_and_a_live_ones_stays(tmp_path, staging):
    from cambatch.runner.remote_out import pending_root

    url = f"file://{tmp_path}/store/cams"
    running = {"run_id": "20260101T000000Z-dead00", "status": "running"}
    for folder in ("cambatch-out-killed", "cambatch-out-live"):
        (pending_root(url) / folder).mkdir(parents=True)
        (pending_root(url) / folder / f"{folder}.json").write_text(json.dumps(running))
    live = staging / "cambatch-out-live"
    live.mkdir()
    from cambatch.runner.lock import OutputLock

    held = OutputLock(live / STAGING_LOCK).acquire()  # a run still going: its manifest is its own to send
    try:
        with StagedOut(url):
            pass
    finally:
        held.release()
    sent = {p.name: json.loads(p.read_text())["status"] for p in (tmp_path / "store" / "cams" / "runs").iterdir()}
    assert sent == {"cambatch-out-killed.json": "died"}
    assert [p.name for p in pending_root(url).iterdir()] == ["cambatch-out-live"]
