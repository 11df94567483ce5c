"""Stage 6: the Parquet report, streamed in row groups and published atomically.

A part is written under a dot-name (which pyarrow and pandas skip when reading the folder) and
renamed into place only once complete, so a crash never leaves a half-written part behind.
`file_size` and `mtime_ns` identify the version of the image a row describes (for resume).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .stats import STAT_COLUMNS

METADATA_KEY = b"cambatch"

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("input_root", pa.string()),
        ("file_size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("rank", pa.int16()),
        ("class_index", pa.int32()),
        ("class_name", pa.string()),
        ("probability", pa.float32()),
        ("logit", pa.float32()),
        *[(name, pa.float32()) for name in STAT_COLUMNS],
        ("overlay_path", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("model", pa.string()),
        ("method", pa.string()),
        ("run_id", pa.string()),
        ("label", pa.string()),
        ("correct", pa.bool_()),
        # --faithfulness (see cambatch.methods.faithfulness); null without it
        ("masked_probability", pa.float32()),
        ("confidence_drop", pa.float32()),
        ("confidence_increase", pa.bool_()),
    ]
)


class _Part:
    """One part file being written under a dot-name; renamed into place by `publish()`."""

    def __init__(self, report_dir: Path, name: str, schema: pa.Schema):
        self.final_path = report_dir / f"{name}.parquet"
        self.temp_path = report_dir / f".{name}.parquet.tmp"
        self.writer = pq.ParquetWriter(self.temp_path, schema)
        self.images = 0
        self.opened = time.monotonic()

    def publish(self) -> Path:
        self.writer.close()
        with open(self.temp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temp_path, self.final_path)
        return self.final_path

    def discard(self) -> None:
        self.writer.close()
        self.temp_path.unlink(missing_ok=True)


class ReportWriter:
    """Streams rows into parts `<prefix>-00000.parquet`, `-00001`, ... of `report_dir`.

    A part is published (atomic rename) once it holds `images_per_part` images or has been open
    `part_seconds`, so a killed run loses at most one part's work and never leaves a torn file.
    Callers add an image's rows only after its overlays are on disk.
    """

    def __init__(self, report_dir: Path, prefix: str, settings: dict, images_per_part: int = 1000,
                 part_seconds: float = 60.0, rows_per_group: int = 4096):  # fmt: skip
        report_dir.mkdir(parents=True, exist_ok=True)
        self.report_dir = report_dir
        self.prefix = prefix
        self.schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(settings, default=str).encode()})
        self.images_per_part = images_per_part
        self.part_seconds = part_seconds
        self.rows_per_group = rows_per_group
        self.published: list[Path] = []
        self._part: _Part | None = None
        self._pending: list[dict] = []

    def add_image(self, rows: list[dict]) -> None:
        """Add all the rows of one image (an image's rows never straddle two parts)."""
        if self._part is None:
            self._part = _Part(self.report_dir, f"{self.prefix}-{len(self.published):05d}", self.schema)
        self._pending.extend(rows)
        self._part.images += 1
        if len(self._pending) >= self.rows_per_group:
            self._flush()
        if self._part.images >= self.images_per_part or time.monotonic() - self._part.opened >= self.part_seconds:
            self.publish()

    def publish(self) -> None:
        """Publish the open part, if any."""
        if self._part is not None:
            self._flush()
            self.published.append(self._part.publish())
            self._part = None

    def close(self) -> None:
        """Publish what is left; a run that wrote nothing still leaves a readable (empty) part."""
        if self._part is None and not self.published:
            self._part = _Part(self.report_dir, f"{self.prefix}-{len(self.published):05d}", self.schema)
        self.publish()

    def abort(self) -> None:
        """Drop the open part (its images will be redone by the next run)."""
        if self._part is not None:
            self._part.discard()
            self._part = None
            self._pending = []

    def _flush(self) -> None:
        if self._pending:
            self._part.writer.write_table(pa.Table.from_pylist(self._pending, schema=self.schema))
            self._pending = []


def read_settings(path: Path) -> dict:
    """The run settings stored in a part's schema metadata (a folder: its newest part's)."""
    if Path(path).is_dir():
        path = max((p for p in Path(path).glob("*.parquet") if not p.name.startswith(".")), key=os.path.getmtime)
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(METADATA_KEY, b"{}"))
