"""Writing the Parquet report: row groups streamed into parts, each published atomically.

A part is written under a dot-name (which pyarrow, pandas and `parts.published_parts` skip) and
renamed into place only once complete, so a crash never leaves a half-written part behind.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import METADATA_KEY, SCHEMA


class _Part:
    """One part file being written under a dot-name; renamed into place by `publish()`."""

    def __init__(self, report_dir: Path, name: str, schema: pa.Schema):
        self.final_path = report_dir / f"{name}.parquet"
        self.temp_path = report_dir / f".{name}.parquet.tmp"
        try:
            self.writer = pq.ParquetWriter(self.temp_path, schema)
        except BaseException:  # a full disk fails at the header already: leave no torn file behind
            self.temp_path.unlink(missing_ok=True)
            raise
        self.images = 0
        self.opened = time.monotonic()

    def publish(self) -> Path:
        self.writer.close()
        with open(self.temp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temp_path, self.final_path)
        return self.final_path

    def discard(self) -> None:
        try:
            self.writer.close()
        except OSError:
            pass  # a full or vanished disk: the file is dropped anyway
        finally:
            self.temp_path.unlink(missing_ok=True)


class ReportWriter:
    """Streams rows into parts `<prefix>-00000.parquet`, `-00001`, ... of `report_dir`.

    A part is published (atomic rename) once it holds `images_per_part` images or has been open
    `part_seconds`, so a killed run loses at most one part's work and never leaves a torn file.
    Callers add an image's rows only after its overlays are on disk. `on_publish` is called after
    each part is in place (an OUT on a store uploads it then: `cambatch.runner.remote_out`).
    """

    def __init__(
        self,
        report_dir: Path,
        prefix: str,
        settings: dict,
        *,
        images_per_part: int = 1000,
        part_seconds: float = 60.0,
        rows_per_group: int = 4096,
        on_publish: Callable[[], None] | None = None,
    ):
        report_dir.mkdir(parents=True, exist_ok=True)
        self.report_dir = report_dir
        self.prefix = prefix
        self.schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(settings, default=str).encode()})
        self.images_per_part = images_per_part
        self.part_seconds = part_seconds
        self.rows_per_group = rows_per_group
        self.on_publish = on_publish
        self.published: list[Path] = []
        self.rows_added = 0  # rows handed to `add_image`, published or not yet
        self._part: _Part | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add_image(self, rows: pa.Table) -> None:
        """Add all the rows of one image, in the report's schema (an image's rows never straddle two parts)."""
        if self._part is None:
            self._part = _Part(self.report_dir, f"{self.prefix}-{len(self.published):05d}", self.schema)
        self._pending.append(rows)
        self.rows_added += rows.num_rows
        self._pending_rows += rows.num_rows
        self._part.images += 1
        if self._pending_rows >= self.rows_per_group:
            self._flush()
        if self._part.images >= self.images_per_part or time.monotonic() - self._part.opened >= self.part_seconds:
            self.publish()

    def publish(self) -> None:
        """Publish the open part, if any."""
        if self._part is not None:
            self._flush()
            self.published.append(self._part.publish())
            self._part = None
            if self.on_publish is not None:
                self.on_publish()

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
            self._pending, self._pending_rows = [], 0

    def _flush(self) -> None:
        if self._pending:
            rows = pa.concat_tables(self._pending).replace_schema_metadata(self.schema.metadata)
            self._part.writer.write_table(rows, row_group_size=self.rows_per_group)
            self._pending, self._pending_rows = [], 0
