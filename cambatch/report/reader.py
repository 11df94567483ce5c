"""Reading a run's report back: a typed DataFrame, and the raw maps it keeps.

Only pyarrow, pandas and numpy are imported here (never torch), so notebooks and the
`summarize` / `compare` / `gallery` commands open reports quickly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import UsageError
from ..layout import ImageNames
from .parts import newest_settings, report_files, settings_in
from .schema import EMBEDDING_COLUMN, MAP_NAMES, is_correct

# What names an image in a report: its INPUT and its path there (two INPUTs holding `x.png` hold two images).
IMAGE_KEY = ("input_root", "path")
# The list columns a plain `load_report` leaves out: a few hundred bytes to kilobytes per row each.
LARGE_COLUMNS = ("map", EMBEDDING_COLUMN.name)
SCAN_ROWS = 8192  # rows per batch of `scan_report`: a few MB with maps and embeddings
# Low-cardinality text columns: categoricals make them small in memory and quick to group by.
CATEGORICAL_COLUMNS = ("class_name", "status", "model", "method", "run_id", "label")
# Nullable pandas integers: error rows have no rank or size, and NaN must not turn them into floats.
_NULLABLE = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def report_columns(out: Path | str) -> list[str]:
    """The report's columns (the union over its parts), read from the part footers only."""
    names: dict[str, None] = {}
    paths, filesystem = report_files(out)
    for part in paths:
        names.update(dict.fromkeys(pq.read_schema(part, filesystem=filesystem).names))
    return list(names)


def load_report(
    out: Path | str,
    *,
    status: str | Iterable[str] | None = None,
    rank: int | Iterable[int] | None = None,
    columns: Sequence[str] | None = None,
    where: ds.Expression | None = None,
    maps: bool = False,
) -> pd.DataFrame:
    """The report of the run in `out` (a folder, or its URL on a store) as a DataFrame, one row per image x class.

    Filters are pushed down to pyarrow, so only matching row groups and the asked-for columns
    are read: `status="ok"`, `rank=1` (or several: `rank=[1, 2]`), `columns=[...]`, and any
    pyarrow expression as `where` (e.g. `pyarrow.dataset.field("probability") > 0.5`).
    The raw maps (`map`, a float16 array per row) are read with `maps=True` or when named in
    `columns`; `map_stack` turns them into one array. The embeddings (`embedding`) only when named
    in `columns`; `load_embeddings` reads them as one array.

    Dtypes: `class_name`, `status`, `model`, `method`, `run_id` (and `label`, when the run had
    labels) are categoricals; integer columns are pandas' nullable integers (error rows have no
    rank); `correct` (with labels) is nullable boolean. `df.attrs` holds the run settings
    (`model`, `class_names`, `run_id`, `topk`, `options`, ...) and `run_ids`.

    >>> import cambatch
    >>> df = cambatch.load_report("cams", status="ok", rank=1)      # doctest: +SKIP
    >>> df.groupby("class_name", observed=True).border_energy.mean()  # doctest: +SKIP
    """
    files = ReportFiles(out)
    dataset = files.dataset(columns)
    if columns is None:
        columns = [name for name in dataset.schema.names if name not in LARGE_COLUMNS or (maps and name == "map")]
    frame = frame_of(dataset.to_table(columns=list(columns), filter=_filter(status, rank, where)))
    frame.attrs.update(files.settings)
    return frame


def frame_of(table: pa.Table) -> pd.DataFrame:
    """Report rows as `load_report` types them: categoricals, nullable integers and booleans."""
    categories = [c for c in CATEGORICAL_COLUMNS if c in table.column_names]
    frame = table.to_pandas(categories=categories, types_mapper=_NULLABLE.get)
    for column in categories:
        # Sorted categories read better in tables and plots; "ok"/"error" always exist for status.
        extra = ["error", "ok"] if column == "status" else []
        frame[column] = frame[column].cat.set_categories(sorted(set(frame[column].cat.categories) | set(extra)))
    return frame


class ReportFiles:
    """A report's parts (a folder, or its URL on a store): their columns' union and the run's settings, each
    part's footer read once and dropped (a report of thousands of parts: their footers, each with the run's
    settings, would hold hundreds of MB; the distinct schemas are few); and its rows streamed a part and a
    batch at a time (`batches`). Every reader of the report builds on it: `load_report`, `scan_report` and
    `report.scan.ReportScan`.
    """

    def __init__(self, out: Path | str, *, batch_rows: int = SCAN_ROWS):
        self.parts, self.filesystem = report_files(out)
        self.batch_rows = batch_rows
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
        # Parts written by different cambatch versions may differ in columns: read their union.
        self.schema = pa.unify_schemas(list(schemas.values()), promote_options="permissive")

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def present(self, wanted: Iterable[str]) -> list[str]:
        """The wanted columns the report has, in the order given."""
        return [c for c in dict.fromkeys(wanted) if c in self.schema.names]

    def check(self, columns: Sequence[str] | None) -> None:
        """`KeyError` for a column no part has."""
        missing = [c for c in columns or () if c not in self.schema.names]
        if missing:
            raise KeyError(
                f"no column {', '.join(map(repr, missing))} in the report; it has: {', '.join(self.schema.names)}"
            )

    def dataset(self, columns: Sequence[str] | None = None) -> ds.Dataset:
        """The parts as one pyarrow dataset of their columns' union; `KeyError` for a named column none has."""
        self.check(columns)
        return ds.dataset(self.parts, schema=self.schema, format="parquet", filesystem=self.filesystem)

    def batches(
        self,
        columns: Sequence[str],
        status: str | None = None,
        *,
        where: ds.Expression | None = None,
        batch_rows: int | None = None,
    ) -> Iterator[pa.Table]:
        """The rows (`status`, `where`: only those), `columns` only (those the report has), part by part and at
        most `batch_rows` at a time, in the parts' order; a column a part lacks (written by an older cambatch)
        comes as nulls.
        """
        wanted = self.present(columns)
        expression = _filter(status, None, where)
        for part in self.parts:
            yield from self.part_batches(part, wanted, expression, batch_rows)

    def part_batches(
        self, part: str, columns: list[str], where: ds.Expression | None = None, batch_rows: int | None = None
    ) -> Iterator[pa.Table]:
        """One part's rows that match `where`, `columns` of the union's types, in order, a batch at a time."""
        dataset = ds.dataset([part], schema=self.schema, format="parquet", filesystem=self.filesystem)
        for batch in dataset.to_batches(
            columns=list(columns),
            filter=where,
            batch_size=batch_rows or self.batch_rows,
            batch_readahead=_READAHEAD,  # a few batches ahead: memory stays a batch's, never the part's
            fragment_readahead=1,
        ):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])


_READAHEAD = 2


def scan_report(
    out: Path | str, *, columns: Sequence[str], where: ds.Expression | None = None, batch_rows: int = SCAN_ROWS
) -> Iterator[pd.DataFrame]:
    """The report's rows that match `where`, `batch_rows` at a time, as DataFrames of `columns`: for readers
    whose memory must not grow with the report (`cambatch slices`, `cambatch reliance`).

    Plain dtypes (text stays text, integers are pandas' nullable integers); no settings in `attrs`
    (`read_settings` has them). `ReportFiles.batches` streams the rows.
    """
    files = ReportFiles(out, batch_rows=batch_rows)
    files.check(columns)
    for table in files.batches(columns, where=where):
        yield table.to_pandas(types_mapper=_NULLABLE.get)


def _filter(status, rank, where) -> ds.Expression | None:
    expressions = []
    if status is not None:
        expressions.append(_member(ds.field("status"), [status] if isinstance(status, str) else list(status)))
    if rank is not None:
        expressions.append(_member(ds.field("rank"), [rank] if isinstance(rank, int) else list(rank)))
    if where is not None:
        expressions.append(where)
    combined = None
    for expression in expressions:
        combined = expression if combined is None else combined & expression
    return combined


def _member(field: ds.Expression, values: list) -> ds.Expression:
    return field == values[0] if len(values) == 1 else field.isin(values)


def load_map(out: Path | str, path: str, class_index: int, *, input_root: str | None = None) -> np.ndarray:
    """The raw map of one image and class: signed, not normalized, at the model's feature resolution, float32 [h, w].

    `path` is the image's `path` column in the report, `class_index` its `class_index`; `input_root` its
    INPUT, needed only when several INPUTs of the report hold that path. Maps are kept in the report
    (float16), so no model and no other file is needed.

    >>> import cambatch
    >>> m = cambatch.load_map("cams", "dogs/husky.jpg", 248)  # doctest: +SKIP
    >>> m.shape, float(m.mean())                            # doctest: +SKIP
    ((7, 7), 9.31)
    """
    where = ds.field("path") == path
    if input_root is not None:
        where &= ds.field("input_root") == str(input_root)
    rows = load_report(out, status="ok", columns=["input_root", "class_index", "run_id", *MAP_NAMES], where=where)
    if rows.empty:
        raise KeyError(f"no processed image with path {path!r} in the report")
    if rows["input_root"].nunique() > 1:
        roots = ", ".join(sorted(rows["input_root"].astype(str).unique()))
        raise KeyError(f"several INPUTs hold {path!r} ({roots}): pass input_root to say which")
    chosen = rows[rows["class_index"] == int(class_index)]
    if chosen.empty:
        explained = ", ".join(str(c) for c in sorted(set(rows["class_index"])))
        raise KeyError(f"{path!r} has maps for classes {explained}, not {int(class_index)}")
    newest = chosen.sort_values("run_id").tail(1)  # an image under several runs: the newest (`schema.newest_run`)
    if newest["map_height"].isna().any():
        raise KeyError(
            f"the report's row for {path!r}, class {int(class_index)} holds no map (written before maps were kept)"
        )
    return map_stack(newest)[0]


class Embeddings(NamedTuple):
    """The report's embeddings (`--embeddings`): one row of `images` per image, and its vector in `vectors`."""

    images: pd.DataFrame  # input_root, path, class_index, class_name, probability, label, correct (those present)
    vectors: np.ndarray  # float16 [images, features], row i the vector of images.iloc[i]


EMBEDDING_IMAGE_COLUMNS = (
    "input_root",
    "path",
    "run_id",
    "class_index",
    "class_name",
    "probability",
    "label",
    "correct",
)


def load_embeddings(out: Path | str, *, where: ds.Expression | None = None) -> Embeddings:
    """Every image's pooled feature vector, as a run with `--embeddings` kept it (float16), with the image's row.

    Each image's vector is on its best-ranked row only (`per_image`'s row), so this reads one row
    per image: its identity (`input_root`, `path`), top class, probability, and its label and
    `correct` when the run had labels. `where` (a pyarrow expression) narrows the rows, pushed down
    like `load_report`'s. A million images of 1280 features hold 2.5 GB: narrow them, or stream
    with `scan_report`.

    >>> import cambatch
    >>> images, vectors = cambatch.load_embeddings("cams")  # doctest: +SKIP
    >>> vectors.shape                                       # doctest: +SKIP
    (5000, 1280)
    """
    present = report_columns(out)
    if EMBEDDING_COLUMN.name not in present:
        raise UsageError(f"the report in {out} holds no embeddings: run it with --embeddings")
    has_vector = ds.field(EMBEDDING_COLUMN.name).is_valid()
    columns = [c for c in EMBEDDING_IMAGE_COLUMNS if c in present] + [EMBEDDING_COLUMN.name]
    rows = load_report(out, status="ok", columns=columns, where=has_vector if where is None else has_vector & where)
    if rows.empty and where is None:  # every report has the column; a run without --embeddings left it null
        raise UsageError(f"the report in {out} holds no embeddings: run it with --embeddings")
    flat = rows.pop(EMBEDDING_COLUMN.name).to_numpy()
    vectors = np.stack(flat).astype(np.float16) if len(rows) else np.empty((0, 0), np.float16)
    return Embeddings(rows.reset_index(drop=True), vectors)


def map_stack(frame: pd.DataFrame) -> np.ndarray:
    """The `map` column of report rows (read with `maps=True`) as one float32 array [rows, h, w]."""
    sizes = set(zip(frame["map_height"], frame["map_width"], strict=True))
    if len(sizes) > 1:
        raise ValueError(f"the rows hold maps of several sizes {sorted(sizes)}; stack one size at a time")
    height, width = next(iter(sizes)) if sizes else (0, 0)
    flat = np.stack(frame["map"].to_numpy()) if len(frame) else np.empty((0, 0), np.float16)
    return flat.astype(np.float32).reshape(len(frame), int(height), int(width))


def image_key(df: pd.DataFrame) -> list[str]:
    """The columns of `IMAGE_KEY` in `df`; a frame read without `input_root` stands for one INPUT: `path` alone."""
    return [column for column in IMAGE_KEY if column in df.columns]


def image_ids(df: pd.DataFrame) -> list[tuple[str, ...]]:
    """Each row's image: its `image_key` values as text, `(input_root, path)`."""
    return list(zip(*(df[column].astype(str) for column in image_key(df)), strict=True))


def several_inputs(df: pd.DataFrame) -> bool:
    """Whether the report spans several INPUTs: the run then gave each its own overlay folder (`layout.image_dir`)."""
    return "input_root" in df.columns and df["input_root"].nunique() > 1


def image_names(df: pd.DataFrame) -> ImageNames:
    """How the run named its images' output folders (`layout.ImageNames`), decided again from every image of the
    report: a report spanning several INPUTs gave each its own folder, and names that clash get a hash.
    """
    roots = df["input_root"].astype(str) if "input_root" in df.columns else pd.Series("", index=df.index)
    return ImageNames.of(zip(roots, df["path"].astype(str), strict=True))


def has_labels(df: pd.DataFrame) -> bool:
    """Whether the report carries ground truth (`label`), with at least one labelled image."""
    return "label" in df.columns and bool(df["label"].notna().any())


def chosen_classes(df: pd.DataFrame) -> list[int] | None:
    """The classes a `--classes` run explained (its settings record them); None for a top-k run.

    Such a run explains the classes it was given, not its predictions: its best-ranked row is no top-1.
    """
    return df.attrs.get("classes") or None


def explained_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Every `ok` row, of each image's newest run (`schema.newest_run`) when the report holds it under several
    (an older report written before resume existed).
    """
    ok = df[df["status"] == "ok"]
    key = image_key(ok)
    if "run_id" in ok.columns and ok["run_id"].nunique() > 1:
        # `schema.newest_run`, vectorized; as text: `load_report`'s categorical run ids have no order.
        run_ids = ok["run_id"].astype(str)
        ok = ok[run_ids == run_ids.groupby([ok[c].astype(str) for c in key]).transform("max")]
    return ok


def per_image(df: pd.DataFrame) -> pd.DataFrame:
    """One row per successfully processed image (`IMAGE_KEY`): its best-ranked explained class.

    For a top-k run that is the top-1 prediction. For a `--classes` run it is the explained class
    ranked highest (`chosen_classes`: not a prediction). When the report has labels but no `correct`
    column, `correct` is derived (top-1 name equals the label, case-insensitive, `_` and space alike).
    If an image appears under several runs, the newest run wins (`explained_rows`).
    """
    ok = explained_rows(df)
    key = image_key(ok)
    first = ok[ok["rank"] == 1]
    if not first.duplicated(key).any() and len(first) == len(ok[key].drop_duplicates()):
        top = first  # a top-k run: every image has its rank-1 row (no sort of a large frame needed)
    else:
        top = ok.sort_values([*key, "rank"], kind="stable").drop_duplicates(key, keep="first")
    if "label" in top.columns and "correct" not in top.columns:
        correct = [
            is_correct(None if pd.isna(label) else label, {1: c})
            for c, label in zip(top["class_name"], top["label"], strict=True)
        ]
        top = top.assign(correct=pd.array(correct, dtype="boolean"))
    return top.reset_index(drop=True)
