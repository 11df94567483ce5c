"""Resume and incremental runs: what the report already holds, what is left to do.

An image is done when a published part holds rows for its (input_root, path) with the same size
and modification time. A changed image, or with `retry_errors` a failed one, is redone: its old
rows are purged first, so the report never holds two versions of an image.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..layout import OutputLayout
from ..report.parts import published_parts
from ..sources.discover import ImageSource
from ..sources.shard import Shard

_KEY_COLUMNS = ["input_root", "path", "file_size", "mtime_ns", "status"]
_SEP = "\x00"


@dataclass
class Plan:
    """What a run has to do, given what the report already holds."""

    todo: list[ImageSource]
    skipped: int  # already in the report, unchanged
    purge_keys: set[str] = field(default_factory=set)  # rows to drop before redoing their images


def plan(sources: list[ImageSource], report_dir: Path, retry_errors: bool = False) -> Plan:
    """Split `sources` into the images to process and those the report already holds."""
    done = _index(report_dir)
    todo, purge, skipped = [], set(), 0
    for source in sources:
        key = _key(*source.key)
        seen = done.get(key)
        if seen is None:
            todo.append(source)
        elif seen[:2] != (source.size, source.mtime_ns) or (retry_errors and seen[2] == "error"):
            todo.append(source)
            purge.add(key)
        else:
            skipped += 1
    return Plan(todo, skipped, purge)


def purge(layout: OutputLayout, keys: set[str] | None = None, shard: Shard | None = None) -> int:
    """Remove rows of `keys` (or, with `shard`, every row of the shard's images) from the parts.

    Each touched part is rewritten under a dot-name and renamed over itself (atomic); a lock
    keeps two shards from rewriting the same part at once. Returns the rows removed.
    """
    removed = 0
    report_dir = layout.report_dir
    with open(layout.purge_lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for part in published_parts(report_dir):
            table = pq.read_table(part)
            drop = _matches(table, keys, shard)
            count = pc.sum(drop).as_py() or 0
            if not count:
                continue
            kept = table.filter(pc.invert(drop))
            removed += count
            if kept.num_rows == 0:
                part.unlink()
                continue
            temp = part.with_name(f".{part.name}.tmp")
            pq.write_table(kept, temp)
            os.replace(temp, part)
    return removed


def _matches(table: pa.Table, keys: set[str] | None, shard: Shard | None) -> pa.ChunkedArray:
    if shard is not None:
        owned = [shard.owns(path) for path in table.column("path").to_pylist()]
        return pa.chunked_array([pa.array(owned, pa.bool_())])
    joined = pc.binary_join_element_wise(table.column("input_root"), table.column("path"), _SEP)
    return pc.fill_null(pc.is_in(joined, value_set=pa.array(sorted(keys or ()), pa.string())), False)


def _index(report_dir: Path) -> dict[str, tuple[int, int, str]]:
    files = published_parts(report_dir)
    if not files:
        return {}
    table = ds.dataset(files, format="parquet").to_table(columns=_KEY_COLUMNS)
    columns = [table.column(c).to_pylist() for c in _KEY_COLUMNS]
    return {_key(root, path): (size, mtime, status) for root, path, size, mtime, status in zip(*columns, strict=True)}


def _key(input_root: str, path: str) -> str:
    return f"{input_root}{_SEP}{path}"
