"""`cambatch.runner.read_ahead`: decoding started before torch is imported, only where the job can be told."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import PHOTOS, SAMPLES

from cambatch.config import RunConfig
from cambatch.data import loader
from cambatch.runner import read_ahead, tuning
from cambatch.runner.inputs import find_sources

pytestmark = pytest.mark.skipif(not loader.available(), reason="the pool needs memfd and descriptor passing (Linux)")


def started(tmp_path, **options):
    config = RunConfig.create([SAMPLES], tmp_path / "out", device="cpu", **options)
    sources = find_sources(config, config.out)
    pool = read_ahead.start(config, sources, tmp_path / "out" / "report")
    if pool is not None:
        pool.close()
    return pool, config, sources


def test_a_fresh_cpu_run_of_the_default_model_starts_the_pool_the_engine_would_build(tmp_path):
    from cambatch.runner.job import build_stages, preprocess

    pool, config, sources = started(tmp_path, image_size=160, max_side=300)
    stages = build_stages(config)
    plan = stages.plan
    assert pool.serves(sources, preprocess(config, stages), batch_size=plan.batch_size, workers=plan.workers)


@pytest.mark.parametrize(
    "options",
    [
        {"model": "resnet18", "weights": "none"},  # its input is known once it is built
        {"engine": "ray"},
        {"device": "cuda"},
        {"workers": 0},  # nothing to overlap
    ],
)
def test_where_the_job_cannot_be_told_without_torch_nothing_starts(tmp_path, options):
    config = RunConfig.create([SAMPLES], tmp_path / "out", **{"device": "cpu", **options})
    assert read_ahead.start(config, find_sources(config, config.out), tmp_path / "out" / "report") is None


def test_a_resume_waits_for_the_report_but_overwrite_starts_at_once(tmp_path):
    report = tmp_path / "out" / "report"
    report.mkdir(parents=True)
    (report / "part-20250101T000000Z-abcdef-00000.parquet").write_bytes(b"PAR1")
    assert started(tmp_path)[0] is None
    assert started(tmp_path, overwrite=True)[0] is not None


def test_the_read_ahead_bound_is_a_sixteenth_of_the_memory_a_cgroup_leaves_and_512_mib_at_most(tmp_path):
    cgroup = tmp_path / "memory.max"
    machine = tuning.memory_limit(tmp_path / "absent")
    assert machine == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cgroup.write_text("max\n")
    assert tuning.memory_limit(cgroup) == machine
    cgroup.write_text("1073741824\n")  # a 1 GiB container
    assert tuning.memory_limit(cgroup) == min(machine, 1 << 30)
    assert tuning.read_ahead_bytes(1 << 30) == 64 << 20
    assert tuning.read_ahead_bytes(64 << 30) == tuning.READ_AHEAD_MAX == 512 << 20


PROBE = """
import json, sys
from cambatch.data import loader
seen = {}
start = loader.DecodePool.__init__
def recording(self, *args, **kwargs):
    seen.setdefault("torch_when_started", []).append("torch" in sys.modules)
    start(self, *args, **kwargs)
serves = loader.DecodePool.serves
def judged(self, *args, **kwargs):
    seen.setdefault("served", []).append(serves(self, *args, **kwargs))
    return seen["served"][-1]
loader.DecodePool.__init__, loader.DecodePool.serves = recording, judged
from cambatch.config import RunConfig
from cambatch.runner.pipeline import run
result = run(RunConfig.create([sys.argv[1]], sys.argv[2], device="cpu", workers=1, topk=1))
print(json.dumps({**seen, "ok": result.ok}))
"""


def test_a_run_decodes_before_torch_is_imported_and_its_engine_goes_on_with_that_pool(tmp_path):
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(SAMPLES), str(tmp_path / "out")], capture_output=True, text=True, check=True
    )
    seen = json.loads(probe.stdout.splitlines()[-1])
    assert seen == {"torch_when_started": [False], "served": [True], "ok": len(PHOTOS)}
