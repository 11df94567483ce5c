"""The metric catalog: declared once, every metric the issue names at its levels, every summarize flag as a
count, and the docs' table generated from it."""

from __future__ import annotations

from conftest import REPO
from inspecting_support import synthesize_run

from cambatch.checks.metrics import LEVELS, METRICS, NEEDS, metrics_markdown
from cambatch.inspection.summarize import summarize_run

RUN = ("error_rate", "images", "accuracy", "max_box_acc_v2", "pxap", "pointing_acc", "energy_in_gt")
CLASS = ("class_accuracy", "position_lock", "border_energy_ratio", "active_area_ratio", "energy_in_gt", "mask_iou")
BASELINE_BOTH = ("top1_changed", "peak_shift", "map_similarity", "new_flags")


def test_the_metrics_of_the_issue_are_there_at_their_levels():
    for name in RUN:
        assert "run" in METRICS[name].levels, name
    for name in CLASS:
        assert "class" in METRICS[name].levels, name
    for name in BASELINE_BOTH:
        assert METRICS[name].levels == ("run", "class") and "baseline" in METRICS[name].needs, name
    assert METRICS["accuracy_drop"].levels == ("run",) and METRICS["class_accuracy_drop"].levels == ("class",)


def test_every_metric_is_complete():
    for name, metric in METRICS.items():
        assert metric.name == name and metric.doc and metric.better in ("lower", "higher")
        assert metric.levels and set(metric.levels) <= set(LEVELS)
        assert set(metric.needs) <= set(NEEDS), name


def test_every_summarize_flag_is_a_metric(tmp_path):
    """Summarize's boolean `<flag>_flag` columns (with maps and annotations absent, those it always has) each
    have their `flag_<flag>` count, and the catalog names no flag summarize lacks."""
    table = summarize_run(synthesize_run(tmp_path / "run", images=12, classes=3, errors=0)).table
    flags = {c.removesuffix("_flag") for c in table.columns if c.endswith("_flag")}
    catalog = {name.removeprefix("flag_") for name in METRICS if name.startswith("flag_")}
    assert flags <= catalog and catalog == flags | {"off_object"}  # off-object: only with --annotations


def test_the_docs_table_lists_every_metric_and_the_page_marks_where_it_goes():
    table = metrics_markdown()
    lines = table.strip().splitlines()
    assert lines[0] == "| metric | per | better | needs | what it measures |"
    assert len(lines) == 2 + len(METRICS)
    for name, metric in METRICS.items():
        assert any(line.startswith(f"| `{name}` | {', '.join(metric.levels)} | {metric.better} |") for line in lines)
    page = (REPO / "docs" / "check.md").read_text(encoding="utf-8")
    assert page.count("<!-- generated: metrics -->") == 1
