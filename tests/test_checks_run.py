"""`cambatch check` and `cambatch run --check` end to end, on runs of a hand-set net whose shortcut is known
(`shortcut_support.StampNet`: `stamp_bird` fires on a stamp at one fixed place) and on two runs with different
weights over the same photos, whose differences are computed here by hand from the two reports.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from checks_support import VARIANT_HEAD, disc_photos, run_args, save_stampnet, stamp_photos
from junitparser import Failure, JUnitXml, Skipped
from test_inspection_gallery import browser, page, visible_classes  # noqa: F401 - the browser tier's fixtures
from typer.testing import CliRunner

from cambatch.cli import app

runner = CliRunner()
BASELINE_METRICS = ("top1_changed", "peak_shift", "map_similarity")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The photos, the two nets, the default policy (`--init`), and the runs of both nets over the disc photos."""
    work = tmp_path_factory.mktemp("checks")
    stamp_photos(work / "stamped")
    disc_photos(work / "discs")
    save_stampnet(work / "a.pt")
    save_stampnet(work / "b.pt", VARIANT_HEAD)
    assert invoke("check", "--init", work / "policy.toml").exit_code == 0
    for name in ("a", "b"):
        ran = invoke(*run_args(work / "discs", work / name, work / f"{name}.pt", work / "names.txt"))
        assert ran.exit_code == 0, ran.output
    return work


def checked_json(*args) -> tuple[int, dict]:
    result = invoke("check", *args, "--format", "json")
    return result.exit_code, json.loads(result.stdout)


def by_metric(verdict: dict) -> dict[str, dict]:
    return {check["metric"]: check for check in verdict["checks"]}


def test_the_default_policy_fails_the_stamped_class_on_position_lock_and_nothing_else(work):
    args = run_args(work / "stamped", work / "stamp", work / "a.pt", work / "names.txt")
    ran = invoke(*args, "--check", work / "policy.toml")
    assert ran.exit_code == 1, ran.output  # run, then check: one exit code
    assert "no class looks at one fixed place" in ran.stdout

    code, verdict = checked_json(work / "stamp", "--junit", work / "stamp.xml")
    assert code == 1 and verdict["verdict"] == "fail"
    failed = [
        (c["metric"], r["class"]) for c in verdict["checks"] for r in c.get("results", []) if r["status"] == "fail"
    ]
    assert failed == [("position_lock", "stamp_bird")]
    assert [c["metric"] for c in verdict["checks"] if c["status"] == "fail"] == ["position_lock"]
    lock = {r["class"]: r["value"] for r in by_metric(verdict)["position_lock"]["results"]}
    print(f"position_lock: {lock}")
    assert lock["stamp_bird"] > 0.25 > lock["green_ball"]

    cases = [(suite.name, case) for suite in JUnitXml.fromfile(str(work / "stamp.xml")) for case in suite]
    failures = [(name, case.name, r.message) for name, case in cases for r in case.result if isinstance(r, Failure)]
    assert failures == [
        (
            "no class looks at one fixed place",
            "stamp_bird",
            f"position_lock of stamp_bird: {lock['stamp_bird']:.4g} > max 0.25",
        )
    ]
    assert any(isinstance(r, Skipped) for _, case in cases for r in case.result)  # e.g. no baseline


def test_the_verdict_is_kept_in_out_and_the_gallery_links_its_failing_class(work):
    kept = sorted((work / "stamp" / "checks").glob("*.json"))
    assert len(kept) == 2  # `run --check`, then `check`
    assert json.loads(kept[-1].read_text())["verdict"] == "fail"
    assert invoke("gallery", work / "stamp").exit_code == 0
    html = (work / "stamp" / "gallery" / "index.html").read_text()
    assert 'class="check fail"' in html
    assert 'href="#group=class&amp;cls=stamp_bird"' in html


@pytest.mark.browser
def test_the_verdict_s_link_opens_the_failing_class_s_group_in_chromium(work, page):  # noqa: F811 - the fixture
    page.goto((work / "stamp" / "gallery" / "index.html").as_uri())
    assert "check: fail" in page.inner_text("[data-testid=check]")
    page.click("[data-testid=check] a")
    page.wait_for_function("location.hash.includes('stamp_bird')")
    assert set(visible_classes(page)) == {"stamp_bird"} and page.errors == []


def test_a_resume_does_not_compare_the_check_options(work):
    args = run_args(work / "stamped", work / "stamp", work / "a.pt", work / "names.txt")
    again = invoke(*args)  # no --check this time: the same run, resumed
    assert again.exit_code == 0, again.output
    assert "23 already done" in again.output


def top1(out) -> pd.DataFrame:
    report = pd.read_parquet(out / "report")
    ok = report[report["status"] == "ok"]
    return ok[ok["rank"] == 1].set_index(["input_root", "path"])


def hand_top1_changed(a, b) -> float:
    top_a, top_b = top1(a), top1(b)
    both = top_a.index.intersection(top_b.index)
    return float((top_a.loc[both, "class_name"] != top_b.loc[both, "class_name"]).mean())


def hand_peak_shift(a, b) -> float:
    """For each image in both runs: the peak of the baseline's top-1 class's map in each run, their distance."""
    top_a = top1(a)
    rows_b = pd.read_parquet(b / "report").set_index(["input_root", "path", "class_name"])
    shifts = [
        np.hypot(
            row.peak_x - rows_b.loc[key + (row.class_name,), "peak_x"],
            row.peak_y - rows_b.loc[key + (row.class_name,), "peak_y"],
        )
        for key, row in top_a.iterrows()
        if key + (row.class_name,) in rows_b.index
    ]
    return float(np.mean(shifts))


def _grid(flat, height, width) -> np.ndarray:
    """A map as the shortcut tools compare it, up to an affine change (Pearson r ignores it): ReLU, bilinear 32 x 32."""
    relu = torch.tensor(np.asarray(flat, np.float32)).reshape(1, 1, int(height), int(width)).clamp(min=0)
    return torch.nn.functional.interpolate(relu, size=(32, 32), mode="bilinear", align_corners=False).flatten().numpy()


def hand_map_similarity(a, b) -> float:
    top_a, top_b = top1(a), top1(b)
    both = top_a.index.intersection(top_b.index)
    same = [key for key in both if top_a.loc[key, "class_name"] == top_b.loc[key, "class_name"]]
    rs = []
    for key in same:
        grids = [_grid(t.loc[key, "map"], t.loc[key, "map_height"], t.loc[key, "map_width"]) for t in (top_a, top_b)]
        if all(g.std() > 0 for g in grids):
            rs.append(np.corrcoef(*grids)[0, 1])
    return float(np.mean(rs))


def test_baseline_metrics_equal_their_hand_computation_and_a_run_against_itself_gives_0_0_1(work, tmp_path):
    policy = tmp_path / "baseline.toml"
    policy.write_text("".join(f'[[check]]\nname = "{m}"\nmetric = "{m}"\nmin = -1.0\n\n' for m in BASELINE_METRICS))
    a, b = work / "a", work / "b"
    code, verdict = checked_json(b, "--baseline", a, "--policy", policy)
    assert code == 0
    found = {m: by_metric(verdict)[m]["value"] for m in BASELINE_METRICS}
    by_hand = {"top1_changed": hand_top1_changed(a, b), "peak_shift": hand_peak_shift(a, b)}
    by_hand["map_similarity"] = hand_map_similarity(a, b)
    print(f"check: {found}\nby hand: {by_hand}")
    assert found == pytest.approx(by_hand, abs=1e-5)
    assert 0 < found["top1_changed"] < 1 and found["peak_shift"] > 0 and 0 < found["map_similarity"] < 1

    _, itself = checked_json(a, "--baseline", a, "--policy", policy)
    assert {m: by_metric(itself)[m]["value"] for m in BASELINE_METRICS} == pytest.approx(
        {"top1_changed": 0.0, "peak_shift": 0.0, "map_similarity": 1.0}, abs=1e-6
    )


def test_run_check_exits_0_against_an_earlier_run_of_the_same_model(work):
    args = run_args(work / "discs", work / "a-again", work / "a.pt", work / "names.txt")
    ran = invoke(*args, "--check", work / "policy.toml", "--baseline", work / "a")
    assert ran.exit_code == 0, ran.output
    verdict = json.loads(sorted((work / "a-again" / "checks").glob("*.json"))[-1].read_text())
    assert by_metric(verdict)["top1_changed"]["value"] == 0.0 and verdict["verdict"] in ("pass", "warn")
    assert by_metric(verdict)["position_lock"]["status"] == "pass"  # both classes' discs move


def test_a_bad_policy_is_refused_before_the_run_starts(work, tmp_path):
    (tmp_path / "bad.toml").write_text('[[check]]\nname = "x"\nmetric = "foo"\nmax = 1\n')
    ran = invoke(
        *run_args(work / "discs", tmp_path / "never", work / "a.pt", work / "names.txt"),
        "--check",
        tmp_path / "bad.toml",
    )
    assert ran.exit_code == 2
    assert "bad.toml: check[1].metric: unknown metric 'foo'" in ran.stderr
    assert not (tmp_path / "never").exists()


def test_run_baseline_without_check_is_refused(work, tmp_path):
    ran = invoke(
        *run_args(work / "discs", tmp_path / "never", work / "a.pt", work / "names.txt"), "--baseline", work / "a"
    )
    assert ran.exit_code == 2 and "baseline (--baseline) is for a check" in ran.stderr


def test_a_baseline_on_a_store_gives_the_same_values_and_the_verdict_is_kept_there(work, s3_bucket):
    bucket, fs = s3_bucket
    for name in ("a", "b"):
        fs.put(str(work / name / "report"), f"{bucket}/{name}/report", recursive=True)
    policy = work / "policy.toml"
    _, local = checked_json(work / "b", "--baseline", work / "a", "--policy", policy)
    code, remote = checked_json(f"s3://{bucket}/b", "--baseline", f"s3://{bucket}/a", "--policy", policy)
    assert code == 1  # top-1 changed for 31% of the images
    values = lambda verdict: {c["name"]: (c["status"], c["value"]) for c in verdict["checks"]}  # noqa: E731
    assert values(remote) == values(local)
    kept = fs.ls(f"{bucket}/b/checks")
    assert len(kept) == 1 and json.loads(fs.cat(kept[0]))["verdict"] == "fail"

    # The nightly recipe: run into the store, checked against yesterday's run there (docs/check.md).
    args = run_args(work / "discs", f"s3://{bucket}/nightly", work / "b.pt", work / "names.txt")
    ran = invoke(*args, "--check", policy, "--baseline", f"s3://{bucket}/a")
    assert ran.exit_code == 1, ran.output
    kept = fs.ls(f"{bucket}/nightly/checks")
    assert len(kept) == 1 and values(json.loads(fs.cat(kept[0]))) == values(local)


def test_the_gallery_reads_the_newest_verdict_and_links_labels_to_their_groups(tmp_path):
    from cambatch.inspection.gallery import latest_check
    from cambatch.layout import OutputLayout

    layout = OutputLayout(tmp_path)
    assert latest_check(layout) is None  # never checked
    layout.checks_dir.mkdir()
    check = {"name": "accuracy per label", "status": "warn", "by": "label"}
    check["results"] = [{"class": "tabby cat", "status": "warn"}, {"class": "espresso", "status": "pass"}]
    older = {"verdict": "fail", "checked_at": "20250101T000000000000Z", "policy": "p.toml", "checks": []}
    newer = {**older, "verdict": "warn", "checked_at": "20250102T030405000000Z", "checks": [check]}
    (layout.checks_dir / "20250101T000000000000Z.json").write_text(json.dumps(older))
    (layout.checks_dir / "20250102T030405000000Z.json").write_text(json.dumps(newer))
    assert latest_check(layout) == {
        "verdict": "warn",
        "checked": "2025-01-02 03:04 UTC",
        "policy": "p.toml",
        "breaches": [
            {
                "name": "accuracy per label",
                "status": "warn",
                "classes": [{"name": "tabby cat", "link": "group=label&label=tabby+cat"}],
            }
        ],
    }
    (layout.checks_dir / "20250103T000000000000Z.json").write_text("{not json")
    assert latest_check(layout) is None  # a damaged verdict: the gallery is built without one
