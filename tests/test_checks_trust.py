"""The trust metrics of `cambatch check` (`--sanity`, `--road`, `--deletion-insertion`; docs/trust.md): summarize's
means of the trust columns, per class and for the run, and its `model-insensitive` and `class-agnostic` flags; a
run without the option that fills a metric's columns skips it, saying which option."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from inspecting_support import copy_run, rewrite_report, set_settings, synthesize_run
from typer.testing import CliRunner

from cambatch.checks.metrics import METRICS
from cambatch.cli import app
from cambatch.report.schema import TRUST_NAMES

runner = CliRunner()

MEANS = (  # metric, the option that fills its column
    ("sanity_rank_corr", "sanity"),
    ("class_sensitivity", "sanity"),
    ("road_morf", "road"),
    ("road_lerf", "road"),
    ("road_combined", "road"),
    ("deletion_auc", "deletion_insertion"),
    ("insertion_auc", "deletion_insertion"),
)
FLAGS = ("flag_model_insensitive", "flag_class_agnostic")
REASONS = {
    "sanity": "the run has no sanity checks (run it with --sanity)",
    "road": "the run has no ROAD scores (run it with --road)",
    "deletion_insertion": "the run has no deletion and insertion scores (run it with --deletion-insertion)",
}


def with_trust_columns(out, options: tuple[str, ...]) -> None:
    """Give the ok rows of the run in `out` trust columns of known values, as a run with `options` fills them:
    random values in range, except that label `class 00`'s rows correlate with the re-initialised model's maps
    (sanity_rank_corr 0.95) and label `class 01`'s ignore the class (class_sensitivity 0.99); the settings record
    `options` as a run records them.
    """
    filled = {name for name, option in MEANS if option in options}
    rng = np.random.default_rng(3)

    def change(table: pa.Table) -> pa.Table:
        frame = table.to_pandas()
        ok = frame["status"] == "ok"
        for name in filled:
            values = pd.Series(rng.uniform(0.0, 0.6, len(frame)), index=frame.index)
            if name == "sanity_rank_corr":
                values[frame["label"] == "class 00"] = 0.95
            if name == "class_sensitivity":
                values[frame["label"] == "class 01"] = 0.99
            frame[name] = values.where(ok).astype("float32")
        return pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)

    rewrite_report(out, change)
    set_settings(out, options={name: True for name in options}, **{name: True for name in options})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A labelled run without the trust options (24 images, 3 classes, 1 failed), a copy with every trust
    column filled, and a copy with --sanity's alone."""
    root = tmp_path_factory.mktemp("trust")
    plain = synthesize_run(root / "plain", images=24, classes=3, errors=1)
    trusted = copy_run(plain, root / "trusted")
    with_trust_columns(trusted, ("sanity", "road", "deletion_insertion"))
    sane = copy_run(plain, root / "sanity")
    with_trust_columns(sane, ("sanity",))
    return plain, trusted, sane


def policy(tmp_path, per: str) -> str:
    """One check per trust metric, at `per`, with limits every value meets."""
    path = tmp_path / f"trust-{per}.toml"
    checks = [(name, "min = -1") for name, _ in MEANS] + [(name, "max = 100") for name in FLAGS]
    path.write_text(
        "".join(f'[[check]]\nname = "{n}"\nmetric = "{n}"\nper = "{per}"\n{limit}\n\n' for n, limit in checks)
    )
    return str(path)


def checked(out, policy_file: str) -> dict:
    result = runner.invoke(app, ["check", str(out), "--policy", policy_file, "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    return {c["metric"]: c for c in json.loads(result.stdout)["checks"]}


def top1(out) -> pd.DataFrame:
    """Each image's top-1 row: the rows summarize counts (a labelled run: grouped by label)."""
    report = pd.read_parquet(out / "report")
    return report[(report["status"] == "ok") & (report["rank"] == 1)]


def test_the_trust_metrics_are_declared_with_the_option_they_need():
    for name, option in MEANS:
        assert METRICS[name].needs == (option,) and METRICS[name].levels == ("run", "class"), name
    assert {name for name, _ in MEANS} == set(TRUST_NAMES)
    better = {name: METRICS[name].better for name, _ in MEANS}
    assert better == {
        "sanity_rank_corr": "lower",
        "class_sensitivity": "lower",
        "road_morf": "lower",
        "road_lerf": "higher",
        "road_combined": "higher",
        "deletion_auc": "lower",
        "insertion_auc": "higher",
    }
    for name in FLAGS:
        assert METRICS[name].needs == ("sanity",) and METRICS[name].levels == ("run", "class"), name


def test_run_values_are_the_means_over_the_top1_rows(runs, tmp_path):
    _, trusted, _ = runs
    found = checked(trusted, policy(tmp_path, "run"))
    rows = top1(trusted)
    for name, _ in MEANS:
        assert found[name]["status"] == "pass", found[name]
        assert found[name]["value"] == pytest.approx(float(rows[name].mean()), rel=1e-6), name
    # One label of each kind is flagged: the run's value is the number of classes flagged.
    assert found["flag_model_insensitive"]["value"] == 1 and found["flag_class_agnostic"]["value"] == 1


def test_class_values_are_the_means_per_label_and_the_flags_mark_the_planted_labels(runs, tmp_path):
    _, trusted, _ = runs
    found = checked(trusted, policy(tmp_path, "class"))
    by_label = top1(trusted).groupby("label")
    for name, _ in MEANS:
        assert found[name]["by"] == "label"
        values = {r["class"]: r["value"] for r in found[name]["results"]}
        assert values == pytest.approx(by_label[name].mean().astype(float).to_dict(), rel=1e-6), name
    insensitive = {r["class"]: r["value"] for r in found["flag_model_insensitive"]["results"]}
    agnostic = {r["class"]: r["value"] for r in found["flag_class_agnostic"]["results"]}
    assert insensitive == {"class 00": 1.0, "class 01": 0.0, "class 02": 0.0}
    assert agnostic == {"class 00": 0.0, "class 01": 1.0, "class 02": 0.0}
    # At max 0 a flagged class fails the check.
    strict = tmp_path / "strict.toml"
    strict.write_text('[[check]]\nname = "a"\nmetric = "flag_class_agnostic"\nper = "class"\nmax = 0\n')
    result = checked(trusted, str(strict))["flag_class_agnostic"]
    assert result["status"] == "fail" and [r["class"] for r in result["results"] if r["status"] == "fail"] == [
        "class 01"
    ]


@pytest.mark.parametrize("per", ["run", "class"])
def test_a_run_without_the_option_skips_its_metrics_with_the_reason(runs, tmp_path, per):
    plain, _, sane = runs
    found = checked(plain, policy(tmp_path, per))
    for name, option in MEANS:
        assert (found[name]["status"], found[name]["reason"]) == ("skip", REASONS[option]), name
    for name in FLAGS:  # summarize's flag columns are False without --sanity: never a silent pass
        assert (found[name]["status"], found[name]["reason"]) == ("skip", REASONS["sanity"]), name
    # --sanity alone: its metrics have values, those of --road and --deletion-insertion are skipped.
    found = checked(sane, policy(tmp_path, per))
    for name, option in MEANS:
        assert found[name]["status"] == ("pass" if option == "sanity" else "skip"), name
        assert found[name]["reason"] == ("" if option == "sanity" else REASONS[option]), name
    assert found["flag_model_insensitive"]["status"] == "pass"


def test_with_on_missing_fail_a_run_without_the_option_fails(runs, tmp_path):
    plain, _, _ = runs
    path = tmp_path / "fail.toml"
    path.write_text('on_missing = "fail"\n[[check]]\nname = "r"\nmetric = "road_combined"\nmin = 0\n')
    result = runner.invoke(app, ["check", str(plain), "--policy", str(path), "--format", "json"])
    assert result.exit_code == 1, result.output
    (check,) = json.loads(result.stdout)["checks"]
    assert (check["status"], check["reason"]) == ("fail", REASONS["road"])
