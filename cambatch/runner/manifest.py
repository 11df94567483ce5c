"""Run manifests: `OUT/runs/<run_id>.json`, one per run, and `cambatch runs OUT` to list them."""

from __future__ import annotations

import csv
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..errors import CambatchError
from ..inspection.tables import print_whole
from ..layout import OutputLayout
from ..sources.shard import parse_shard
from .lock import is_held


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("cambatch", "torch", "torchvision", "timm"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def write_manifest(target: Path, record: dict) -> Path:
    """Write (or rewrite) a run's manifest (`OutputLayout.manifest_path`) atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, default=str)
    temp = target.with_name(f".{target.name}.tmp")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, target)
    except OSError:
        temp.unlink(missing_ok=True)
        if not target.is_file():
            raise
        # A full disk has no room for a second copy, but rewriting the file in place reuses its own
        # blocks: the manifest still says `failed` (readers skip it if a kill tears this write).
        target.write_text(text, encoding="utf-8")
    return target


def read_manifests(out: Path) -> list[dict]:
    folder = OutputLayout(Path(out)).runs_dir
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a manifest being rewritten right now, or damaged: listing goes on
    return sorted(records, key=lambda r: r.get("started", ""))


def live_status(record: dict, out: Path) -> str:
    """A manifest's status, `died` for a `running` one whose process no longer holds its shard's lock."""
    status = str(record.get("status", "?"))
    if status != "running":
        return status
    try:
        tag = parse_shard(str(record.get("shard") or "0/1")).tag
    except CambatchError:
        return status
    return status if is_held(OutputLayout(Path(out)).lock_path(tag)) else "died"


def live_shard_settings(out: Path, shard_tag: str) -> list[dict]:
    """The settings of the other shards' runs going on now in `out` (they may not have published a part yet)."""
    found = []
    for record in read_manifests(out):
        if record.get("status") != "running" or not isinstance(record.get("settings"), dict):
            continue
        try:
            tag = parse_shard(str(record.get("shard") or "0/1")).tag
        except CambatchError:
            continue
        if tag != shard_tag and live_status(record, out) == "running":
            found.append(record["settings"])
    return found


def mark_died(out: Path, shard_tag: str) -> list[str]:
    """Rewrite the `running` manifests of a shard whose lock this process now holds as `died`; their run ids."""
    marked = []
    for record in read_manifests(out):
        if record.get("status") != "running":
            continue
        try:
            tag = parse_shard(str(record.get("shard") or "0/1")).tag
        except CambatchError:
            continue
        if tag == shard_tag and record.get("run_id"):
            write_manifest(OutputLayout(Path(out)).manifest_path(record["run_id"]), {**record, "status": "died"})
            marked.append(record["run_id"])
    return marked


RUN_COLUMNS = ("run", "status", "started", "shard", "model", "method", "device", "ok", "error", "skipped", "img/s")


def run_rows(out: Path) -> list[dict]:
    """One row per recorded run, oldest first: what `cambatch runs` prints (status `died` when the process is gone)."""
    rows = []
    for r in read_manifests(out):
        counts = r.get("counts", {})
        rate = r.get("images_per_s")
        values = (r.get("run_id", "?"), live_status(r, out), str(r.get("started", ""))[:19], r.get("shard", ""))
        values += (r.get("model", ""), r.get("method", ""), r.get("device", ""))
        values += (counts.get("ok", ""), counts.get("error", ""), counts.get("skipped", ""))
        values += (round(rate, 1) if isinstance(rate, (int, float)) else "",)
        rows.append(dict(zip(RUN_COLUMNS, values, strict=True)))
    return rows


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
