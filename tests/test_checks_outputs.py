"""One result model, every output: JSON, JUnit (read back with junitparser), Markdown, CSV and the table, all
written from a `CheckRun` built here by hand."""

from __future__ import annotations

import csv
import io
import json

import pytest
from junitparser import Failure, JUnitXml, Skipped

from cambatch.checks.outputs import as_csv, as_dict, as_json, junit_xml, markdown, print_table, write_files
from cambatch.checks.policy import Check
from cambatch.checks.results import CheckResult, CheckRun, ClassResult
from cambatch.errors import ExitCode

LONG = "a check whose name is long enough that a terminal table would have to cut or wrap it somewhere"


def run_of(*results: CheckResult, strict: bool = False) -> CheckRun:
    return CheckRun(
        checks=results,
        out="cams",
        run_id="20250102T000000Z-b",
        baseline="cams-monday",
        baseline_run_id="20250101T000000Z-a",
        policy="policy.toml",
        checked_at="20250102T030405000006Z",
        strict=strict,
    )


LOCK = Check(name="no class looks at one fixed place", metric="position_lock", per="class", max=0.25, min_images=5)
CLASSES = (
    ClassResult(name="stamp_bird", value=0.41, images=15, status="fail", reason="0.41 > max 0.25"),
    ClassResult(name="watermark", value=0.9, images=9, status="fail", reason="0.9 > max 0.25"),
    ClassResult(name="green_ball", value=0.02, images=8, status="pass"),
    ClassResult(name="rare", value=0.7, images=2, status="skip", reason="2 images, fewer than min_images 5"),
)
RESULTS = (
    CheckResult(check=Check(name="few images failed", metric="error_rate", max=0.05), status="pass", value=0.01),
    CheckResult(
        check=Check(name=LONG, metric="top1_changed", max=0.1, severity="warn"),
        status="warn",
        value=0.3,
        reason="0.3 > max 0.1",
    ),
    CheckResult(check=LOCK, status="fail", by="class", classes=CLASSES),
    CheckResult(
        check=Check(name="accuracy holds", metric="accuracy_drop", max=0.02),
        status="skip",
        reason="the run has no labels",
    ),
)


def test_the_verdict_is_the_worst_status_and_sets_the_exit_code():
    assert run_of(*RESULTS).verdict == "fail" and run_of(*RESULTS).exit_code == ExitCode.FAILED
    warned = run_of(*RESULTS[:2])
    assert (warned.verdict, warned.exit_code) == ("warn", ExitCode.OK)
    assert run_of(*RESULTS[:2], strict=True).exit_code == ExitCode.FAILED
    assert run_of(RESULTS[0], RESULTS[3]).verdict == "pass"  # skipped checks pass


def test_json_holds_the_verdict_and_every_check_with_its_results():
    found = json.loads(as_json(run_of(*RESULTS)))
    assert found == as_dict(run_of(*RESULTS))
    assert found["verdict"] == "fail" and found["counts"] == {"pass": 1, "warn": 1, "fail": 1, "skip": 1}
    first, _, lock, skipped = found["checks"]
    assert first == {
        "name": "few images failed",
        "metric": "error_rate",
        "per": "run",
        "severity": "fail",
        "status": "pass",
        "value": 0.01,
        "min": None,
        "max": 0.05,
        "reason": "",
    }
    assert lock["value"] is None and lock["by"] == "class"
    assert lock["results"][0] == {
        "class": "stamp_bird",
        "value": 0.41,
        "status": "fail",
        "images": 15,
        "reason": "0.41 > max 0.25",
    }
    assert skipped["status"] == "skip" and skipped["reason"] == "the run has no labels"


def cases(text: str, tmp_path) -> dict[tuple[str, str], list]:
    (tmp_path / "checks.xml").write_text(text)
    return {
        (suite.name, case.name): case.result
        for suite in JUnitXml.fromfile(str(tmp_path / "checks.xml"))
        for case in suite
    }


def test_junit_has_a_suite_per_check_and_a_case_per_class(tmp_path):
    found = cases(junit_xml(run_of(*RESULTS)), tmp_path)
    assert list(found) == [
        ("few images failed", "error_rate (run)"),
        (LONG, "top1_changed (run)"),
        *((LOCK.name, c.name) for c in CLASSES),  # in the result's order
        ("accuracy holds", "accuracy_drop (run)"),
    ]
    failures = {key: r.message for key, rs in found.items() for r in rs if isinstance(r, Failure)}
    assert failures == {
        (LOCK.name, "stamp_bird"): "position_lock of stamp_bird: 0.41 > max 0.25",
        (LOCK.name, "watermark"): "position_lock of watermark: 0.9 > max 0.25",
    }
    skipped = {key: r.message for key, rs in found.items() for r in rs if isinstance(r, Skipped)}
    assert skipped == {
        (LOCK.name, "rare"): "position_lock of rare: 2 images, fewer than min_images 5",
        ("accuracy holds", "accuracy_drop (run)"): "accuracy_drop: the run has no labels",
    }
    xml = JUnitXml.fromfile(str(tmp_path / "checks.xml"))
    assert (xml.tests, xml.failures, xml.skipped, xml.errors) == (7, 2, 2, 0)
    assert "warning: top1_changed: 0.3 &gt; max 0.1" in junit_xml(run_of(*RESULTS))  # a warning passes, said so


def test_under_strict_a_warning_is_a_junit_failure(tmp_path):
    found = cases(junit_xml(run_of(*RESULTS, strict=True)), tmp_path)
    warned = found[(LONG, "top1_changed (run)")]
    assert len(warned) == 1 and isinstance(warned[0], Failure) and warned[0].type == "warn"


def test_markdown_gives_the_verdict_first_then_the_failing_checks_worst_classes_first():
    text = markdown(run_of(*RESULTS))
    lines = text.splitlines()
    assert lines[0] == "## ❌ cambatch check: fail"
    assert "1 failed, 1 warned, 1 passed, 1 skipped" in lines[2]
    failed = text.index("### Failed")
    assert failed < text.index("### Warnings") < text.index("### All checks")
    assert text.index("| watermark | 0.9 |") < text.index("| stamp_bird | 0.41 |")  # the furthest beyond first
    assert "green_ball" not in text[failed : text.index("### Warnings")]  # passing classes are not listed
    assert f"| ⚠️ | {LONG} | top1_changed |" in text


def test_csv_has_a_row_per_run_value_or_class():
    rows = list(csv.DictReader(io.StringIO(as_csv(run_of(*RESULTS)))))
    assert len(rows) == 2 + len(CLASSES) + 1
    assert rows[2] == {
        "check": LOCK.name,
        "metric": "position_lock",
        "per": "class",
        "class": "stamp_bird",
        "value": "0.41",
        "images": "15",
        "min": "",
        "max": "0.25",
        "severity": "fail",
        "status": "fail",
        "reason": "0.41 > max 0.25",
    }


def test_the_table_off_a_terminal_keeps_every_cell_whole():
    stream = io.StringIO()
    print_table(run_of(*RESULTS), stream)
    text = stream.getvalue()
    assert LONG in text and "cambatch check · FAIL" in text
    assert "2 of 3 classes breach; watermark 0.9; stamp_bird 0.41; 1 skipped" in text


def test_junit_and_markdown_files_are_written_whole(tmp_path):
    write_files(run_of(*RESULTS), junit=tmp_path / "ci" / "checks.xml", markdown_file=tmp_path / "ci" / "checks.md")
    assert (tmp_path / "ci" / "checks.xml").read_text() == junit_xml(run_of(*RESULTS))
    assert (tmp_path / "ci" / "checks.md").read_text() == markdown(run_of(*RESULTS))
    assert sorted(p.name for p in (tmp_path / "ci").iterdir()) == ["checks.md", "checks.xml"]  # no temporary left


@pytest.mark.parametrize("status", ["fail", "warn", "pass", "skip"])
def test_every_status_has_its_mark_and_style(status):
    result = CheckResult(check=Check(name="x", metric="images", min=1), status=status, value=1.0)
    assert markdown(run_of(result)).count("cambatch check") == 1
    stream = io.StringIO()
    print_table(run_of(result), stream)
    assert status in stream.getvalue()


def test_a_class_name_with_brackets_stays_text_and_a_failure_without_data_is_said_so():
    odd = ClassResult(name="[sic] bird", value=0.5, images=9, status="fail", reason="0.5 > max 0.25")
    stream = io.StringIO()
    print_table(run_of(CheckResult(check=LOCK, status="fail", by="class", classes=(odd,))), stream)
    assert "[sic] bird 0.5" in stream.getvalue()  # not eaten as rich markup
    empty = CheckResult(check=LOCK, status="fail", reason="no class has a value and at least 5 images", by="class")
    assert "position_lock` per class, <= 0.25: no class has a value" in markdown(run_of(empty))
