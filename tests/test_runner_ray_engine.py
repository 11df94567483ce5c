"""`cambatch.runner.ray_engine`: `--engine ray` on a local Ray (2 CPUs, started and stopped here).

The same rows as the plain engine on the sample photos; a driver killed with SIGKILL, then a rerun:
every image exactly once, the finished parts kept; a missing Ray is one line and exit 2.
"""

from __future__ import annotations

import gc
import json
import logging
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray
import torch
from conftest import FAKE_CREDENTIALS, SAMPLES, make_folder
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.config import RunConfig
from cambatch.layout import ImageNames, OutputLayout
from cambatch.report.parts import part_settings, published_parts
from cambatch.runner.engine import CamEngine
from cambatch.runner.job import build_stages, image_writer, preprocess
from cambatch.runner.pipeline import run
from cambatch.runner.ray_decode import decode_batch
from cambatch.runner.ray_engine import CamActor, settle
from cambatch.sources.discover import discover
from cambatch.sources.shard import parse_shard

SAME = ["path", "rank", "class_index", "class_name", "status", "width", "height", "overlay_path", "input_root"]
CLOSE = ["probability", "logit", "cam_max", "cam_mean", "peak_x", "peak_y", "bbox_x0", "border_energy", "entropy"]


@pytest.fixture(scope="module")
def ray_address(s3_server):
    """A local Ray for this module's tests: small object store, no dashboard; its workers reach the local S3
    server with the fake keys (on a cluster, the nodes' own credentials: an instance role, or the job's env_vars).
    """
    env_vars = {"AWS_ENDPOINT_URL": s3_server, "AWS_EC2_METADATA_DISABLED": "true", **FAKE_CREDENTIALS}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 2**20,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": env_vars},
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def driver_after_two_parts(args: list[str], out: Path, *, timeout: float) -> subprocess.Popen:
    """`cambatch run ARGS` in a subprocess, returned once its report holds two published parts (mid-run)."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "cambatch", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    while len(published_parts(out / "report")) < 2:
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "no part was published in time"
        time.sleep(0.05)
    return driver


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "report").sort_values(["path", "rank"]).reset_index(drop=True)


def test_ray_gives_the_plain_engines_rows_and_overlays(ray_address, sample_run, tmp_path):
    plain = sample_run[0]  # the plain engine over the sample photos
    result = run(RunConfig.create([SAMPLES], tmp_path / "ray", engine="ray", batch_size=4))
    assert (result.ok, result.errors, result.overlays) == (plain.ok, plain.errors, plain.overlays) == (7, 0, 21)
    expected, got = _rows(plain.out), _rows(tmp_path / "ray")
    pd.testing.assert_frame_equal(got[SAME], expected[SAME])
    np.testing.assert_allclose(got[CLOSE].to_numpy(float), expected[CLOSE].to_numpy(float), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack(got["map"]), np.stack(expected["map"]), rtol=1e-3, atol=1e-3)
    assert all((tmp_path / "ray" / p).is_file() for p in got.overlay_path)
    parts = published_parts(tmp_path / "ray" / "report")
    assert parts and all("-w" in p.name for p in parts)  # written by the actors, each under its own name
    assert {part_settings(p)["device"] for p in parts} == {"cpu"}
    manifest = json.loads((tmp_path / "ray" / "runs" / f"{result.run_id}.json").read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["ok"] == 7
    again = run(RunConfig.create([SAMPLES], tmp_path / "ray", engine="ray"))
    assert (again.skipped, again.processed) == (7, 0)  # resumed: nothing to do


def test_ray_into_an_s3_out_gives_the_plain_rows_with_each_actor_uploading_its_parts(
    ray_address, s3_bucket, sample_run
):
    name, fs = s3_bucket
    url = f"s3://{name}/cams"
    result = run(RunConfig.create([SAMPLES], url, engine="ray", batch_size=4, images_per_part=2))
    assert (result.ok, result.overlays, result.out) == (7, 21, url)
    expected = _rows(sample_run[0].out)  # the plain engine over the sample photos
    got = cambatch.load_report(url, maps=True).sort_values(["path", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[SAME].astype(object), expected[SAME].astype(object))
    np.testing.assert_allclose(got[CLOSE].to_numpy(float), expected[CLOSE].to_numpy(float), rtol=1e-5, atol=1e-6)
    assert set(got.overlay_path) == {p[len(name) + len("/cams/") :] for p in fs.find(f"{name}/cams/overlays")}
    (manifest,) = fs.find(f"{name}/cams/runs")
    record = json.loads(fs.cat_file(manifest))
    on_store = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{name}/cams/report"))
    assert record["status"] == "completed" and record["parts"] == on_store and all("-w" in p for p in on_store)
    again = run(RunConfig.create([SAMPLES], url, engine="ray"))
    assert (again.skipped, again.processed) == (7, 0)


def test_a_driver_killed_with_sigkill_then_a_rerun_gives_every_image_exactly_once(ray_address, tmp_path):
    names = make_folder(tmp_path / "photos", 16)
    out = tmp_path / "out"
    args = [str(tmp_path / "photos"), "--out", str(out), "--engine", "ray", "--images-per-part", "2"]
    args += ["--batch-size", "2", "--topk", "2", "--quiet"]
    driver = driver_after_two_parts([*args, "--ray-address", ray_address], out, timeout=120)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first = pd.read_parquet(out / "report")
    assert 0 < first.path.nunique() < len(names)

    rerun = run(RunConfig.create([tmp_path / "photos"], out, engine="ray", topk=2, images_per_part=2))
    assert rerun.skipped == first.path.nunique() and rerun.processed == len(names) - rerun.skipped
    df = pd.read_parquet(out / "report")
    assert sorted(df.path.unique()) == names
    assert (df.groupby("path").size() == 2).all() and not df.duplicated(["path", "rank"]).any()
    assert set(df[df.path.isin(first.path)].run_id) == set(first.run_id)  # finished work was not redone
    for part in published_parts(out / "report"):
        pq.read_metadata(part)  # every published part is whole
    assert not [p.name for p in (out / "report").iterdir() if p.name.endswith(".tmp")]  # no half part left
    assert all((out / p).is_file() for p in df.overlay_path)


def test_without_ray_the_run_is_refused_in_one_line_with_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = CliRunner().invoke(app, ["run", str(SAMPLES), "--out", str(tmp_path / "out"), "--engine", "ray"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'cambatch[ray]'" in lines[0], result.output
    assert not (tmp_path / "out").exists()  # before any work


def test_an_actor_forwards_at_its_thread_count_on_any_calling_thread_and_publishes_when_dropped(tmp_path, monkeypatch):
    # Ray runs an actor's calls on a pool of threads, and OpenMP keeps a thread count per thread: a count
    # set only in the constructor never reaches the forwards.
    config = RunConfig.create([SAMPLES], tmp_path / "out", engine="ray", threads=1, batch_size=2)
    stages = build_stages(config)
    layout = OutputLayout(tmp_path / "out")
    layout.root.mkdir()
    writer = image_writer(
        config, stages, layout, "20261202T000000Z-abcdef", truth=None, names=ImageNames(), problems=[]
    )
    actors = [CamActor(config=config, settings={}, writer=writer, shard=parse_shard(config.source.shard).tag)]
    sources = discover([SAMPLES])[:2]
    columns = decode_batch(
        {"source": np.array([pickle.dumps(s) for s in sources], dtype=object)}, preprocess(config, stages)
    )
    seen, results = [], []
    forward = CamEngine.__call__

    def recording(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return forward(self, *args, **kwargs)

    def ray_pool_thread():
        torch.set_num_threads(3)  # this thread's own count, as a pool thread may have
        try:
            results.append(actors[0](columns))
        finally:
            torch.set_num_threads(1)

    monkeypatch.setattr(CamEngine, "__call__", recording)
    caller = threading.Thread(target=ray_pool_thread)
    caller.start()
    caller.join()
    assert seen == [1] and results[0]["ok"] == [2]
    actors.clear()  # as Ray Data retires it: the last reference goes, and the actor publishes at once, no collector
    (part,) = published_parts(layout.report_dir)
    assert pq.read_metadata(part).num_rows == results[0]["rows"][0] > 0


def test_a_quiet_run_interrupted_by_sigint_prints_only_its_summary_and_records_what_its_parts_hold(
    ray_address, tmp_path
):
    # Enough images that the signal lands mid-run: in-flight batches finish first, and with a converted runtime
    # (OpenVINO) sixteen images were all done by the time the signal was handled.
    names = make_folder(tmp_path / "photos", 64)
    out = tmp_path / "out"
    args = [str(tmp_path / "photos"), "--out", str(out), "--engine", "ray", "--images-per-part", "2"]
    args += ["--batch-size", "2", "--topk", "2", "--quiet", "--ray-address", ray_address]
    driver = driver_after_two_parts(args, out, timeout=300)
    driver.send_signal(signal.SIGINT)
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 130, stderr
    lines = (stdout + stderr).strip().splitlines()
    assert lines[0].startswith("cambatch: ") and "interrupted by SIGINT" in lines[1], lines
    assert all(line.startswith(("cambatch: ", "  ")) for line in lines), lines  # no line of Ray's own
    (manifest,) = (out / "runs").glob("*.json")
    record = json.loads(manifest.read_text())
    published = pd.read_parquet(out / "report")
    assert record["status"] == "interrupted" and 0 < published.path.nunique() < len(names)
    assert record["counts"]["ok"] == published.path.nunique() and record["counts"]["error"] == 0


def test_settle_waits_for_ray_datas_threads_and_collects_cycles_before_ray_shuts_down():
    """What `connected` does before `ray.shutdown()`: a thread of Ray Data's executor that outlived its 2 s join
    is waited for, another thread is not, and objects in reference cycles (Ray's own, in a run) are freed now."""
    executor = threading.Thread(target=time.sleep, args=(0.5,), name="StreamingExecutor-dataset_1", daemon=True)
    other = threading.Thread(target=time.sleep, args=(30,), name="ours", daemon=True)
    freed = threading.Event()

    class Cycle:
        def __del__(self):
            freed.set()

    gc.disable()  # only settle's collection may free the cycle
    try:
        cycle = Cycle()
        cycle.me = cycle
        del cycle
        executor.start()
        other.start()
        started = time.monotonic()
        settle(timeout=10)
        assert freed.is_set()
    finally:
        gc.enable()
    assert not executor.is_alive() and other.is_alive() and time.monotonic() - started < 5
