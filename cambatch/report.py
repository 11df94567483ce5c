"""Stage 6: the Parquet report, streamed in row groups and published atomically.

A part is written under a dot-name (which pyarrow and pandas skip when reading the folder) and
renamed into place only once complete, so a crash never leaves a half-written part behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .stats import STAT_COLUMNS

METADATA_KEY = b"cambatch"

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("input_root", pa.string()),
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
    ]
)


class ReportWriter:
    """Appends rows to one part file of `report_dir`; `commit()` publishes it, `abort()` drops it."""

    def __init__(self, report_dir: Path, part_name: str, settings: dict, rows_per_group: int = 4096):
        report_dir.mkdir(parents=True, exist_ok=True)
        self.final_path = report_dir / f"{part_name}.parquet"
        self.temp_path = report_dir / f".{part_name}.parquet.tmp"
        schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(settings, default=str).encode()})
        self._writer = pq.ParquetWriter(self.temp_path, schema)
        self._schema = schema
        self._pending: list[dict] = []
        self._rows_per_group = rows_per_group
        self.rows_written = 0

    def write(self, rows: list[dict]) -> None:
        self._pending.extend(rows)
        if len(self._pending) >= self._rows_per_group:
            self._flush()

    def commit(self) -> Path:
        self._flush()
        self._writer.close()
        with open(self.temp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temp_path, self.final_path)
        return self.final_path

    def abort(self) -> None:
        self._writer.close()
        self.temp_path.unlink(missing_ok=True)

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self._schema))
            self.rows_written += len(self._pending)
            self._pending = []


def read_settings(path: Path) -> dict:
    """The run settings stored in a part's schema metadata."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(METADATA_KEY, b"{}"))
