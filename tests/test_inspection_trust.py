"""`cambatch.inspection.trust`: the trust columns' means per class and per run in `summarize`, and the
`model-insensitive` and `class-agnostic` flags, on made-up columns and on real runs of the default model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.inspection.options import Thresholds
from cambatch.inspection.trust import trust_table
from cambatch.report.schema import TRUST_NAMES


def images_frame() -> pd.DataFrame:
    """Six images of three classes, with made-up trust columns."""
    return pd.DataFrame(
        {
            "class_name": ["cat", "cat", "dog", "dog", "cup", None],
            "sanity_rank_corr": [0.95, 0.91, 0.2, 0.4, 0.8, 0.0],
            "class_sensitivity": [0.1, 0.3, 0.99, 0.97, np.nan, 0.5],
            "road_combined": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        }
    )


def test_means_per_class_and_per_run_and_the_flags():
    table, run = trust_table(images_frame(), "class_name", Thresholds())
    assert list(table.index) == ["cat", "cup", "dog"]
    assert table.loc["cat", "sanity_rank_corr"] == pytest.approx(0.93) and table.loc["dog", "road_combined"] == 0.35
    assert table["model_insensitive_flag"].to_dict() == {"cat": True, "cup": False, "dog": False}
    assert table["class_agnostic_flag"].to_dict() == {"cat": False, "cup": False, "dog": True}  # cup: no value
    assert run == pytest.approx(
        {"mean_sanity_rank_corr": 3.26 / 6, "mean_class_sensitivity": 2.86 / 5, "mean_road_combined": 0.35}
    )
    strict = trust_table(images_frame(), "class_name", Thresholds(insensitive_corr=0.96, agnostic_ssim=0.98))[0]
    assert not strict["model_insensitive_flag"].any() and strict["class_agnostic_flag"].sum() == 1


def test_a_run_without_the_options_has_no_means_and_no_flags():
    frame = images_frame().assign(**{name: np.nan for name in TRUST_NAMES})
    table, run = trust_table(frame, "class_name", Thresholds())
    assert run == {} and list(table.columns) == ["model_insensitive_flag", "class_agnostic_flag"]
    assert not table.to_numpy().any()


@pytest.fixture(scope="module")
def sanity_runs(tmp_path_factory):
    """The default model over three sample photos with --sanity: once with cam, once with eigencam."""
    photos = tmp_path_factory.mktemp("photos")
    for name in ("chelsea.png", "coffee.png", "camera.png"):
        shutil.copy(SAMPLES / name, photos / name)
    options = {"sanity": True, "overlays": False, "workers": 0, "progress": False}
    return {
        method: cambatch.run(photos, tmp_path_factory.mktemp(method), method=method, **options).out
        for method in ("cam", "eigencam")
    }


def test_eigencam_classes_are_flagged_class_agnostic_and_cam_classes_are_not(sanity_runs):
    eigen, cam = (cambatch.summarize_run(sanity_runs[m]) for m in ("eigencam", "cam"))
    assert eigen.table["class_agnostic_flag"].all() and len(eigen.table) == 3
    assert all("class-agnostic" in flags for flags in eigen.table["flags"])
    assert not cam.table["class_agnostic_flag"].any()
    report = pd.read_parquet(sanity_runs["cam"] / "report")
    top = report[report["rank"] == 1]
    assert cam.trust["mean_sanity_rank_corr"] == pytest.approx(top["sanity_rank_corr"].mean(), rel=1e-6)
    assert report[list(TRUST_NAMES[:2])].notna().all().all() and report[list(TRUST_NAMES[2:])].isna().all().all()


def test_summarize_command_prints_the_means_and_takes_the_thresholds(sanity_runs):
    out = str(sanity_runs["cam"])
    result = CliRunner().invoke(app, ["summarize", out, "--format", "json", "--agnostic-ssim", "-1"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["meta"]["agnostic_ssim"] == -1 and "mean_class_sensitivity" in printed["meta"]
    assert all("class-agnostic" in row["flags"] for row in printed["rows"])
    table = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["summarize", out])
    assert "class-agnostic: class_sensitivity >= 0.95" in " ".join(table.output.split())


def test_check_reads_a_real_sanity_run_and_skips_what_it_did_not_compute(sanity_runs, tmp_path):
    """`cambatch check` on a run made with --sanity alone: its metrics have summarize's values, ROAD's skip."""
    policy = tmp_path / "trust.toml"
    checks = ("sanity_rank_corr", "class_sensitivity", "flag_class_agnostic", "road_combined", "insertion_auc")
    policy.write_text("".join(f'[[check]]\nname = "{m}"\nmetric = "{m}"\nmax = 100\n' for m in checks))
    found = {c.check.metric: c for c in cambatch.check_run(sanity_runs["eigencam"], policy).checks}
    summary = cambatch.summarize_run(sanity_runs["eigencam"])
    assert found["sanity_rank_corr"].value == pytest.approx(summary.trust["mean_sanity_rank_corr"])
    assert found["class_sensitivity"].value == pytest.approx(1.0, abs=1e-3)  # Eigen-CAM: one map for every class
    assert found["flag_class_agnostic"].value == len(summary.table) == 3
    assert [found[m].status for m in checks[3:]] == ["skip", "skip"]
    assert "--road" in found["road_combined"].reason and "--deletion-insertion" in found["insertion_auc"].reason
