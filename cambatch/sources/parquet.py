"""Parquet files of images (what Hugging Face `datasets` and img2dataset export): one sample a row,
named `file.parquet#<row>`.

The image column is `image` (or `img`, `jpg`, `png`) when there is one, else the first column of
bytes or of `struct<bytes, path>` (how `datasets` stores an `Image` feature; a row with no bytes
is read from its `path`, relative to the Parquet file). Listing reads the footer only; a loader
worker reads the row group of its sample, one column, and keeps the last one it read, so a
worker reads each row group it meets once.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pyarrow as pa

from ..errors import UsageError
from .remote import is_url

PARQUET_SUFFIXES = (".parquet", ".pq")
_PREFERRED = ("image", "img", "jpg", "jpeg", "png", "webp")


def is_parquet_name(name: str) -> bool:
    """Whether a file is Parquet by its name."""
    return name.lower().endswith(PARQUET_SUFFIXES)


def parquet_rows(fs, path: str, url: str, *, version: int) -> list[tuple[int, ParquetCell, str | None]] | None:
    """`(row, reader, label)` of every row of the Parquet file at `path` on `fs`; None without an image column.

    `url` names the file for the workers' readers, `version` (its mtime) keeps their cache honest.
    `label` comes from a `label` column: its text, or a `datasets` ClassLabel's name for its index.
    """
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            column = image_column(parquet.schema_arrow)
            if column is None:
                return None
            labels = _labels(parquet) if "label" in parquet.schema_arrow.names else None
            groups = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"cannot read Parquet file {url}: {exc}") from None
    rows, start = [], 0
    for group, count in enumerate(groups):
        rows.extend(
            (start + i, ParquetCell(url, group, i, column, version), labels[start + i] if labels else None)
            for i in range(count)
        )
        start += count
    return rows


def image_column(schema: pa.Schema) -> str | None:
    """The column holding the images: a preferred name first, then the first bytes or `datasets` Image struct."""
    usable = [f.name for f in schema if _holds_images(f.type)]
    preferred = [name for name in usable if name.lower() in _PREFERRED]
    return (preferred or usable or [None])[0]


def _holds_images(kind: pa.DataType) -> bool:
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return True
    return pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0


def _labels(parquet) -> list[str | None]:
    """The `label` column as text; a `datasets` ClassLabel index becomes its class name."""
    values = parquet.read(columns=["label"]).column("label").to_pylist()
    names = _class_names(parquet.schema_arrow.metadata or {})
    return [None if v is None else names[v] if isinstance(v, int) and 0 <= v < len(names) else str(v) for v in values]


def _class_names(metadata: dict) -> list[str]:
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
        return list(features["label"]["names"])
    except (KeyError, TypeError, ValueError):
        return []


@dataclass(frozen=True)
class ParquetCell:
    """One row's image: row `row` of row group `group`, column `column` of the file at `url`."""

    url: str
    group: int
    row: int
    column: str
    version: int  # the file's modification time: a rewritten file is never served from the cache

    def read(self) -> bytes:
        """The image's bytes (from the cell, or from the file its `path` names)."""
        value = _row_group(self.url, self.version, self.group, self.column)[self.row].as_py()
        if isinstance(value, dict):
            if value.get("bytes") is None and value.get("path"):
                return _referenced(self.url, value["path"])
            value = value.get("bytes")
        if value is None:
            raise ValueError(f"no image in row {self.row} of row group {self.group} (null {self.column!r})")
        return value


@functools.lru_cache(maxsize=1)
def _row_group(url: str, version: int, group: int, column: str) -> pa.ChunkedArray:
    """One row group's image column; cached per worker process, since a batch reads neighbouring rows."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(url, "rb") as handle:
        return pq.ParquetFile(handle).read_row_group(group, columns=[column]).column(column)


def _referenced(url: str, path: str) -> bytes:
    import fsspec

    target = path if is_url(path) or path.startswith("/") else f"{url.rsplit('/', 1)[0]}/{path}"
    with fsspec.open(target, "rb") as handle:
        return handle.read()
