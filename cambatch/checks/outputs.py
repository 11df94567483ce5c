"""A `CheckRun` written out: JSON (also the verdict kept in OUT/checks/), JUnit XML, Markdown, CSV and the
terminal table, all from the same objects; the cells the table and the Markdown share come from `cells`.

JSON: `{"verdict", "strict", "out", "run_id", "baseline", "baseline_run_id", "policy", "checked_at",
"counts", "checks": [{"name", "metric", "per", "severity", "status", "value", "min", "max", "reason",
"by", "results": [{"class", "value", "status", "images", "reason"}]}]}` (`value` for per = "run";
`by` and `results` for per = "class"; NaN as null).

JUnit: one `<testsuite>` per check and one `<testcase>` per class of a per-class check (one for a
run-level check, or for a check without data); a failure names the value and the limit; a skipped
case says why; a warning is a passing case with the breach in its `<system-out>`, or a failure
under `--strict`. It is the schema Jenkins' JUnit plugin and GitLab's `artifacts:reports:junit` read.
"""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..inspection.options import Format
from ..inspection.tables import print_whole
from .results import STATUSES, CheckResult, CheckRun

WORST_SHOWN = 5  # breaching classes listed per check in the table and the Markdown
CELLS = ("status", "check", "metric", "per", "value", "limits", "detail")  # the columns of the table and the Markdown
_MARKS = {"pass": "✅", "warn": "⚠️", "fail": "❌", "skip": "⏭️"}
_STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def as_dict(checked: CheckRun) -> dict[str, Any]:
    """The JSON object of `--format json` (and of the verdict kept in OUT/checks/)."""
    return {
        "verdict": checked.verdict,
        "strict": checked.strict,
        "out": checked.out,
        "run_id": checked.run_id,
        "baseline": checked.baseline,
        "baseline_run_id": checked.baseline_run_id,
        "policy": checked.policy,
        "checked_at": checked.checked_at,
        "counts": {status: checked.count(status) for status in STATUSES},
        "checks": [_check_dict(result) for result in checked.checks],
    }


def _check_dict(result: CheckResult) -> dict[str, Any]:
    check = result.check
    found = {
        "name": check.name,
        "metric": check.metric,
        "per": check.per,
        "severity": check.severity,
        "status": result.status,
        "value": _plain(result.value) if check.per == "run" else None,
        "min": check.min,
        "max": check.max,
        "reason": result.reason,
    }
    if check.per == "class":
        found["by"] = result.by
        found["results"] = [
            {"class": c.name, "value": _plain(c.value), "status": c.status, "images": c.images, "reason": c.reason}
            for c in result.classes
        ]
    return found


def _plain(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def as_json(checked: CheckRun) -> str:
    return json.dumps(as_dict(checked), indent=1, ensure_ascii=False) + "\n"


def as_csv(checked: CheckRun) -> str:
    """One row per result: a run-level check's value, or one class of a per-class check."""
    stream = io.StringIO()
    names = ["check", "metric", "per", "class", "value", "images", "min", "max", "severity", "status", "reason"]
    writer = csv.DictWriter(stream, names, lineterminator="\n")
    writer.writeheader()
    for result in checked.checks:
        check = result.check
        common = {"check": check.name, "metric": check.metric, "per": check.per, "min": check.min, "max": check.max}
        common["severity"] = check.severity
        if not result.classes:
            writer.writerow({**common, "value": result.value, "status": result.status, "reason": result.reason})
        for c in result.classes:
            found = {"class": c.name, "value": c.value, "images": c.images, "status": c.status, "reason": c.reason}
            writer.writerow({**common, **found})
    return stream.getvalue()


def cells(result: CheckResult) -> dict[str, str]:
    """A check as one row of text, by `CELLS`."""
    check = result.check
    value = "" if result.value is None else f"{result.value:.4g}"
    limits = check.limits + ("" if check.severity == "fail" else f" ({check.severity})")
    row = (result.status, check.name, check.metric, check.per, value, limits, _detail(result))
    return dict(zip(CELLS, row, strict=True))


def _detail(result: CheckResult) -> str:
    if not result.classes:
        return result.reason
    breaching = result.with_status("fail") + result.with_status("warn")
    skipped = len(result.with_status("skip"))
    judged = len(result.classes) - skipped
    parts = [f"{len(breaching)} of {judged} classes breach" if judged else result.reason]
    parts += [f"{c.name} {c.value:.4g}" for c in breaching[:WORST_SHOWN]]
    if skipped:
        parts.append(f"{skipped} skipped ({result.with_status('skip')[0].reason}{', ...' if skipped > 1 else ''})")
    return "; ".join(parts)


def _headline(checked: CheckRun) -> str:
    done = {"fail": "failed", "warn": "warned", "pass": "passed", "skip": "skipped"}
    counts = ", ".join(f"{checked.count(status)} {word}" for status, word in done.items())
    baseline = f" against {checked.baseline} (run {checked.baseline_run_id})" if checked.baseline else ""
    return f"run {checked.run_id} in {checked.out}{baseline}; {checked.policy}: {counts}"


def print_table(checked: CheckRun, stream: TextIO) -> None:
    """The checks as a table: on a terminal fitted to it, elsewhere whole cells (`tables.print_whole`)."""
    strict = " (strict)" if checked.strict else ""
    title = f"cambatch check · {checked.verdict.upper()}{strict}"
    table = Table(title=title, caption=_headline(checked), caption_justify="left")
    for name in CELLS:
        table.add_column(name, justify="right" if name == "value" else "left")
    for result in checked.checks:
        row = {name: escape(text) for name, text in cells(result).items()}  # a class named `[x]` stays text
        row["status"] = f"[{_STYLES[result.status]}]{row['status']}[/]"
        table.add_row(*row.values())
    print_whole(table, Console(file=stream, highlight=False))


def markdown(checked: CheckRun) -> str:
    """A CI job summary: the verdict first, then the breaching checks with their worst classes, then all checks."""
    lines = [f"## {_MARKS[checked.verdict]} cambatch check: {checked.verdict}", "", _headline(checked), ""]
    for status, title in (("fail", "Failed"), ("warn", "Warnings")):
        breaching = [r for r in checked.checks if r.status == status]
        if breaching:
            lines += [f"### {title}", ""]
            for result in breaching:
                lines += _markdown_check(result)
    lines += ["### All checks", "", "| | " + " | ".join(CELLS[1:]) + " |", "|---" * len(CELLS) + "|"]
    for result in checked.checks:
        row = cells(result)
        row["status"] = _MARKS[result.status]
        lines.append("| " + " | ".join(_escaped(v) for v in row.values()) + " |")
    return "\n".join(lines) + "\n"


def _markdown_check(result: CheckResult) -> list[str]:
    check = result.check
    head = f"- **{_escaped(check.name)}**: `{check.metric}` per {check.per}, {check.limits}"
    worst = result.with_status(result.status)
    if not worst:  # a run-level check, or one without data
        return [f"{head}: {_escaped(result.reason)}", ""]
    rows = [f"  | {result.by or 'class'} | value | images | breach |", "  |---|---|---|---|"]
    rows += [f"  | {_escaped(c.name)} | {c.value:.4g} | {c.images} | {c.reason} |" for c in worst[:WORST_SHOWN]]
    more = [f"  ... and {len(worst) - WORST_SHOWN} more", ""] if len(worst) > WORST_SHOWN else [""]
    return [f"{head}: {len(worst)} of {len(result.classes)} classes", "", *rows, *more]


def _escaped(text: str) -> str:
    return str(text).replace("|", "\\|")


def junit_xml(checked: CheckRun) -> str:
    """The checks as JUnit XML (see the module's docstring)."""
    suites = ET.Element("testsuites", name="cambatch check")
    totals = dict.fromkeys(("tests", "failures", "skipped"), 0)
    for result in checked.checks:
        suite = ET.SubElement(suites, "testsuite", name=result.check.name, timestamp=_iso(checked.checked_at))
        properties = ET.SubElement(suite, "properties")
        for name in ("metric", "per", "limits", "severity"):
            ET.SubElement(properties, "property", name=name, value=str(getattr(result.check, name)))
        counts = dict.fromkeys(totals, 0)
        for name, status, message in _cases(result):
            case = ET.SubElement(suite, "testcase", name=name, classname=result.check.name, time="0")
            counts["tests"] += 1
            if checked.failing(status):
                ET.SubElement(case, "failure", message=message, type=status).text = message
                counts["failures"] += 1
            elif status == "skip":
                ET.SubElement(case, "skipped", message=message)
                counts["skipped"] += 1
            elif status == "warn":
                ET.SubElement(case, "system-out").text = f"warning: {message}"
        suite.attrib.update({k: str(v) for k, v in counts.items()} | {"errors": "0"})
        totals = {k: totals[k] + counts[k] for k in totals}
    suites.attrib.update({k: str(v) for k, v in totals.items()} | {"errors": "0"})
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _cases(result: CheckResult) -> list[tuple[str, str, str]]:
    """(name, status, message) of each test case of a check."""
    metric = result.check.metric
    if not result.classes:
        message = f"{metric}: {result.reason}" if result.reason else f"{metric} = {result.value:.4g}"
        return [(f"{metric} ({result.check.per})", result.status, message)]
    return [(c.name, c.status, f"{metric} of {c.name}: {c.reason or f'{c.value:.4g}'}") for c in result.classes]


def _iso(checked_at: str) -> str:
    """`20250101T120000123456Z` as JUnit's timestamp, `2025-01-01T12:00:00`."""
    t = checked_at
    return f"{t[0:4]}-{t[4:6]}-{t[6:8]}T{t[9:11]}:{t[11:13]}:{t[13:15]}"


def emit(checked: CheckRun, fmt: Format, stream: TextIO) -> None:
    """The results on `stream`: the table for people, JSON or CSV for scripts."""
    if fmt == "table":
        print_table(checked, stream)
    else:
        stream.write(as_json(checked) if fmt == "json" else as_csv(checked))


def write_files(checked: CheckRun, *, junit: Path | None = None, markdown_file: Path | None = None) -> None:
    """`--junit FILE` and `--markdown FILE`, each written whole (a temporary name, then renamed)."""
    for path, text in ((junit, junit_xml), (markdown_file, markdown)):
        if path is not None:
            write_whole(Path(path), text(checked))


def write_whole(path: Path, text: str) -> None:
    """`text` to `path` under a temporary name, then renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)
