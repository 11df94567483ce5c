"""`cambatch runs OUT`: the runs recorded in OUT/runs/ as a table, CSV or JSON (read from their manifests)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from ..layout import OutputLayout
from ..report.parts import published_parts
from ..runner.manifest import live_status, read_manifests
from .tables import print_whole

RUN_COLUMNS = ("run", "status", "started", "shard", "model", "method", "device", "ok", "error", "skipped", "img/s")


def run_rows(out: Path) -> list[dict]:
    """One row per recorded run, oldest first: what `cambatch runs` prints (status `died` when the process is gone)."""
    rows = []
    for r in read_manifests(out):
        status = live_status(r, out)
        counts = r.get("counts", {})
        if status == "died":  # its manifest never heard of its images: what it published says
            counts = {**counts, **published_counts(out, str(r.get("run_id", "")))}
        rate = r.get("images_per_s")
        values = (r.get("run_id", "?"), status, str(r.get("started", ""))[:19], r.get("shard", ""))
        values += (r.get("model", ""), r.get("method", ""), r.get("device", ""))
        values += (counts.get("ok", ""), counts.get("error", ""), counts.get("skipped", ""))
        values += (round(rate, 1) if isinstance(rate, (int, float)) else "",)
        rows.append(dict(zip(RUN_COLUMNS, values, strict=True)))
    return rows


def published_counts(out: Path, run_id: str) -> dict[str, int]:
    """The images one run's published parts hold, `ok` and `error` (a killed run's work that was kept)."""
    layout = OutputLayout(Path(out))
    prefix = layout.part_name(run_id, "") + "-"
    found: dict[str, set] = {"ok": set(), "error": set()}
    for part in published_parts(layout.report_dir):
        if part.name.startswith(prefix):
            table = pq.read_table(part, columns=["input_root", "path", "status"])
            for root, path, status in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
                found.setdefault(status, set()).add((root, path))
    return {status: len(images) for status, images in found.items()}


def print_runs(out: Path, console: Console, fmt: str = "table") -> int:
    """The runs of `out` as a table (off a terminal every cell whole: a cron log, `| cat`), CSV or JSON."""
    rows = run_rows(out)
    if fmt == "csv":
        writer = csv.DictWriter(console.file, fieldnames=RUN_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif fmt == "json":
        console.file.write(json.dumps(rows, indent=1, default=str) + "\n")
    else:
        table = Table(title=f"cambatch runs in {out}")
        for column in RUN_COLUMNS:
            table.add_column(column, justify="right" if column in ("ok", "error", "skipped", "img/s") else "left")
        for row in rows:
            table.add_row(*(str(value) for value in row.values()))
        print_whole(table, console)
    return len(rows)
