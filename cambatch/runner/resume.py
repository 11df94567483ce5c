"""Resume and incremental runs: what the report already holds, what is left to do, and whether it may be resumed.

A report is resumed only by a run with the settings that produced its rows (`check_settings`, comparing those
`report.settings.RunSettings` marks):
another model, weights file, method, layer, top-k, class list, `--explain-label`, input size or normalization
(and, when overlays are written, another colormap, opacity or overlay size) is refused.

An image is done when a published part holds rows for its (input_root, path) with the same size
and modification time (and, on a store, the same ETag when both the row and the listing have one).
A changed image, one whose label is another now (labels added by `--labels-from-dirs`, a list or the
annotations: its `label`, `correct` and explained classes follow it), or with `retry_errors` a failed
one, is redone: its old rows are purged first, so the report never holds two versions of an image. A
rerun without labels keeps the labels the rows have.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import switch
from ..errors import UsageError
from ..layout import OutputLayout
from ..report.parts import complete_parts, footer, part_settings
from ..report.schema import SCHEMA
from ..report.settings import PREPROCESSING, differences, resume_option
from ..sources.discover import ImageSource
from ..sources.shard import Shard


class SettingsChanged(UsageError):
    """The report in OUT was made with other settings than this run's."""


_KEY_COLUMNS = ["input_root", "path", "file_size", "mtime_ns", "status", "etag", "label"]
_SEP = "\x00"


@dataclass
class Plan:
    """What a run has to do, given what the report already holds."""

    todo: list[ImageSource]
    skipped: int  # already in the report, unchanged
    purge_keys: set[str] = field(default_factory=set)  # rows to drop before redoing their images
    errors_kept: int = 0  # of the skipped, images the report holds as failed (`--retry-errors` redoes them)
    relabelled: int = 0  # of the todo, finished images redone only because their label is another now


class Seen(NamedTuple):
    """What the report holds of one image."""

    size: int
    mtime_ns: int
    status: str
    etag: str | None
    label: str | None


def plan(sources: list[ImageSource], report_dir: Path, retry_errors: bool = False) -> Plan:
    """Split `sources` into the images to process and those the report already holds."""
    done = _index(report_dir)
    result = Plan([], 0)
    for source in sources:
        key = _key(*source.key)
        seen = done.get(key)
        if seen is None:
            result.todo.append(source)
            continue
        redo = _changed(seen, source) or (retry_errors and seen.status == "error")
        relabelled = not redo and _relabelled(seen, source)
        if redo or relabelled:
            result.todo.append(source)
            result.purge_keys.add(key)
            result.relabelled += relabelled
        else:
            result.skipped += 1
            result.errors_kept += seen.status == "error"
    return result


def _changed(seen: Seen, source: ImageSource) -> bool:
    """Whether the image is another version than the one the report holds.

    ETags are compared only when both sides have one: a report written before they were kept (or a
    local file) is not redone for want of one.
    """
    if (seen.size, seen.mtime_ns) != (source.size, source.mtime_ns):
        return True
    return seen.etag is not None and source.etag is not None and seen.etag != source.etag


def _relabelled(seen: Seen, source: ImageSource) -> bool:
    """Whether the image has a label now that its rows do not carry (added or changed): it is redone so that
    `label`, `correct` and `--explain-label`'s row follow it. No label now keeps the rows as they are: a rerun
    that forgot `--labels-from-dirs` redoes nothing.
    """
    return source.label is not None and source.label != seen.label


def purge(layout: OutputLayout, keys: set[str] | None = None, shard: Shard | None = None) -> int:
    """Remove rows of `keys` (or, with `shard`, every row of the shard's images) from the parts.

    Each touched part is rewritten under a dot-name and renamed over itself (atomic); a lock
    keeps two shards from rewriting the same part at once. Returns the rows removed.
    """
    removed = 0
    report_dir = layout.report_dir
    with open(layout.purge_lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for part in complete_parts(report_dir):
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


def sweep(layout: OutputLayout, shard: Shard) -> int:
    """Remove the temporary parts that killed runs of this shard left (an open part, a purge's rewrite).

    Called under this shard's lock, so no live run of the shard is writing one; the purge lock keeps
    another shard's purge, whose rewrite may carry any shard's name, from losing its file. Returns
    the files removed.
    """
    if not layout.report_dir.is_dir():
        return 0
    removed = 0
    with open(layout.purge_lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for path in layout.report_dir.iterdir():
            if layout.temp_part_shard(path.name) == shard.tag:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _matches(table: pa.Table, keys: set[str] | None, shard: Shard | None) -> pa.ChunkedArray:
    if shard is not None:
        owned = [shard.owns(path) for path in table.column("path").to_pylist()]
        return pa.chunked_array([pa.array(owned, pa.bool_())])
    joined = pc.binary_join_element_wise(table.column("input_root"), table.column("path"), _SEP)
    return pc.fill_null(pc.is_in(joined, value_set=pa.array(sorted(keys or ()), pa.string())), False)


def indexed(report_dir: Path) -> dict[str, Seen]:
    """Every image the published parts hold, by image key."""
    return _index(report_dir)


def _index(report_dir: Path) -> dict[str, Seen]:
    files = complete_parts(report_dir)
    if not files:
        return {}
    # Here, not at the top: pyarrow.dataset imports pandas (0.15 s), which a run's read-ahead should not wait
    # for (`runner.pipeline` imports this module before it starts decoding).
    import pyarrow.dataset as ds

    # The declared types: a part written before a key column existed reads it as nulls.
    keys = pa.schema([SCHEMA.field(name) for name in _KEY_COLUMNS])
    table = ds.dataset(files, format="parquet", schema=keys).to_table(columns=_KEY_COLUMNS)
    columns = [table.column(c).to_pylist() for c in _KEY_COLUMNS]
    return {_key(root, path): Seen(*seen) for root, path, *seen in zip(*columns, strict=True)}


def _key(input_root: str, path: str) -> str:
    return f"{input_root}{_SEP}{path}"


def check_settings(earlier: list[dict], now: dict, out: Path, *, overwrite: Shard | None = None) -> None:
    """Refuse (exit 2, one line) when any of `earlier` (a part's or a live shard's settings) differs from `now`.

    `overwrite`: the shard this run starts over (`--overwrite`); `earlier` then holds only what it keeps,
    the other shards' results, which its purge cannot make agree.
    """
    changed: dict[str, tuple] = {}
    for before in earlier:
        for name, values in differences(before, now).items():
            changed.setdefault(name, values)
    if not changed:
        return
    listed = "; ".join(f"{name} ({_flag(name)}): {old} there, {new} now" for name, (old, new) in changed.items())
    if overwrite is None:
        raise SettingsChanged(
            f"{out} holds results made with other settings ({listed}); give this run another --out, "
            "or add --overwrite to redo every image with the new settings"
        )
    raise SettingsChanged(
        f"{out} holds other shards' results made with other settings ({listed}), and --overwrite redoes only "
        f"shard {overwrite}: give this run another --out, or delete {out} and rerun every shard to start them all over"
    )


def report_settings(report_dir: Path, beyond: Shard | None = None) -> list[dict]:
    """The settings of every published part that holds rows (a report resumed or sharded has several parts);
    with `beyond`, of those holding rows of images that shard does not own (what its `--overwrite` keeps).

    A run with nothing to do leaves an empty part; it produced no row, so it binds no later run.
    """
    parts = [part for part in complete_parts(report_dir) if footer(part).num_rows]
    if beyond is not None:
        parts = [part for part in parts if _holds_others(part, beyond)]
    return [part_settings(part) for part in parts]


def _holds_others(part: Path, shard: Shard) -> bool:
    """Whether the part holds a row of an image `shard` does not own."""
    if shard.count == 1:  # a whole-dataset run owns every image: no part need be read
        return False
    return not all(map(shard.owns, pq.read_table(part, columns=["path"]).column("path").to_pylist()))


def _flag(name: str) -> str:
    option = resume_option(name)
    return "preprocessing of --model (from its config)" if option in (None, PREPROCESSING) else switch(option)
