"""A report streamed a batch at a time, for the commands that must work on a million images.

`ReportScan.images` yields one row per processed image (the row `reader.per_image` chooses: the best-ranked
class of the newest run), a part at a time and at most `BATCH_ROWS` rows at a time, so memory is bounded
by the batch, never by the report. The writer adds an image's rows together and a purge never reorders
a part, so an image's rows are adjacent: the rows of the batch's last image are carried over to the next
batch rather than split.

An image has one version in a report written since resume existed (a redone image's old rows are purged).
An older report may hold an image under several runs, the newest of which counts: with several runs,
`keys` finds those with one external hash partition (each image's key and run go to one of a few Arrow
files by the hash of its path, and each file is grouped alone), in memory bounded by a file, and the
superseded rows (none in a current report) are left out of every scan.
"""

from __future__ import annotations

import heapq
import math
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .parts import newest_settings, report_files, settings_in
from .reader import frame_of, per_image

BATCH_ROWS = 65_536  # rows read at a time
BUCKET_ROWS = 250_000  # rows of one file of an external hash partition
IMAGE_COLUMNS = ("input_root", "path", "status", "rank", "run_id")  # what choosing an image's row needs
FAILED_LISTED = 1000  # failed images named (`Keys.failed_first`); the rest are counted


@dataclass
class Keys:
    """What the report's image keys say: rows superseded by a newer run, the images that failed, labels."""

    superseded: set[tuple[str, str, str]] = field(default_factory=set)  # (input_root, path, run_id)
    failed: int = 0  # images with an error row and no processed row
    failed_first: list[tuple[str, str]] = field(default_factory=list)  # (path, error), the first by path
    labelled: bool = False  # some row carries a label (`reader.has_labels`)


class ReportScan:
    """The parts of a report (a folder, or its URL on a store), read a batch at a time."""

    def __init__(self, out: Path | str):
        self.parts, self.filesystem = report_files(out)
        # Each footer read once and dropped (a report of thousands of parts: their footers, each with the
        # run's settings, would hold hundreds of MB); the distinct schemas are few.
        self.rows, schemas = 0, {}

        def settings_by_part():
            for part in self.parts:
                metadata = pq.read_metadata(part, filesystem=self.filesystem)
                self.rows += metadata.num_rows
                schema = metadata.schema.to_arrow_schema()
                plain = schema.remove_metadata()
                schemas.setdefault(plain.to_string(), plain)
                yield part, settings_in(schema)

        self.settings = newest_settings(settings_by_part())
        self.schema = pa.unify_schemas(list(schemas.values()), promote_options="permissive")

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def present(self, wanted: Iterable[str]) -> list[str]:
        """The wanted columns the report has, in the order given."""
        return [c for c in dict.fromkeys(wanted) if c in self.schema.names]

    @property
    def labelled(self) -> bool:
        """Whether some row carries a label (`reader.has_labels`)."""
        return self.keys.labelled

    def batches(self, columns: Sequence[str], status: str | None = None) -> Iterator[pa.Table]:
        """The rows (`status`: only those), `columns` only, part by part and `BATCH_ROWS` at a time; a column a
        part lacks (written by an older cambatch) comes as nulls.
        """
        wanted = self.present(columns)
        for part in self.parts:
            yield from self._part_batches(part, wanted, status)

    def _part_batches(self, part: str, wanted: list[str], status: str | None) -> Iterator[pa.Table]:
        with pq.ParquetFile(part, filesystem=self.filesystem) as parquet:
            have = set(parquet.schema_arrow.names)
            reading = [c for c in wanted if c in have]
            if status is not None and "status" not in reading:
                reading.append("status")
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=reading):
                table = pa.Table.from_batches([batch])
                if status is not None:
                    table = table.filter(pc.equal(table.column("status"), status))
                yield self._typed(table, wanted)

    def _typed(self, table: pa.Table, wanted: list[str]) -> pa.Table:
        """`table` with the unified schema's columns `wanted` (nulls where the part has none)."""
        arrays = [
            table.column(c).cast(self.schema.field(c).type)
            if c in table.column_names
            else pa.nulls(table.num_rows, self.schema.field(c).type)
            for c in wanted
        ]
        return pa.Table.from_arrays(arrays, names=wanted)

    def images(self, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
        """One row per processed image (`reader.per_image`), `columns` and what choosing it needs, in batches."""
        for images, _ in self.image_rows(columns):
            yield images

    def image_rows(self, columns: Sequence[str]) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """`images`, each batch with every processed row of its images (all their explained classes).

        Small parts are gathered into batches of about `BATCH_ROWS` rows: each batch costs pandas a fixed
        overhead, which thousands of small parts (a slow run publishes one a minute) would multiply.
        """
        wanted = self.present([*IMAGE_COLUMNS, *columns])
        superseded = self.keys.superseded
        pending: list[pa.Table] = []
        for part in self.parts:
            carried = None
            for table in self._part_batches(part, wanted, "ok"):
                if carried is not None:
                    table = pa.concat_tables([carried, table])
                table, carried = _split_last_image(table)
                pending.append(table)
                if sum(t.num_rows for t in pending) >= BATCH_ROWS:
                    yield _chosen(frame_of(pa.concat_tables(pending)), superseded)
                    pending = []
            if carried is not None:
                pending.append(carried)  # an image never straddles two parts: its rows are all here
        if any(t.num_rows for t in pending):
            yield _chosen(frame_of(pa.concat_tables(pending)), superseded)

    @cached_property
    def keys(self) -> Keys:
        """Superseded rows, failed images and whether there are labels, in one pass over a few columns: read
        directly for a report of one run (each image once), through an external hash partition for several.
        """
        single = len(self.settings.get("run_ids", [])) <= 1
        columns = ["input_root", "path", "run_id", "status", "error", "label"]
        keys, tables = Keys(), self.batches(columns)
        if single:
            for table in tables:
                keys.labelled |= _has_label(table)
                keys = self._failed_of([table.filter(pc.equal(table.column("status"), "error"))], keys)
            return keys
        with tempfile.TemporaryDirectory(prefix="cambatch-keys-") as folder:
            buckets = partition(tables, max(1, math.ceil(self.rows / BUCKET_ROWS)), Path(folder))
            for bucket in buckets:
                table = read_bucket(bucket)
                keys.labelled |= _has_label(table)
                keys = self._bucket_keys(table, keys)
            return keys

    def _bucket_keys(self, table: pa.Table, keys: Keys) -> Keys:
        frame = table.to_pandas()
        ok = frame[frame["status"] == "ok"]
        newest = ok.groupby(["input_root", "path"], dropna=False)["run_id"].transform("max")
        old = ok[ok["run_id"] != newest]
        keys.superseded |= set(zip(old["input_root"], old["path"], old["run_id"], strict=True))
        done = pd.MultiIndex.from_frame(ok[["input_root", "path"]])
        errors = frame[frame["status"] == "error"].drop_duplicates(["input_root", "path"])
        errors = errors[~pd.MultiIndex.from_frame(errors[["input_root", "path"]]).isin(done)]
        return self._failed_of([pa.Table.from_pandas(errors[["path", "error"]])], keys)

    @staticmethod
    def _failed_of(tables: Iterable[pa.Table], keys: Keys) -> Keys:
        """Count the failed images of `tables` (path, error) into `keys`, keeping the first by path."""
        for table in tables:
            keys.failed += table.num_rows
            rows = zip(table.column("path").to_pylist(), table.column("error").to_pylist(), strict=True)
            named = [(p, e if isinstance(e, str) else "") for p, e in rows]
            keys.failed_first = heapq.nsmallest(FAILED_LISTED, [*keys.failed_first, *named])
        return keys


def _has_label(table: pa.Table) -> bool:
    return "label" in table.column_names and table.column("label").null_count < table.num_rows


def _split_last_image(table: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    """`table` without the rows of its last image, and those rows (they may go on in the next batch)."""
    if table.num_rows == 0:
        return table, None
    paths = table.column("path")
    last = pc.fill_null(pc.equal(paths, paths[-1]), False).to_numpy(zero_copy_only=False)
    # The last image's rows are the trailing run of rows with its path (an image of another INPUT with the
    # same path, carried along, is chosen from as well in the next batch).
    start = table.num_rows - int(np.argmin(last[::-1])) if not last.all() else 0
    return table.slice(0, start), table.slice(start)


def _chosen(rows: pd.DataFrame, superseded: set[tuple[str, str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The batch's image rows (`per_image`) and its rows, those of runs a newer one superseded left out."""
    if superseded:
        keys = zip(rows["input_root"], rows["path"], rows["run_id"].astype(str), strict=True)
        rows = rows[[key not in superseded for key in keys]].reset_index(drop=True)
    return per_image(rows), rows


def partition(tables: Iterable[pa.Table], buckets: int, folder: Path) -> list[Path]:
    """Write the rows of `tables` to `buckets` Arrow files under `folder` by the hash of their `path`: every row
    of one image lands in one file, and each file holds about 1 / `buckets` of the rows (the others: none).
    """
    paths = [folder / f"bucket-{i:04d}.arrow" for i in range(buckets)]
    writers: list[pa.ipc.RecordBatchStreamWriter | None] = [None] * buckets
    try:
        for table in tables:
            hashes = pd.util.hash_array(table.column("path").to_numpy(zero_copy_only=False).astype(object))
            which = (hashes % np.uint64(buckets)).astype(np.int64)
            for i in np.unique(which):
                rows = table.filter(pa.array(which == i))
                if writers[i] is None:
                    writers[i] = pa.ipc.new_stream(paths[i], rows.schema)
                writers[i].write_table(rows)
    finally:
        for writer in writers:
            if writer is not None:
                writer.close()
    return [path for path, writer in zip(paths, writers, strict=True) if writer is not None]


def read_bucket(path: Path) -> pa.Table:
    with pa.ipc.open_stream(path) as reader:
        return reader.read_all()
