"""The Python API: `cambatch.run` (`cambatch.api`), and that `import cambatch` stays cheap."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import SAMPLES

import cambatch
from cambatch.api import TqdmProgress
from cambatch.errors import UsageError


def test_import_cambatch_and_its_cli_load_neither_torch_nor_pandas():
    code = "import sys, cambatch, cambatch.cli; print(sorted(m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules))"  # noqa: E501
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
    assert {"run", "load_report", "load_map", "summarize_report", "compare_runs", "build_gallery"} <= set(dir(cambatch))
    with pytest.raises(AttributeError):
        cambatch.no_such_thing  # noqa: B018


def test_run_returns_the_result_draws_a_tqdm_bar_and_builds_the_gallery(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee.png", "chelsea.png"):
        shutil.copy(SAMPLES / name, photos / name)
    stream = io.StringIO()
    result = cambatch.run(photos, tmp_path / "out", topk=2, workers=0, progress=TqdmProgress(file=stream), gallery=True)
    assert (result.images, result.ok, result.errors, result.overlays) == (2, 2, 0, 4)  # 2 images x top-2
    assert "2/2" in stream.getvalue()  # the bar reached the end
    df = cambatch.load_report(result.out)
    assert len(df) == 4 and df.attrs["run_id"] == result.run_id
    assert (result.out / "gallery" / "index.html").is_file()


def test_bad_options_are_refused_before_any_work(tmp_path):
    with pytest.raises(TypeError, match="unknown option\\(s\\) top_k; cambatch.run takes: .*topk"):
        cambatch.run(SAMPLES, tmp_path / "out", top_k=3)
    with pytest.raises(UsageError, match="topk \\(--topk\\) must be at least 1"):
        cambatch.run(SAMPLES, tmp_path / "out", topk=0)
    assert not (tmp_path / "out").exists()


def test_run_builds_the_config_picks_the_reporter_and_the_gallery(tmp_path, monkeypatch):
    """`cambatch.run` is a thin layer: what it hands the pipeline, and when it builds the gallery."""
    from cambatch.runner import pipeline
    from cambatch.runner.progress import SilentProgress

    calls, galleries = [], []

    def fake_run(config, reporter):
        calls.append((config, reporter))
        return SimpleNamespace(out=config.out, interrupted="SIGINT" if config.maps.topk == 9 else None)

    monkeypatch.setattr(pipeline, "run", fake_run)
    monkeypatch.setattr("cambatch.inspection.gallery.build_gallery", galleries.append)
    custom = object()
    cambatch.run(SAMPLES, tmp_path / "a", topk=2, classes="tabby, 281")
    cambatch.run([SAMPLES], tmp_path / "b", progress=False, gallery=True)
    cambatch.run(None, tmp_path / "c", from_list=tmp_path / "list.txt", progress=custom, topk=9, gallery=True)
    (a, bar), (b, silent), (c, given) = calls
    assert isinstance(bar, TqdmProgress) and isinstance(silent, SilentProgress) and given is custom
    assert a.inputs == (SAMPLES,) and a.maps.topk == 2 and a.maps.classes == ("tabby", "281")
    assert b.out == tmp_path / "b" and c.inputs == () and c.source.from_list == tmp_path / "list.txt"
    assert galleries == [tmp_path / "b"]  # asked for and not interrupted


def test_tqdm_progress_before_start_and_after_stop():
    stream = io.StringIO()
    bar = TqdmProgress(file=stream, mininterval=0)
    bar.advance(3)  # before start: nothing to update
    bar.stop()
    assert stream.getvalue() == ""
    bar.start(4)
    bar.advance(4)
    bar.stop()
    assert "4/4" in stream.getvalue() and "cambatch" in stream.getvalue()
