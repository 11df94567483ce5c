"""Run manifests: `OUT/runs/<run_id>.json`, one per run, rewritten as its status changes, and read back
(`cambatch runs`, the settings of live shards, runs that died).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CambatchError
from ..layout import OutputLayout
from ..report.parts import published_parts
from ..report.settings import summary_of
from ..sources.shard import parse_shard
from .lock import is_held

if TYPE_CHECKING:  # the job imports torch; a manifest is read without it (`cambatch runs`)
    from .job import RunResult
    from .remote_out import StagedOut


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


class RunManifest:
    """`OUT/runs/<run_id>.json` of one run, rewritten as the run's status changes."""

    def __init__(
        self,
        *,
        layout: OutputLayout,
        settings: dict,
        started_at: datetime,
        result: RunResult,
        staged: StagedOut | None,
    ):
        self.layout, self.settings, self.started_at, self.result = layout, settings, started_at, result
        self.staged = staged

    def write(self, status: str, *, best_effort: bool = False) -> None:
        """Rewrite the manifest; `best_effort`: on the way out of a failure, which nothing here may replace by
        another error (a full disk, a store that went away: the failure being reported is the one that counts).
        """
        if best_effort and not self.layout.root.is_dir():
            return  # OUT vanished: writing the manifest would recreate it
        try:
            path = self._write(status)
            if self.staged is not None:
                self.staged.manifest_written(path, final=status != "running")
        except Exception:
            if not best_effort:
                raise

    def _write(self, status: str) -> Path:
        r = self.result
        ended = datetime.now(timezone.utc).isoformat() if status != "running" else None
        return write_manifest(
            self.layout.manifest_path(r.run_id),
            {
                "run_id": r.run_id,
                "status": status,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "argv": sys.argv,
                "shard": r.shard,
                "started": self.started_at.isoformat(),
                "ended": ended,
                **summary_of(self.settings),
                "versions": versions(),
                "counts": {"images": r.images, "ok": r.ok, "error": r.errors, "skipped": r.skipped},
                "elapsed_s": round(r.elapsed_s, 3),
                "images_per_s": round(r.images_per_s, 3),
                "interrupted_by": r.interrupted,
                "faithfulness": r.faithfulness,
                "parts": self._parts(),
                "settings": {k: v for k, v in self.settings.items() if k != "class_names"},
            },
        )

    def _parts(self) -> list[str]:
        """The report parts this run has published (a Ray run's actors each publish their own)."""
        prefix = self.layout.part_name(self.result.run_id, parse_shard(self.result.shard).tag) + "-"
        names = {part.name for part in published_parts(self.layout.report_dir) if part.name.startswith(prefix)}
        # A Ray run's actors upload their parts themselves; a store that failed is not asked again.
        if self.staged is not None and self.result.processed and not self.staged.failed:
            names.update(self.staged.parts_on_store(prefix))
        return sorted(names)
