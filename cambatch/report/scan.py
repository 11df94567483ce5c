"""A report streamed a batch at a time, for the commands that must work on a million images.

`ReportScan.images` yields one row per processed image (the row `reader.per_image` chooses: the best-ranked
class of the newest run), a part at a time and at most `BATCH_ROWS` rows at a time, so memory is bounded
by the batch, never by the report. The writer adds an image's rows together and a purge never reorders
a part, so an image's rows are adjacent: the rows of the batch's last image are carried over to the next
batch rather than split.

An image has one version in a report written since resume existed (a redone image's old rows are purged).
An older report may hold an image under several runs, the newest of which counts: with several runs,
`keys` finds those with one external hash partition (each image's key and run go to one of a few Arrow
files by the hash of its key, and each file is grouped alone), in memory bounded by a file, and the
superseded rows (none in a current report) are left out of every scan.

An image is its INPUT and its path there (`reader.IMAGE_KEY`: two INPUTs holding `x.png` hold two images):
batches, partitions, superseded rows and failed images are all keyed by both. The rows themselves stream
through `reader.ReportFiles.batches`, as every reader of the report does.
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
import pyarrow.dataset as ds

from ..layout import ImageNames, folded_paths
from .reader import IMAGE_KEY, ReportFiles, frame_of, image_key, per_image

BATCH_ROWS = 65_536  # rows read at a time
BUCKET_ROWS = 250_000  # rows of one file of an external hash partition
IMAGE_COLUMNS = ("input_root", "path", "status", "rank", "run_id")  # what choosing an image's row needs
FAILED_LISTED = 1000  # failed images named (`Keys.failed_first`); the rest are counted


@dataclass
class Keys:
    """What the report's image keys say: rows superseded by a newer run, the images that failed, labels."""

    superseded: set[tuple[str, str, str]] = field(default_factory=set)  # (input_root, path, run_id)
    failed: int = 0  # images with an error row and no processed row
    # (input_root, path, error) of the first failed images by their key
    failed_first: list[tuple[str, str, str]] = field(default_factory=list)
    labelled: bool = False  # some row carries a label (`reader.has_labels`)


class ReportScan(ReportFiles):
    """The parts of a report (a folder, or its URL on a store), read a batch at a time (`reader.ReportFiles`
    streams the rows), one row per image.
    """

    def __init__(self, out: Path | str):
        super().__init__(out, batch_rows=BATCH_ROWS)

    @property
    def labelled(self) -> bool:
        """Whether some row carries a label (`reader.has_labels`)."""
        return self.keys.labelled

    @property
    def chosen_classes(self) -> list[int] | None:
        """The classes a `--classes` run explained (`reader.chosen_classes`); None for a top-k run."""
        return self.settings.get("classes") or None

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
        processed = ds.field("status") == "ok"
        for part in self.parts:
            carried = None
            for table in self.part_batches(part, wanted, processed):
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
        columns = [*IMAGE_KEY, "run_id", "status", "error", "label"]
        keys, tables = Keys(), self.batches(columns)
        if single:
            for table in tables:
                keys.labelled |= _has_label(table)
                failed = table.filter(pc.equal(table.column("status"), "error")).to_pandas()
                keys = self._failed_of(failed.drop_duplicates(image_key(failed)), keys)
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
        key = image_key(frame)
        ok = frame[frame["status"] == "ok"]
        newest = ok.groupby(key, dropna=False)["run_id"].transform("max")
        old = ok[ok["run_id"] != newest]
        keys.superseded |= set(zip(*_key_columns(old), old["run_id"], strict=True))
        done = pd.MultiIndex.from_frame(ok[key])
        errors = frame[frame["status"] == "error"].drop_duplicates(key)
        errors = errors[~pd.MultiIndex.from_frame(errors[key]).isin(done)]
        return self._failed_of(errors, keys)

    @staticmethod
    def _failed_of(failed: pd.DataFrame, keys: Keys) -> Keys:
        """Count the failed images of `failed` (error rows, one an image) into `keys`, keeping the first by image."""
        keys.failed += len(failed)
        errors = failed["error"] if "error" in failed.columns else pd.Series([None] * len(failed), index=failed.index)
        images = zip(*_key_columns(failed), errors, strict=True)
        named = [(r if isinstance(r, str) else "", p, e if isinstance(e, str) else "") for r, p, e in images]
        keys.failed_first = heapq.nsmallest(FAILED_LISTED, [*keys.failed_first, *named])
        return keys

    @cached_property
    def names(self) -> ImageNames:
        """How the run named its images' output folders (`reader.image_names`: every image of the report, failed
        ones too), decided in a pass over the image keys: a 64-bit hash of each image's key and of what a
        case-insensitive disk sees of it (`layout.folded_paths`, `clash_key`'s rule in Arrow) is kept (16 bytes
        an image), and only the images whose folded hash repeats are read again by name.
        """
        roots: set[str] = set()
        pairs = []
        for table in self.batches(IMAGE_KEY):
            root, path = _key_arrays(table)
            roots.update(pc.unique(root).to_pylist())
            pairs.append(np.unique(np.stack([_hashed(root, folded_paths(path)), _hashed(root, path)], 1), axis=0))
        seen = np.unique(np.concatenate(pairs), axis=0) if pairs else np.zeros((0, 2), np.uint64)
        folded, count = np.unique(seen[:, 0], return_counts=True)
        repeated = folded[count > 1]
        clashing: set[tuple[str, str]] = set()
        if len(repeated):
            for table in self.batches(IMAGE_KEY):
                root, path = _key_arrays(table)
                suspects = np.isin(_hashed(root, folded_paths(path)), repeated)
                clashing.update(zip(root.filter(suspects).to_pylist(), path.filter(suspects).to_pylist(), strict=True))
        return ImageNames(len(roots) > 1, ImageNames.of(clashing).clashing)


def _key_arrays(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """A batch's image keys, a row each, as text: `input_root` (empty without the column) and `path`."""
    path = pc.cast(table.column("path").combine_chunks(), pa.string())
    if "input_root" not in table.column_names:
        return pa.array([""] * len(path), pa.string()), path
    return pc.fill_null(pc.cast(table.column("input_root").combine_chunks(), pa.string()), ""), path


def _hashed(root: pa.Array, path: pa.Array) -> np.ndarray:
    """uint64 [rows]: a hash of each (root, path); a NUL byte, which neither holds, keeps the two apart."""
    joined = pc.binary_join_element_wise(root, path, "\0").to_numpy(zero_copy_only=False)
    return pd.util.hash_array(joined)


def _key_columns(frame: pd.DataFrame) -> list[pd.Series]:
    """The image key's columns of `frame` as (input_root, path); `input_root` null without the column."""
    root = frame["input_root"] if "input_root" in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    return [root, frame["path"]]


def _has_label(table: pa.Table) -> bool:
    return "label" in table.column_names and table.column("label").null_count < table.num_rows


def _split_last_image(table: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    """`table` without the rows of its last image (`IMAGE_KEY`), and those rows (they may go on in the next batch)."""
    if table.num_rows == 0:
        return table, None
    last = None
    for column in (c for c in IMAGE_KEY if c in table.column_names):
        values = table.column(column)
        same = pc.fill_null(pc.equal(values, values[-1]), False) if values[-1].is_valid else pc.is_null(values)
        last = same if last is None else pc.and_(last, same)
    last = last.to_numpy(zero_copy_only=False)
    # The last image's rows are the trailing run of rows with its key.
    start = table.num_rows - int(np.argmin(last[::-1])) if not last.all() else 0
    return table.slice(0, start), table.slice(start)


def _chosen(rows: pd.DataFrame, superseded: set[tuple[str, str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The batch's image rows (`per_image`) and its rows, those of runs a newer one superseded left out."""
    if superseded:
        keys = zip(*_key_columns(rows), rows["run_id"].astype(str), strict=True)
        rows = rows[[key not in superseded for key in keys]].reset_index(drop=True)
    return per_image(rows), rows


def partition(tables: Iterable[pa.Table], buckets: int, folder: Path, *, key: Sequence[str] = IMAGE_KEY) -> list[Path]:
    """Write the rows of `tables` to `buckets` Arrow files under `folder` by the hash of their image (the `key`
    columns they have): every row of one image lands in one file (in every report partitioned by the same key:
    compare pairs the files of two), and each file holds about 1 / `buckets` of the rows (the others: none).
    """
    paths = [folder / f"bucket-{i:04d}.arrow" for i in range(buckets)]
    writers: list[pa.ipc.RecordBatchStreamWriter | None] = [None] * buckets
    try:
        for table in tables:
            image = {c: table.column(c).to_pandas().astype(str) for c in key if c in table.column_names}
            hashes = pd.util.hash_pandas_object(pd.DataFrame(image), index=False).to_numpy(np.uint64)
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
