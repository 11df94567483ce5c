"""`cambatch compare`: a changed top-1, a moved map, images missing or failed in one run, labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from identity_support import two_folders_run
from inspecting_support import add_labels, copy_run, rewrite_report, set_settings
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.inspection.compare import box_iou
from cambatch.report.schema import table

runner = CliRunner()


def _edit(table: pa.Table, path: str, **columns) -> pa.Table:
    """Set `columns` (name -> function of the row dict) on the rows of `path`."""
    rows = table.to_pylist()
    for row in rows:
        if row["path"] == path:
            for name, value in columns.items():
                row[name] = value(row)
    return pa.Table.from_pylist(rows, schema=table.schema)


@pytest.fixture(scope="module")
def runs(sample_run, tmp_path_factory):
    """A = the real run; B = a copy where camera.png's top-2 became its top-1, coffee.png's map moved,
    rocket.jpg failed and hubble_deep_field.jpg is missing."""
    result, _ = sample_run
    b = copy_run(result.out, tmp_path_factory.mktemp("compare") / "b")

    def change(table: pa.Table) -> pa.Table:
        table = _edit(table, "camera.png", rank=lambda r: {1: 2, 2: 1}.get(r["rank"], r["rank"]))
        table = _edit(
            table,
            "coffee.png",
            peak_x=lambda r: r["peak_x"] + 0.3,
            peak_y=lambda r: r["peak_y"] - 0.4,
            bbox_x0=lambda r: r["bbox_x0"] + 0.1,
            bbox_x1=lambda r: r["bbox_x1"] + 0.1,
        )
        table = _edit(table, "rocket.jpg", status=lambda r: "error", error=lambda r: "corrupt or truncated image data")
        rows = table.filter(pc.invert(pc.equal(table["path"], "hubble_deep_field.jpg")))
        # An error row has no class: keep one row for rocket.jpg, as a real run writes.
        rows = rows.to_pylist()
        kept, seen = [], set()
        for row in rows:
            if row["path"] == "rocket.jpg":
                if row["path"] in seen:
                    continue
                seen.add(row["path"])
                row.update(rank=None, class_index=None, class_name=None, probability=None)
            kept.append(row)
        return pa.Table.from_pylist(kept, schema=table.schema)

    rewrite_report(b, change)
    set_settings(b, run_id="20991231T000000Z-bbbbbb", model="efficientnet_lite0-v2")
    return result.out, b


def test_box_iou_of_known_boxes():
    a = np.array([[0, 0, 1, 1], [0, 0, 0.5, 0.5], [0, 0, 0.5, 1], [np.nan, 0, 1, 1]])
    b = np.array([[0, 0, 1, 1], [0.5, 0.5, 1, 1], [0.25, 0, 0.75, 1], [0, 0, 1, 1]])
    np.testing.assert_allclose(box_iou(a, b), [1.0, 0.0, 0.25 / 0.75, np.nan])


def test_detects_the_changed_top1_the_moved_map_and_missing_images(runs, sample_run):
    a, b = runs
    raw = sample_run[1]
    result = cambatch.compare_runs(a, b)
    rows = result.images.set_index("path")
    assert rows.loc["camera.png", "status"] == "both"
    assert rows["top1_changed"].fillna(False).sum() == 1 and rows.loc["camera.png", "top1_changed"]
    second = raw.query("path == 'camera.png' and rank == 2").class_name.item()
    assert rows.loc["camera.png", "class_a"] == "tripod" and rows.loc["camera.png", "class_b"] == second
    # A's top-1 (tripod) is still explained by B at rank 2 with the same map: compared, unmoved.
    assert rows.loc["camera.png", "box_iou"] == pytest.approx(1.0) and rows.loc[
        "camera.png", "peak_shift"
    ] == pytest.approx(0.0)

    coffee = raw.query("path == 'coffee.png' and rank == 1").iloc[0]
    assert rows.loc["coffee.png", "peak_shift"] == pytest.approx(0.5, abs=1e-5)  # hypot(0.3, 0.4)
    box_a = coffee[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].to_numpy(float)
    box_b = box_a + [0.1, 0, 0.1, 0]
    assert rows.loc["coffee.png", "box_iou"] == pytest.approx(box_iou(box_a[None], box_b[None])[0], rel=1e-5)
    assert rows.loc["coffee.png", "box_iou"] < 1

    assert rows.loc["rocket.jpg", "status"] == "error_b" and pd.isna(rows.loc["rocket.jpg", "top1_changed"])
    assert rows.loc["hubble_deep_field.jpg", "status"] == "only_a"
    overview = result.overview()
    assert "fixed" not in overview and "correct_a" not in rows.columns  # no labels in these runs
    assert (overview["compared"], overview["top1_changed"], overview["only_a"], overview["error_b"]) == (5, 1, 1, 1)
    assert overview["run_b"] == "20991231T000000Z-bbbbbb" and overview["model_b"] == "efficientnet_lite0-v2"
    # The class summary puts the changed class first, then the class whose map moved.
    assert list(result.classes.index[:2]) == ["tripod", "espresso"]
    assert result.classes.loc["tripod", "changed"] == 1 and result.classes.loc["tripod", "to"] == second


def test_labels_count_fixed_and_broken(runs, tmp_path):
    a, b = runs
    la, lb = copy_run(a, tmp_path / "a"), copy_run(b, tmp_path / "b")
    for out in (la, lb):
        add_labels(out, {"camera.png": "tripod"})
    figures = cambatch.compare_runs(la, lb).overview()
    assert (figures["fixed"], figures["broken"], figures["labelled_in_both"]) == (0, 1, 1)


def test_a_labelled_and_an_unlabelled_run_invent_no_regression(sample_run, tmp_path):
    labelled = copy_run(sample_run[0].out, tmp_path / "labelled")
    add_labels(labelled, {"coffee.png": "espresso", "chelsea.png": "tabby"})  # one right, one wrong or right
    plain = sample_run[0].out
    for a, b in ((labelled, plain), (plain, labelled)):
        figures = cambatch.compare_runs(a, b).overview()
        assert figures["top1_changed"] == 0 and "fixed" not in figures and "broken" not in figures
        shown = runner.invoke(app, ["compare", str(a), str(b)])
        assert shown.exit_code == 0 and "broken" not in shown.output and "fixed" not in shown.output


def test_a_classes_run_has_no_top1_to_compare_and_is_refused_in_one_line(sample_run, tmp_path):
    chosen = copy_run(sample_run[0].out, tmp_path / "chosen")
    set_settings(chosen, classes=[967, 504])
    with pytest.raises(ValueError, match="run B explains classes chosen with --classes"):
        cambatch.compare_runs(sample_run[0].out, chosen)
    refused = runner.invoke(app, ["compare", str(chosen), str(sample_run[0].out)])
    assert refused.exit_code == 2 and "run A explains classes chosen with --classes (967, 504)" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_two_empty_runs_compare_as_nothing_in_common(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "report").mkdir(parents=True)
        pq.write_table(table({}, 0), tmp_path / name / "report" / "part-20260101T000000Z-abcdef-00000.parquet")
    shown = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert shown.exit_code == 0, shown.output
    assert "0 images in both runs: top-1 changed for 0" in shown.output and "Error" not in shown.output


def test_cli_table_json_and_parquet_rows(runs, tmp_path):
    a, b = runs
    table = runner.invoke(app, ["compare", str(a), str(b)])
    assert table.exit_code == 0, table.output
    assert "top-1 changed for 1 (20.0%)" in table.output and "tripod" in table.output
    target = tmp_path / "rows" / "changes.parquet"
    as_json = runner.invoke(app, ["compare", str(a), str(b), "--format", "json", "--out", str(target)])
    payload = json.loads(as_json.stdout)
    assert payload["meta"]["top1_changed"] == 1 and payload["rows"][0]["class (A)"] == "tripod"
    rows = pd.read_parquet(target)
    assert len(rows) == 7 and rows.loc[rows.top1_changed.fillna(False), "path"].tolist() == ["camera.png"]
    assert {"peak_shift", "box_iou", "class_a", "class_b", "status"} <= set(rows.columns)


def _report(rows: list[tuple]) -> pd.DataFrame:
    """(path, status, class_name) rows, rank 1, with fixed map statistics."""
    return pd.DataFrame(
        {
            "path": [r[0] for r in rows],
            "status": [r[1] for r in rows],
            "rank": [1 if r[1] == "ok" else None for r in rows],
            "class_name": [r[2] for r in rows],
            "probability": [0.5] * len(rows),
            "peak_x": [0.5] * len(rows),
            "peak_y": [0.5] * len(rows),
            "bbox_x0": [0.0] * len(rows),
            "bbox_y0": [0.0] * len(rows),
            "bbox_x1": [1.0] * len(rows),
            "bbox_y1": [1.0] * len(rows),
        }
    )


def test_every_status_an_image_can_have():
    a = _report(
        [
            ("same.jpg", "ok", "cat"),
            ("gone.jpg", "ok", "cat"),
            ("fixed.jpg", "error", None),
            ("broke.jpg", "ok", "dog"),
            ("never.jpg", "error", None),
        ]
    )
    b = _report(
        [
            ("same.jpg", "ok", "cat"),
            ("new.jpg", "ok", "dog"),
            ("fixed.jpg", "ok", "dog"),
            ("broke.jpg", "error", None),
            ("never.jpg", "error", None),
        ]
    )
    result = cambatch.compare_reports(a, b)
    status = result.images.set_index("path")["status"].astype(str).to_dict()
    assert status == {
        "broke.jpg": "error_b",
        "fixed.jpg": "error_a",
        "gone.jpg": "only_a",
        "never.jpg": "error_both",
        "new.jpg": "only_b",
        "same.jpg": "both",
    }
    overview = result.overview()
    assert (overview["compared"], overview["top1_changed"], overview["changed_share"]) == (1, 0, 0.0)
    assert overview["mean_box_iou"] == 1.0 and overview["median_peak_shift"] == 0.0
    assert pd.isna(result.images.set_index("path").loc["new.jpg", "box_iou"])  # compared only when in both


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-folders")
    return root, two_folders_run(root)


def test_two_inputs_holding_one_path_are_compared_as_two_images(two_folders, tmp_path):
    root, out = two_folders
    b = copy_run(out, tmp_path / "b")

    def swap_the_cups_top2(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for row in rows:
            if row["input_root"] == str(root / "two"):
                row["rank"] = 3 - row["rank"]
        return pa.Table.from_pylist(rows, schema=table.schema)

    rewrite_report(b, swap_the_cups_top2)
    result = cambatch.compare_runs(out, b)
    assert (len(result.images), result.compared, result.changed) == (2, 2, 1)
    images = result.images.set_index("input_root")
    assert not images.loc[str(root / "one"), "top1_changed"] and images.loc[str(root / "two"), "top1_changed"]
    assert images.loc[str(root / "one"), "box_iou"] == 1.0  # the cat against itself, never against the cup
    # One run over INPUT one only, the other over INPUT two only: no image is in both.
    one, two = (cambatch.load_report(out).query(f"input_root == '{root / name}'") for name in ("one", "two"))
    statuses = cambatch.compare_reports(one, two).images["status"].astype(str).tolist()
    assert sorted(statuses) == ["only_a", "only_b"]
