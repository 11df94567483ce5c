"""`cambatch.bias.reliance`: occluding where a class's maps peak hurts a stamp-driven class far more than a random
box does, and a class whose object moves no more; off the object, only the stamp class loses; the model is rebuilt
from the run's settings or refused in one line; forward passes are batched."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from bias_support import keys_of_the_path_alone
from typer.testing import CliRunner

from cambatch.bias import reliance as module
from cambatch.bias.options import RelianceOptions
from cambatch.bias.reliance import rebuild_model, reliance_run
from cambatch.cli import app
from cambatch.errors import UsageError
from cambatch.report.schema import METADATA_KEY, table

runner = CliRunner()


@pytest.fixture(scope="module")
def measured(planted_slice):
    out, kinds = planted_slice
    with keys_of_the_path_alone():
        return reliance_run(out, device="cpu"), kinds


def test_the_stamp_class_relies_on_its_place_and_the_moving_object_class_does_not(measured):
    found, _ = measured
    classes = found.classes
    assert classes.loc["red_ball", "reliance_ratio"] >= 3 and classes.loc["red_ball", "relies_on_place"]
    assert classes.loc["green_ball", "reliance_ratio"] <= 1.5 and not classes.loc["green_ball", "relies_on_place"]
    assert classes.loc["red_ball", "reliance_z"] >= RelianceOptions().min_z
    # The region of red_ball's mean map is the stamp's corner; green_ball's is wherever its discs happened to pile up.
    assert classes.loc["red_ball", "region_x1"] <= 0.35 and classes.loc["red_ball", "region_y1"] <= 0.35


def test_with_boxes_only_the_stamp_class_relies_off_its_object(measured):
    found, kinds = measured
    classes = found.classes
    assert classes.loc["red_ball", "relies_off_object"] and "relies-off-object" in classes.loc["red_ball", "flags"]
    assert not classes.loc["green_ball", "relies_off_object"] and classes.loc["green_ball", "flags"] == ""
    images = found.images.assign(kind=lambda f: f["path"].map(kinds))
    stamped = images[images["kind"] == "stamped"]
    assert (stamped["off_object_drop"] > 0.5).all()  # the hottest place off the disc is the stamp
    assert (images.loc[images["kind"] == "green_ball", "off_object_drop"] < 0.05).all()


def test_per_image_rows_hold_the_boxes_and_probabilities_and_match_the_report(measured):
    found, kinds = measured
    images = found.images
    assert len(images) == len(kinds) and images["annotated"].all() and found.meta["skipped"] == 0
    assert (images["p"] - images["probability"]).abs().max() < 1e-3  # the rebuilt model is the run's
    assert ((images["region_x1"] > images["region_x0"]) & (images["off_x1"] > images["off_x0"])).all()
    for column in ("region_drop", "control_drop", "off_object_drop"):
        assert images[column].between(0, 1).all(), column
    assert found.meta["occluder"] == "blur_fill" and found.meta["images_per_class"] == 100


def test_forward_passes_are_batched_with_every_occluded_copy(planted_slice, monkeypatch):
    out, _ = planted_slice
    calls = []
    forward = module.Execution.forward

    def counted(self, network, x):
        calls.append(len(x))
        return forward(self, network, x)

    monkeypatch.setattr(module.Execution, "forward", counted)
    found = reliance_run(out, ["green_ball"], options=RelianceOptions(batch_size=32), device="cpu")
    assert len(found.images) == 90 and len(calls) == 3  # ceil(90 / 32) passes, not one per image
    assert calls[0] == 32 * (3 + module.CONTROLS)  # the image, its region, its controls, off its object


def test_controls_are_seeded_and_a_smaller_sample_is_a_subset(planted_slice):
    out, _ = planted_slice
    first = reliance_run(out, ["green_ball"], options=RelianceOptions(images_per_class=20), device="cpu")
    again = reliance_run(out, ["green_ball"], options=RelianceOptions(images_per_class=20), device="cpu")
    pd.testing.assert_frame_equal(first.images, again.images)
    assert len(first.images) == 20 and first.images["path"].is_unique


def test_the_command_prints_and_writes_per_image_rows(planted_slice, tmp_path):
    out, kinds = planted_slice
    rows = tmp_path / "rows.parquet"
    result = runner.invoke(
        app, ["reliance", str(out), "--classes", "red_ball,Green Ball", "--format", "json", "--out", str(rows)]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [r["class"] for r in printed["rows"]] == ["red_ball", "green_ball"]
    assert printed["meta"]["ratio"] == RelianceOptions().ratio
    assert len(pd.read_parquet(rows)) == 30 + 90
    unknown = runner.invoke(app, ["reliance", str(out), "--classes", "purple_ball"])
    assert unknown.exit_code == 2 and "purple_ball" in unknown.output


def _report_with_settings(folder, **settings):
    folder.mkdir(parents=True)
    rows = table({"path": ["a.png"], "status": ["ok"], "rank": [1]}, 1)
    record = {"run_id": "20250101T000000Z-aaaaaa", "model": "resnet18", "input_size": 64, **settings}
    pq.write_table(rows.replace_schema_metadata({METADATA_KEY: json.dumps(record).encode()}), folder / "part.parquet")
    return folder.parent


def test_a_run_whose_model_cannot_be_rebuilt_is_refused_in_one_line(tmp_path):
    gone = _report_with_settings(tmp_path / "gone" / "report", weights=str(tmp_path / "missing.pt"))
    refused = runner.invoke(app, ["reliance", str(gone)])
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1 and "weights file not found" in lines[0]
    with pytest.raises(UsageError, match="random weights"):
        rebuild_model({"model": "resnet18", "weights": "none"})
    with pytest.raises(UsageError, match="no model to rebuild"):
        rebuild_model({})


def test_weights_changed_since_the_run_are_refused(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    with pytest.raises(UsageError, match="changed since the run"):
        rebuild_model({"model": "resnet18", "weights": str(weights), "weights_sha256": "0" * 64})
