"""`cambatch summarize`: its numbers equal a pandas groupby done here; flags follow the documented rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from identity_support import PHOTOS, two_folders_run
from inspecting_support import add_labels, copy_run, set_settings, synthesize_run
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.inspection.summarize import UNLABELLED, Thresholds, summarize

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """400 labelled images over 40 classes, 5 failures."""
    return synthesize_run(tmp_path_factory.mktemp("summarize") / "run", images=400, classes=40, errors=5)


def expected_by(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """The same table computed the plain pandas way, from the rank-1 rows."""
    top = df[(df.status == "ok") & (df["rank"] == 1)]
    return top.groupby(key).agg(
        images=("path", "size"),
        mean_probability=("probability", "mean"),
        active_area=("active_area", "mean"),
        border_energy=("border_energy", "mean"),
        entropy=("entropy", "mean"),
    )


def test_per_class_numbers_equal_a_pandas_groupby(sample_run):
    result, raw = sample_run
    summary = cambatch.summarize_run(result.out)
    expected = expected_by(raw, "class_name")
    table = summary.table.loc[expected.index]
    assert summary.by == "class" and summary.images == 7 and summary.errors == 0
    assert "accuracy" not in summary.table.columns  # no labels in this run
    for column in expected.columns:
        pd.testing.assert_series_equal(table[column], expected[column], check_names=False, check_dtype=False, rtol=1e-6)


def test_flags_follow_the_median_rule_and_thresholds_are_adjustable(sample_run):
    result, raw = sample_run
    top = raw[raw["rank"] == 1]
    median_border, median_area = top.border_energy.median(), top.active_area.median()
    for ratio in (1.5, 1.2):
        summary = cambatch.summarize_run(result.out, thresholds=Thresholds(border_ratio=ratio, spread_ratio=ratio))
        assert summary.median_border_energy == pytest.approx(median_border)
        border = set(top.loc[top.border_energy >= ratio * median_border, "class_name"])
        spread = set(top.loc[top.active_area >= ratio * median_area, "class_name"])
        assert set(summary.table.index[summary.table.border_flag]) == border
        assert set(summary.table.index[summary.table.spread_flag]) == spread
        assert set(summary.flagged.index) == border | spread
    # Stricter thresholds flag no more classes than looser ones.
    assert len(cambatch.summarize_run(result.out, thresholds=Thresholds(3, 3)).flagged) <= len(summary.flagged)


def test_with_labels_groups_by_label_and_reports_accuracy(synthetic):
    df = cambatch.load_report(synthetic)
    summary = summarize(df)
    assert summary.by == "label" and summary.errors == 5 and summary.images == 400
    expected = expected_by(df.astype({"label": str}), "label")
    top = df[(df.status == "ok") & (df["rank"] == 1)].astype({"label": str})
    accuracy = top.groupby("label")["correct"].mean().astype(float)
    pd.testing.assert_series_equal(
        summary.table.loc[expected.index, "images"], expected["images"], check_names=False, check_dtype=False
    )
    pd.testing.assert_series_equal(
        summary.table.loc[accuracy.index, "accuracy"], accuracy, check_names=False, rtol=1e-9
    )
    # Classes with a high index have high border energy by construction: those are flagged.
    flagged = summary.flagged[summary.flagged.border_flag].index
    assert len(flagged) > 0 and min(int(name.split()[1]) for name in flagged) >= 20
    by_class = summarize(df, by="class")
    assert "accuracy" in by_class.table.columns  # precision of each predicted class


def test_labels_added_to_a_real_run_are_used(sample_run, tmp_path):
    result, raw = sample_run
    out = copy_run(result.out, tmp_path / "labelled")
    add_labels(out, {"coffee.png": "espresso", "camera.png": "tripod", "chelsea.png": "tabby"})
    summary = cambatch.summarize_run(out)
    assert summary.by == "label"
    assert summary.table.loc["espresso", "accuracy"] == 1.0
    assert summary.table.loc["tabby", "accuracy"] == (
        raw.query("path == 'chelsea.png' and rank == 1").class_name.item() == "tabby"
    )
    # The images without a label are a group of their own: the table adds up to every image, as its footer does.
    assert summary.table["images"].sum() == summary.images == 7
    assert summary.table.loc[UNLABELLED, "images"] == 4 and np.isnan(summary.table.loc[UNLABELLED, "accuracy"])


def test_cli_formats_top_and_sort(sample_run):
    result, raw = sample_run
    out = str(result.out)
    table = runner.invoke(app, ["summarize", out])
    assert table.exit_code == 0, table.output
    top1 = raw[raw["rank"] == 1]
    assert all(name[:8] in table.output for name in top1.class_name)

    as_json = runner.invoke(app, ["summarize", out, "--format", "json", "--top", "2", "--sort", "border_energy"])
    payload = json.loads(as_json.output)
    highest = top1.sort_values("border_energy", ascending=False).class_name.head(2).tolist()
    assert [row["class"] for row in payload["rows"]] == highest
    assert payload["meta"]["images"] == 7 and payload["meta"]["border_ratio"] == 1.5

    as_csv = runner.invoke(app, ["summarize", out, "--format", "csv", "--border-ratio", "1.1"])
    frame = pd.read_csv(__import__("io").StringIO(as_csv.output), index_col=0)
    assert len(frame) == 7 and frame["images"].sum() == 7
    assert set(frame.index[frame.border_flag]) == set(
        top1.loc[top1.border_energy >= 1.1 * top1.border_energy.median(), "class_name"]
    )


def test_cli_errors_are_one_line_with_exit_2(sample_run, tmp_path):
    no_labels = runner.invoke(app, ["summarize", str(sample_run[0].out), "--by", "label"])
    assert no_labels.exit_code == 2 and "has no labels" in no_labels.output
    missing = runner.invoke(app, ["summarize", str(tmp_path)])
    assert missing.exit_code == 2 and "no complete report part" in missing.output
    bad = runner.invoke(app, ["summarize", str(sample_run[0].out), "--sort", "colour"])
    assert bad.exit_code == 2 and "'colour' is not one of" in bad.output  # typer checks the choice


def small_report(labels: bool) -> pd.DataFrame:
    """Four images, three predicted classes (one image failed), made by hand."""
    df = pd.DataFrame(
        {
            "path": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "bad.jpg"],
            "rank": [1, 1, 1, 1, None],
            "class_name": ["Zebra", "apple", "apple", "mango", None],
            "probability": [0.9, 0.5, 0.7, 0.4, None],
            "active_area": [0.1, 0.2, 0.2, 0.9, None],
            "border_energy": [0.9, 0.1, 0.1, 0.2, None],
            "entropy": [0.5, 0.5, 0.5, 0.5, None],
            "status": ["ok", "ok", "ok", "ok", "error"],
        }
    )
    if labels:
        df["label"] = ["zebra", "apple", "pear", None, None]
    return df


def test_sorting_is_stable_and_by_name_case_blind():
    summary = summarize(small_report(labels=False))
    assert (summary.images, summary.errors, summary.by) == (4, 1, "class")
    assert list(summary.sorted("images").index) == ["apple", "mango", "Zebra"]  # ties by name, case-blind
    assert list(summary.sorted("name").index) == ["apple", "mango", "Zebra"]
    assert list(summary.sorted("border_energy", top=1).index) == ["Zebra"]
    assert summary.table.loc["apple", "mean_probability"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="accuracy needs labels"):
        summary.sorted("accuracy")
    with pytest.raises(ValueError, match="unknown sort key 'colour'"):
        summary.sorted("colour")
    with pytest.raises(ValueError, match="has no labels"):
        summarize(small_report(labels=False), by="label")


def test_flags_name_both_reasons_and_labels_give_accuracy():
    summary = summarize(small_report(labels=False), thresholds=Thresholds(border_ratio=2.0, spread_ratio=2.0))
    # medians over the four images: border_energy 0.15, active_area 0.2
    assert summary.table.loc["Zebra", "flags"] == "border" and summary.table.loc["mango", "flags"] == "spread"
    assert set(summary.flagged.index) == {"mango", "Zebra"}
    assert summary.table.loc["apple", "flags"] == ""
    labelled = summarize(small_report(labels=True))
    assert labelled.by == "label"
    assert labelled.table["images"].to_dict() == {"apple": 1, "pear": 1, "zebra": 1, UNLABELLED: 1}
    accuracy = labelled.table["accuracy"].to_dict()
    assert {k: accuracy[k] for k in ("apple", "pear", "zebra")} == {"apple": 1.0, "pear": 0.0, "zebra": 1.0}
    assert np.isnan(accuracy[UNLABELLED])  # case-blind; no label, no accuracy


def test_off_object_flag_and_ground_truth_columns():
    df = small_report(labels=False)
    df["energy_in_gt"] = [0.1, 0.8, 0.6, np.nan, np.nan]  # d.jpg not annotated
    df["pointing_hit"] = pd.array([False, True, False, None, None], dtype="boolean")
    summary = summarize(df)
    table = summary.table
    assert summary.median_energy_in_gt == pytest.approx(0.6)  # of the annotated images: 0.1, 0.6, 0.8
    assert table.loc["apple", "energy_in_gt"] == pytest.approx(0.7) and table.loc["apple", "pointing_acc"] == 0.5
    assert table.loc["Zebra", "flags"] == "border, off-object"  # 0.1 <= 0.5 x 0.6
    assert not table.loc["apple", "off_object_flag"] and np.isnan(table.loc["mango", "energy_in_gt"])
    assert list(summary.sorted("energy_in_gt").index[:2]) == ["apple", "Zebra"]
    strict = summarize(df, thresholds=Thresholds(off_object_ratio=0.1))
    assert strict.table.loc["Zebra", "flags"] == "border"


def test_no_ground_truth_columns_without_annotations():
    table = summarize(small_report(labels=False)).table
    assert "energy_in_gt" not in table.columns and "off_object_flag" not in table.columns


def test_two_inputs_holding_one_path_count_as_two_images(tmp_path):
    out = two_folders_run(tmp_path, overlays=False)
    summary = cambatch.summarize_run(out)
    assert summary.by == "label" and summary.images == 2
    assert summary.table["images"].to_dict() == {label: 1 for _, label, _ in PHOTOS.values()}
    assert summary.table["accuracy"].to_dict() == {label: 1.0 for _, label, _ in PHOTOS.values()}
    failed = small_report(labels=False).iloc[[4, 4]].assign(input_root=["/in/one", "/in/two"])
    assert summarize(pd.concat([small_report(labels=False).assign(input_root="/in/one"), failed])).errors == 2


def classes_report() -> pd.DataFrame:
    """A `--classes 134,281` run over two labelled images: each explains both classes, at their true ranks."""
    df = pd.DataFrame(
        {
            "path": ["a.jpg", "a.jpg", "b.jpg", "b.jpg"],
            "rank": [5, 1, 2, 7],
            "class_name": ["crane", "tabby", "crane", "tabby"],
            "probability": [0.01, 0.8, 0.3, 0.001],
            "active_area": [0.1, 0.2, 0.3, 0.4],
            "border_energy": [0.1, 0.1, 0.2, 0.2],
            "entropy": [0.5, 0.5, 0.5, 0.5],
            "status": ["ok"] * 4,
            "label": ["tabby", "tabby", "crane", "crane"],
            "correct": pd.array([True, True, None, None], dtype="boolean"),
        }
    )
    df.attrs["classes"] = [134, 281]
    return df


def test_a_classes_run_is_summarized_per_chosen_class_never_as_predictions():
    summary = summarize(classes_report())
    assert summary.by == "class" and summary.chosen_classes and "--classes" in summary.counted
    # Each image counts in every chosen class's group, not once by its best-ranked row.
    assert summary.table["images"].to_dict() == {"crane": 2, "tabby": 2} and summary.images == 2
    assert summary.table.loc["crane", "mean_probability"] == pytest.approx(0.155)
    assert "accuracy" not in summary.table.columns  # no top-1 was predicted, so none was right
    with pytest.raises(ValueError, match="chosen with --classes, not its predictions"):
        summarize(classes_report(), by="label")


def test_the_cli_says_a_classes_run_explains_chosen_classes(sample_run, tmp_path):
    out = copy_run(sample_run[0].out, tmp_path / "classes")
    set_settings(out, classes=[967, 504])
    shown = runner.invoke(app, ["summarize", str(out), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    meta = json.loads(shown.output)["meta"]
    assert meta["by"] == "class" and "chosen with --classes, not predictions" in meta["counted"]
    assert sum(row["images"] for row in json.loads(shown.output)["rows"]) == 21  # every explained row
    refused = runner.invoke(app, ["summarize", str(out), "--by", "label"])
    assert refused.exit_code == 2 and "chosen with --classes" in refused.output
