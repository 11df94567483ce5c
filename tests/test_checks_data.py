"""The metrics' values come from the inspection and evaluation code they name, data that is missing is a skip
with its reason (or a failure with `on_missing = "fail"`), and a run that cannot be read exits 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from evaluation_support import write_report
from inspecting_support import add_labels, copy_run, rewrite_report, swap_top2, synthesize_run
from typer.testing import CliRunner

import cambatch
from cambatch.checks.run import check_run
from cambatch.cli import app
from cambatch.evaluation.run import evaluate

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A labelled run without maps (40 images, 4 classes, 2 failed) and a copy with three top-1 classes changed."""
    root = tmp_path_factory.mktemp("data")
    out = synthesize_run(root / "run", images=40, classes=4, errors=2)
    changed = copy_run(out, root / "changed")
    for path in ("class_00/img_00000.jpg", "class_01/img_00001.jpg", "class_02/img_00002.jpg"):
        swap_top2(changed, path)
    labelled = pd.read_parquet(out / "report").dropna(subset=["label"])
    add_labels(changed, dict(zip(labelled["path"], labelled["label"], strict=True)))  # `correct` of the new top-1
    return out, changed


def policy(tmp_path, *checks: str, head: str = "") -> str:
    """A policy file of `[[check]]` tables given as their key lines."""
    path = tmp_path / "policy.toml"
    path.write_text(head + "".join(f'[[check]]\nname = "c{i}"\n{c}\n' for i, c in enumerate(checks)))
    return str(path)


def checked(*args) -> tuple[int, dict]:
    result = runner.invoke(app, ["check", *map(str, args), "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def test_run_metrics_count_images_errors_and_correct_top1(runs, tmp_path):
    out, _ = runs
    checks = ['metric = "images"\nmin = 1', 'metric = "error_rate"\nmax = 1', 'metric = "accuracy"\nmin = 0']
    _, found = checked(out, "--policy", policy(tmp_path, *checks))
    report = pd.read_parquet(out / "report")
    top1 = report[(report["status"] == "ok") & (report["rank"] == 1)]
    values = [c["value"] for c in found["checks"]]
    assert values == pytest.approx([42, 2 / 42, top1["correct"].mean()])


def test_class_metrics_are_summarize_s_columns(runs, tmp_path):
    out, _ = runs
    checks = [
        'metric = "class_accuracy"\nper = "class"\nmin = 0',
        'metric = "border_energy_ratio"\nper = "class"\nmax = 1.5',
        'metric = "flag_border"\nper = "class"\nmax = 0',
    ]
    _, found = checked(out, "--policy", policy(tmp_path, *checks))
    summary = cambatch.summarize_run(out)
    table = summary.table
    accuracy, ratio, border = ({r["class"]: r["value"] for r in c["results"]} for c in found["checks"])
    assert accuracy == pytest.approx(table["accuracy"].to_dict())
    assert ratio == pytest.approx((table["border_energy"] / summary.median_border_energy).to_dict())
    assert border == table["border_flag"].astype(float).to_dict()
    assert found["checks"][2]["status"] == ("fail" if table["border_flag"].any() else "pass")
    assert {c["by"] for c in found["checks"]} == {"label"}  # a labelled run: summarize groups by label


def test_missing_data_is_a_skip_with_its_reason_or_a_failure_with_on_missing_fail(runs, tmp_path):
    out, _ = runs
    checks = [
        'metric = "position_lock"\nper = "class"\nmax = 0.25',
        'metric = "energy_in_gt"\nmin = 0.5',
        'metric = "top1_changed"\nmax = 0.1',
        'metric = "images"\nmin = 1',
    ]
    code, found = checked(out, "--policy", policy(tmp_path, *checks))
    assert code == 0 and found["verdict"] == "pass"
    assert [(c["status"], c["reason"]) for c in found["checks"]] == [
        ("skip", "the report keeps no maps (written before cambatch kept them)"),
        ("skip", "the run has no ground truth (run it with --annotations)"),
        ("skip", "no baseline run (--baseline OUT)"),
        ("pass", ""),
    ]
    code, found = checked(out, "--policy", policy(tmp_path, *checks, head='on_missing = "fail"\n'))
    assert code == 1 and [c["status"] for c in found["checks"]] == ["fail", "fail", "fail", "pass"]
    one = [checks[0] + '\non_missing = "fail"', checks[1]]  # a check's own on_missing wins over the policy's
    assert [c["status"] for c in checked(out, "--policy", policy(tmp_path, *one))[1]["checks"]] == ["fail", "skip"]


def test_classes_with_too_few_images_are_skipped_and_listed(runs, tmp_path):
    out, _ = runs
    _, found = checked(
        out, "--policy", policy(tmp_path, 'metric = "class_accuracy"\nper = "class"\nmin = 0\nmin_images = 11')
    )
    results = found["checks"][0]["results"]
    images = cambatch.summarize_run(out).table["images"]
    assert len(results) == 4
    for r in results:
        assert r["images"] == images[r["class"]]
        assert (r["status"] == "skip") == (r["images"] < 11)
        assert r["reason"] == (f"{r['images']} images, fewer than min_images 11" if r["images"] < 11 else "")


def test_accuracy_drop_and_top1_changed_come_from_compare_with_the_baseline_as_a(runs, tmp_path):
    out, changed = runs
    checks = [
        'metric = "accuracy_drop"\nmax = 0',
        'metric = "class_accuracy_drop"\nper = "class"\nmax = 0',
        'metric = "top1_changed"\nmax = 0',
        'metric = "top1_changed"\nper = "class"\nmax = 0',
    ]
    code, found = checked(changed, "--baseline", out, "--policy", policy(tmp_path, *checks))
    comparison = cambatch.compare_runs(out, changed)
    both = comparison.images[comparison.images["status"] == "both"]
    a, b = (both[c].astype(bool).astype(float) for c in ("correct_a", "correct_b"))
    drop, by_label, changed_share, by_class = found["checks"]
    assert drop["value"] == pytest.approx(a.mean() - b.mean()) and drop["value"] > 0  # three right answers broken
    labels = both["label"].astype(str)
    hand = (a.groupby(labels).mean() - b.groupby(labels).mean()).to_dict()
    assert {r["class"]: r["value"] for r in by_label["results"]} == pytest.approx(hand)
    assert changed_share["value"] == pytest.approx(3 / 40) and code == 1
    assert {r["class"]: r["value"] for r in by_class["results"]} == pytest.approx(
        comparison.classes["changed_share"].to_dict()
    )


def test_new_flags_counts_the_flags_a_class_did_not_have_in_the_baseline(runs, tmp_path):
    out, _ = runs
    per_class = policy(tmp_path, 'metric = "new_flags"\nper = "class"\nmax = 0')
    _, found = checked(out, "--baseline", out, "--policy", per_class)
    assert {r["value"] for r in found["checks"][0]["results"]} == {0.0}  # against itself: nothing new

    loud = copy_run(out, tmp_path / "loud")  # the label `class 03`'s maps all on the border now

    def louder(table: pa.Table) -> pa.Table:
        energy = table.column("border_energy").to_numpy(zero_copy_only=False).astype(np.float32)
        energy[np.array(table.column("label").to_pylist()) == "class 03"] = 1.0
        column = pa.array(energy, mask=np.isnan(energy))
        return table.set_column(table.schema.get_field_index("border_energy"), "border_energy", column)

    rewrite_report(loud, louder)
    _, found = checked(loud, "--baseline", out, "--policy", per_class)
    now, before = (cambatch.summarize_run(run).table["flags"] for run in (loud, out))
    hand = {name: len(set(now[name].split(", ")) - set(before[name].split(", ")) - {""}) for name in now.index}
    assert {r["class"]: r["value"] for r in found["checks"][0]["results"]} == hand
    assert hand["class 03"] == 1 and found["checks"][0]["status"] == "fail"


def test_ground_truth_metrics_are_evaluate_s(tmp_path):
    side = 56
    maps = []
    for x in (10, 30):
        m = np.zeros((side, side), np.float32)
        m[10:20, x : x + 10] = 1
        maps.append(m)
    rows = [
        {"path": f"{name}.jpg", "width": side, "height": side, "class_index": 0, "class_name": "cat", "map": m}
        for name, m in zip("ab", maps, strict=True)
    ]
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x0,y0,x1,y1,label\na.jpg,10,10,19,19,cat\nb.jpg,10,10,19,19,cat\n")
    out = write_report(tmp_path / "out", rows, {"options": {"annotations": str(boxes)}})
    checks = [f'metric = "{m}"\nmin = 0' for m in ("energy_in_gt", "pointing_acc", "max_box_acc_v2", "pxap")]
    checks.append('metric = "energy_in_gt"\nper = "class"\nmin = 0')
    _, found = checked(out, "--policy", policy(tmp_path, *checks))
    metrics = evaluate(out).metrics
    values = [c["value"] for c in found["checks"][:3]]
    assert values == pytest.approx([metrics["energy_in_gt"], metrics["pointing_acc"], metrics["MaxBoxAccV2"]])
    assert 0 < metrics["energy_in_gt"] < 1
    assert found["checks"][3]["status"] == "skip" and "no PxAP" in found["checks"][3]["reason"]  # boxes, no masks
    assert found["checks"][4]["results"] == [
        {"class": "cat", "value": pytest.approx(metrics["energy_in_gt"]), "status": "pass", "images": 2, "reason": ""}
    ]


def test_strict_fails_on_a_warning(runs, tmp_path):
    out, _ = runs
    warn = policy(tmp_path, 'metric = "error_rate"\nmax = 0\nseverity = "warn"')
    assert runner.invoke(app, ["check", str(out), "--policy", warn]).exit_code == 0
    assert runner.invoke(app, ["check", str(out), "--policy", warn, "--strict"]).exit_code == 1


def test_a_run_or_baseline_that_cannot_be_read_exits_2_naming_it(runs, tmp_path):
    out, _ = runs
    result = runner.invoke(app, ["check", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "cannot read the run" in result.stderr and "nothing" in result.stderr
    result = runner.invoke(app, ["check", str(out), "--baseline", str(tmp_path / "gone")])
    assert result.exit_code == 2 and "cannot read the baseline" in result.stderr and "gone" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_python_api_returns_the_verdict_and_keeps_nothing(runs):
    out, changed = runs
    kept = set((changed / "checks").glob("*.json"))
    found = cambatch.check_run(changed, baseline=out)
    assert found.verdict == "fail" and found.exit_code == 1
    assert [c.check.metric for c in found.checks if c.status == "fail"] == ["accuracy_drop"]  # 3 of 40 broken
    assert set((changed / "checks").glob("*.json")) == kept  # keeping the verdict is the command's (`audit`)
    assert check_run(out).run_id == "20250101T000000Z-000000"


def test_slice_metrics_fail_the_class_with_the_planted_slice_and_skip_a_run_without_slices(planted_slice, tmp_path):
    from cambatch.bias.slices import find_slices, write_slices

    out = copy_run(planted_slice[0], tmp_path / "planted")
    shutil.rmtree(out / "slices", ignore_errors=True)  # other tests keep slices in the shared run
    checks = ['metric = "slice_accuracy_gap"\nper = "class"\nmax = 0.5', 'metric = "error_slices"\nmax = 100']
    code, found = checked(out, "--policy", policy(tmp_path, *checks))
    assert code == 0 and [c["status"] for c in found["checks"]] == ["skip", "skip"]
    assert "cambatch slices" in found["checks"][0]["reason"]
    kept = find_slices(out)
    write_slices(out, kept)
    code, found = checked(out, "--policy", policy(tmp_path, *checks))
    gaps = {r["class"]: r["value"] for r in found["checks"][0]["results"]}
    assert code == 1 and {r["class"] for r in found["checks"][0]["results"] if r["status"] == "fail"} == {"green_ball"}
    assert gaps == pytest.approx(kept.classes["slice_accuracy_gap"].dropna().to_dict())
    assert found["checks"][1]["value"] == kept.classes["error_slices"].sum()
