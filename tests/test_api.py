"""The Python API: `cambatch.run`, `load_report`, `load_map`, and that `import cambatch` stays cheap."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import SAMPLES

import cambatch
from cambatch.api import TqdmProgress
from cambatch.report import reader


def test_import_cambatch_and_its_cli_load_neither_torch_nor_pandas():
    code = "import sys, cambatch, cambatch.cli; print(sorted(m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules))"  # noqa: E501
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
    assert {"run", "load_report", "load_map", "summarize_report", "compare_runs", "build_gallery"} <= set(dir(cambatch))
    with pytest.raises(AttributeError):
        cambatch.no_such_thing  # noqa: B018


def test_load_report_has_typed_columns_and_run_settings(sample_run):
    result, raw = sample_run
    df = cambatch.load_report(result.out)
    assert len(df) == len(raw) == 21
    for column in ("class_name", "status", "model", "method", "run_id"):
        assert isinstance(df[column].dtype, pd.CategoricalDtype), column
    assert list(df["status"].cat.categories) == ["error", "ok"]
    assert df["rank"].dtype == "Int16" and df["class_index"].dtype == "Int32"
    assert df["probability"].dtype == np.float32
    # Same values as a plain read, row for row.
    key = ["path", "rank"]
    a, b = df.sort_values(key).reset_index(drop=True), raw.sort_values(key).reset_index(drop=True)
    assert list(a["class_name"].astype(str)) == list(b["class_name"])
    np.testing.assert_array_equal(a["border_energy"].to_numpy(), b["border_energy"].to_numpy())
    # Settings from the Parquet metadata.
    assert df.attrs["model"] == "efficientnet_lite0"
    assert df.attrs["run_id"] == result.run_id and df.attrs["run_ids"] == [result.run_id]
    assert len(df.attrs["class_names"]) == 1000 and df.attrs["topk"] == 3


def test_load_report_filters_and_columns_are_applied_by_pyarrow(sample_run):
    result, raw = sample_run
    top = cambatch.load_report(result.out, status="ok", rank=1, columns=["path", "class_name", "probability"])
    assert list(top.columns) == ["path", "class_name", "probability"]  # filter columns not added
    expected = raw[(raw.status == "ok") & (raw["rank"] == 1)]
    assert sorted(top["path"]) == sorted(expected["path"])
    assert dict(zip(top["path"], top["class_name"].astype(str), strict=True)) == dict(
        zip(expected["path"], expected["class_name"], strict=True)
    )

    two = cambatch.load_report(result.out, rank=[1, 2])
    assert len(two) == 14 and set(two["rank"]) == {1, 2}
    confident = cambatch.load_report(result.out, where=ds.field("probability") > 0.5)
    assert sorted(confident["path"]) == sorted(raw.loc[raw.probability > 0.5, "path"])
    assert len(cambatch.load_report(result.out, status="error")) == 0
    with pytest.raises(KeyError, match="no column 'nope'"):
        cambatch.load_report(result.out, columns=["path", "nope"])
    with pytest.raises(FileNotFoundError, match="no cambatch report"):
        cambatch.load_report(result.out / "missing")


def test_load_map_returns_the_raw_map_kept_in_the_report(sample_run):
    result, raw = sample_run
    assert not (result.out / "maps").exists()  # no other file: the report holds the maps
    for row in raw.itertuples():
        m = cambatch.load_map(result.out, row.path, row.class_index)
        assert m.dtype == np.float32 and m.ndim == 2
        # Stored as float16: the report's statistics of the raw map hold to that precision.
        assert m.max() == pytest.approx(row.cam_max, rel=2e-3, abs=2e-2)
        assert m.mean() == pytest.approx(row.cam_mean, rel=2e-3, abs=2e-2)
    with pytest.raises(KeyError, match="has maps for classes"):
        cambatch.load_map(result.out, "coffee.png", 999_999)
    with pytest.raises(KeyError, match="no processed image"):
        cambatch.load_map(result.out, "nope.png", 1)


def test_per_image_takes_top1_and_the_newest_run_of_a_repeated_image():
    df = pd.DataFrame(
        {
            "path": ["a.jpg", "a.jpg", "a.jpg", "b.jpg", "c.jpg"],
            "rank": [1, 2, 1, 1, None],
            "class_name": ["old", "x", "new", "cat", None],
            "status": ["ok", "ok", "ok", "ok", "error"],
            "run_id": [
                "20250101T000000Z-a",
                "20250101T000000Z-a",
                "20250102T000000Z-b",
                "20250101T000000Z-a",
                "20250101T000000Z-a",
            ],
            "label": ["New", "New", "New", "dog", None],
        }
    )
    top = reader.per_image(df)
    assert list(top["path"]) == ["a.jpg", "b.jpg"]
    assert list(top["class_name"]) == ["new", "cat"]
    assert list(top["correct"]) == [True, False]  # derived: names compared case-insensitively


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
