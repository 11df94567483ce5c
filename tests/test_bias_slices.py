"""`cambatch.bias.slices`: a planted error slice is found, ranked first, and peaks on its stamp; what is kept in
OUT/slices/ reads back; reports slices cannot work on are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bias_support import CLASSES, SIZE, STAMP, keys_of_the_path_alone
from typer.testing import CliRunner

from cambatch.bias import slices as module
from cambatch.bias.slices import find_slices, read_slices, write_slices
from cambatch.cli import app
from cambatch.errors import UsageError

runner = CliRunner()
STAMP_BOX = (STAMP[0] / SIZE[0], STAMP[1] / SIZE[1], (STAMP[2] + 1) / SIZE[0], (STAMP[3] + 1) / SIZE[1])


def precision_at(members: pd.DataFrame, kinds: dict[str, str], k: int = 10) -> float:
    top = members.sort_values("rank").head(k)
    return sum(kinds[p] == "stamped" for p in top["path"]) / k


def test_the_slice_with_the_largest_gap_is_the_planted_one_and_peaks_on_the_stamp(planted_slice):
    out, kinds = planted_slice
    found = find_slices(out)
    first = found.table.loc[1]
    assert first["group"] == "green_ball" and first["predicted"] == "red_ball" and first["label"] == "green_ball"
    assert first["accuracy"] == pytest.approx(0, abs=1e-9) and first["class_accuracy"] == pytest.approx(0.9)
    assert first["accuracy_gap"] == found.table["accuracy_gap"].max()
    members = found.members[found.members["slice"] == 1]
    assert precision_at(members, kinds) >= 0.8
    assert sorted(members["path"]) == sorted(p for p, k in kinds.items() if k == "stamped")  # and nothing else
    assert (members["input_root"] == str(out.parent / "photos")).all()
    x0, y0, x1, y1 = STAMP_BOX
    assert x0 <= first["peak_x"] <= x1 and y0 <= first["peak_y"] <= y1
    mean_map = found.mean_maps[1]
    assert mean_map.shape == (32, 32) and np.unravel_index(mean_map.argmax(), mean_map.shape) == (
        int(first["peak_y"] * 32),
        int(first["peak_x"] * 32),
    )


def test_per_class_figures_and_meta_say_what_was_fitted(planted_slice):
    out, kinds = planted_slice
    found = find_slices(out)
    classes = found.classes
    assert list(classes.index) == sorted(CLASSES) and classes.index.name == "label"
    assert classes.loc["green_ball", "slice_accuracy_gap"] == pytest.approx(0.9)
    assert classes.loc["red_ball", "slice_accuracy_gap"] == 0 and classes.loc["red_ball", "error_slices"] == 0
    assert classes["images"].sum() == len(kinds) and not found.meta["sampled"]
    assert found.meta["pca_components"] == 5 and found.meta["images"] == len(kinds)


def test_by_predicted_class_the_slice_is_what_the_model_wrongly_calls_red(planted_slice):
    out, kinds = planted_slice
    found = find_slices(out, "class")
    first = found.table.loc[1]
    assert (first["group"], first["label"], first["predicted"]) == ("red_ball", "green_ball", "red_ball")
    assert first["class_accuracy"] == pytest.approx(2 / 3) and first["accuracy"] == pytest.approx(0, abs=1e-9)
    assert precision_at(found.members[found.members["slice"] == 1], kinds) == 1


def test_a_sampled_class_is_fitted_on_its_hashed_sample_and_says_so(planted_slice, monkeypatch):
    out, kinds = planted_slice
    monkeypatch.setattr(module, "SAMPLE_PER_CLASS", 60)
    with keys_of_the_path_alone():  # the same sample, and so the same stamped images in it, every session
        found = find_slices(out)
    assert found.meta["sampled"] and found.classes.loc["green_ball", "sampled"] == 60
    assert found.classes.loc["green_ball", "images"] == 100  # counted over every image, not the sample
    first = found.table.loc[1]
    members = found.members[found.members["slice"] == 1]
    assert first["members"] == len(members) < 10 and set(members["path"]) <= {
        p for p, k in kinds.items() if k == "stamped"
    }
    assert first["images"] == pytest.approx(len(members) * 100 / 60)  # scaled up to the class


def test_slices_are_kept_in_out_and_read_back(planted_slice):
    out, _ = planted_slice
    found = find_slices(out, slices=2)
    path = write_slices(out, found)
    assert path == out / "slices" / "slices.json" and (out / "slices" / "members.parquet").is_file()
    record = json.loads(path.read_text())
    assert record["slices"][0]["top_members"][0]["path"] == found.members.iloc[0]["path"]
    back = read_slices(out)
    assert back.by == "label" and back.meta == found.meta
    pd.testing.assert_frame_equal(back.table, found.table, check_exact=False, atol=1e-4, check_dtype=False)
    pd.testing.assert_frame_equal(back.members, found.members, check_dtype=False)
    np.testing.assert_allclose(back.mean_maps[1], found.mean_maps[1], atol=1e-3)
    assert back.classes.loc["green_ball", "slice_accuracy_gap"] == pytest.approx(0.9)


def test_the_command_prints_keeps_and_writes_the_members(planted_slice, tmp_path):
    out, kinds = planted_slice
    result = runner.invoke(app, ["slices", str(out), "--format", "json", "--out", str(tmp_path / "m.parquet")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["meta"]["by"] == "label" and printed["rows"][0]["group"] == "green_ball"
    members = pd.read_parquet(tmp_path / "m.parquet")
    assert precision_at(members[members["slice"] == 1], kinds) >= 0.8
    table = runner.invoke(app, ["slices", str(out)])
    assert table.exit_code == 0 and "green_ball" in table.stdout and "first member" in table.stdout


def test_a_run_without_embeddings_or_labels_is_refused_in_one_line(sample_run):
    result, _ = sample_run
    refused = runner.invoke(app, ["slices", str(result.out)])
    assert refused.exit_code == 2
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "holds no embeddings: rerun it with --embeddings" in lines[0]
    assert "embedding" in pd.read_parquet(result.out / "report").columns  # there, but null: refused all the same


def test_a_run_without_labels_is_refused_in_one_line(planted_slice, tmp_path):
    out, _ = planted_slice
    report = pd.read_parquet(out / "report")
    part = next((out / "report").glob("*.parquet"))
    unlabelled = tmp_path / "report"
    unlabelled.mkdir()
    table = pa.Table.from_pandas(report.assign(label=None, correct=None), preserve_index=False)
    pq.write_table(table.cast(pq.read_schema(part)), unlabelled / part.name)
    with pytest.raises(UsageError, match="has no labelled image"):
        find_slices(tmp_path)
