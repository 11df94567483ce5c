"""The report's files: which parts are published, what they are called, and the settings they carry.

A report is a folder of Parquet parts. A part is written under a dot-name and renamed into place
once complete (`cambatch.report.writer`), so every reader, resume included, lists the published
parts with `published_parts` and never sees a torn file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UsageError
from ..layout import OutputLayout
from .schema import METADATA_KEY, newest_run


def is_published(name: str) -> bool:
    """Parts being written start with `.` (and pyarrow skips `_` files): neither is part of the report."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def published_parts(report_dir: Path) -> list[Path]:
    """The complete part files of a report folder, in name order (an empty list when there is none)."""
    if not report_dir.is_dir():
        return []
    return sorted(p for p in report_dir.iterdir() if is_published(p.name))


class DamagedPart(UsageError):
    """A published part that is not a complete Parquet file (truncated, copied half-way, overwritten)."""

    def __init__(self, part: Path, reason: str):
        folder = part.parent
        super().__init__(
            f"damaged report part {part} (not a complete Parquet file: {reason}); move it out of {folder} "
            "(a rerun of `cambatch run` redoes its images) or restore it from a copy"
        )
        self.part = part


def footer(part: Path) -> pq.FileMetaData:
    """A part's Parquet footer (rows, schema, settings), or `DamagedPart` naming the file."""
    try:
        return pq.read_metadata(part)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DamagedPart(part, reason) from None


def complete_parts(report_dir: Path) -> list[Path]:
    """`published_parts`, each checked to be a whole Parquet file (its footer reads): `DamagedPart` if not."""
    parts = published_parts(report_dir)
    for part in parts:
        footer(part)
    return parts


def report_dir_of(out: Path | str) -> Path:
    """The report folder for `out`: a run's output folder (holding `report/`) or the report folder itself."""
    given = Path(out).expanduser()
    layout = OutputLayout(given)
    return layout.report_dir if layout.report_dir.is_dir() else given


def report_parts(out: Path | str) -> list[Path]:
    """The parts of the report in `out` (a run's folder, its `report/`, or one Parquet file).

    Raises `FileNotFoundError` (with what was expected) when there is no published part.
    """
    given = Path(out).expanduser()
    if given.is_file():
        footer(given)
        return [given]
    folder = report_dir_of(given)
    if not folder.is_dir():
        raise FileNotFoundError(f"no cambatch report under {given} (expected {OutputLayout(given).report_dir})")
    parts = complete_parts(folder)
    if not parts:
        raise FileNotFoundError(f"{folder} holds no complete report part (*.parquet)")
    return parts


def part_settings(part: Path) -> dict[str, Any]:
    """The run settings one part stores in its schema metadata."""
    metadata = footer(part).schema.to_arrow_schema().metadata or {}
    return json.loads(metadata.get(METADATA_KEY, b"{}"))


def read_settings(out: Path | str) -> dict[str, Any]:
    """The settings of the newest run that wrote the report, plus `run_ids`: every run found.

    A report resumed or sharded over several runs has one part (or more) per run.
    """
    by_run: dict[str, dict] = {}
    for part in report_parts(out):
        settings = part_settings(part)
        by_run[str(settings.get("run_id", part.stem))] = settings
    return {**by_run[newest_run(by_run)], "run_ids": sorted(by_run)}
