"""The report's files: which parts are published, what they are called, and the settings they carry.

A report is a folder of Parquet parts. A part is written under a dot-name and renamed into place
once complete (`cambatch.report.writer`), so every reader, resume included, lists the published
parts with `published_parts` and never sees a torn file. A report on a store (`s3://bucket/cams`,
written by `cambatch.runner.remote_out`) is read in place through pyarrow's filesystem over fsspec
(`report_files`): only the row groups and columns asked for are fetched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import UsageError
from ..layout import OutputLayout
from ..sources.remote import filesystem, is_url, store_error
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

    def __init__(self, part: Path | str, reason: str):
        folder = PurePosixPath(part).parent if isinstance(part, str) else part.parent
        super().__init__(
            f"damaged report part {part} (not a complete Parquet file: {reason}); move it out of {folder} "
            "(a rerun of `cambatch run` redoes its images) or restore it from a copy"
        )
        self.part = part


def footer(part: Path | str, filesystem: pafs.FileSystem | None = None) -> pq.FileMetaData:
    """A part's Parquet footer (rows, schema, settings), or `DamagedPart` naming the file."""
    try:
        return pq.read_metadata(part, filesystem=filesystem)
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


def part_settings(part: Path | str, filesystem: pafs.FileSystem | None = None) -> dict[str, Any]:
    """The run settings one part stores in its schema metadata."""
    return settings_in(footer(part, filesystem).schema.to_arrow_schema())


def settings_in(schema: pa.Schema) -> dict[str, Any]:
    """The run settings a part's schema carries in its metadata."""
    return json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))


def read_settings(out: Path | str) -> dict[str, Any]:
    """The settings of the newest run that wrote the report, plus `run_ids`: every run found.

    A report resumed or sharded over several runs has one part (or more) per run.
    """
    return settings_of(*report_files(out))


def settings_of(parts: list[str], filesystem: pafs.FileSystem | None = None) -> dict[str, Any]:
    """`read_settings` of parts already listed (`report_files`)."""
    return newest_settings((part, part_settings(part, filesystem)) for part in parts)


def newest_settings(by_part: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The settings of the newest run among (part, settings) pairs, plus `run_ids`: every run found."""
    by_run: dict[str, dict] = {}
    for part, settings in by_part:
        by_run[str(settings.get("run_id", PurePosixPath(part).stem))] = settings
    return {**by_run[newest_run(by_run)], "run_ids": sorted(by_run)}


def report_files(out: Path | str) -> tuple[list[str], pafs.FileSystem | None]:
    """`report_parts` for every reader: the parts' paths and the pyarrow filesystem to read them through
    (None: local). `out` may also be a URL of a run's folder, its `report/` or one part on a store.
    """
    if not is_url(str(out)):
        return [str(part) for part in report_parts(out)], None
    return _store_parts(str(out).rstrip("/"))


def _store_parts(url: str) -> tuple[list[str], pafs.FileSystem]:
    fs, path = filesystem(url)
    try:
        parts = _listed_parts(fs, path)
    except Exception as exc:  # noqa: BLE001 - every store raises its own kinds; all mean the report cannot be read
        raise store_error(url, exc) from None
    if not parts:
        raise FileNotFoundError(f"no cambatch report under {url} (expected {url}/report/part-*.parquet)")
    arrow = arrow_filesystem(fs)
    for part in parts:
        footer(part, arrow)
    return parts, arrow


def arrow_filesystem(fs) -> pafs.FileSystem:
    """An fsspec filesystem as pyarrow reads through it (its credentials and endpoint, not pyarrow's own)."""
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def store_parts(fs, folder: str) -> list[str]:
    """`published_parts` of a folder on an fsspec filesystem: their paths on it, in name order.

    A missing folder is `FileNotFoundError` (fsspec's), for the caller to take as it means.
    """
    fs.invalidate_cache(folder)  # fsspec caches listings per filesystem: a reader must see new parts
    found = (entry.rstrip("/") for entry in fs.ls(folder, detail=False))
    return sorted(entry for entry in found if is_published(PurePosixPath(entry).name))


def _listed_parts(fs, path: str) -> list[str]:
    """The published parts at `path` on an fsspec filesystem: one part, a report folder, or a run's folder."""
    fs.invalidate_cache(path)
    if path.endswith(".parquet"):
        fs.info(path)  # a missing part is `FileNotFoundError`, not a damaged one
        return [path]
    report = f"{path}/{OutputLayout(Path('.')).report_dir.name}"
    return store_parts(fs, report if fs.isdir(report) else path)
