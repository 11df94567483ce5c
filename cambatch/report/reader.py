"""Reading a run's report back: a typed DataFrame, and the raw maps it keeps.

Only pyarrow, pandas and numpy are imported here (never torch), so notebooks and the
`summarize` / `compare` / `gallery` commands open reports quickly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .parts import report_files, settings_of
from .schema import MAP_NAMES, is_correct

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
    `columns`; `map_stack` turns them into one array.

    Dtypes: `class_name`, `status`, `model`, `method`, `run_id` (and `label`, when the run had
    labels) are categoricals; integer columns are pandas' nullable integers (error rows have no
    rank); `correct` (with labels) is nullable boolean. `df.attrs` holds the run settings
    (`model`, `class_names`, `run_id`, `topk`, `options`, ...) and `run_ids`.

    >>> import cambatch
    >>> df = cambatch.load_report("cams", status="ok", rank=1)      # doctest: +SKIP
    >>> df.groupby("class_name", observed=True).border_energy.mean()  # doctest: +SKIP
    """
    parts, filesystem = report_files(out)
    schemas = [pq.read_schema(p, filesystem=filesystem) for p in parts]
    # Parts written by different cambatch versions may differ in columns: read their union.
    schema = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise KeyError(
                f"no column {', '.join(map(repr, missing))} in the report; it has: {', '.join(schema.names)}"
            )
    if columns is None and not maps:
        columns = [name for name in schema.names if name != "map"]
    dataset = ds.dataset(parts, schema=schema, format="parquet", filesystem=filesystem)
    table = dataset.to_table(
        columns=list(columns) if columns is not None else None, filter=_filter(status, rank, where)
    )
    frame = frame_of(table)
    frame.attrs.update(settings_of(parts, filesystem))
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


def load_map(out: Path | str, path: str, class_index: int) -> np.ndarray:
    """The raw map of one image and class: signed, not normalized, at the model's feature resolution, float32 [h, w].

    `path` is the image's `path` column in the report, `class_index` its `class_index`. Maps are
    kept in the report (float16), so no model and no other file is needed.

    >>> import cambatch
    >>> m = cambatch.load_map("cams", "dogs/husky.jpg", 248)  # doctest: +SKIP
    >>> m.shape, float(m.mean())                            # doctest: +SKIP
    ((7, 7), 9.31)
    """
    rows = load_report(out, status="ok", columns=["class_index", "run_id", *MAP_NAMES], where=ds.field("path") == path)
    if rows.empty:
        raise KeyError(f"no processed image with path {path!r} in the report")
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


def map_stack(frame: pd.DataFrame) -> np.ndarray:
    """The `map` column of report rows (read with `maps=True`) as one float32 array [rows, h, w]."""
    sizes = set(zip(frame["map_height"], frame["map_width"], strict=True))
    if len(sizes) > 1:
        raise ValueError(f"the rows hold maps of several sizes {sorted(sizes)}; stack one size at a time")
    height, width = next(iter(sizes)) if sizes else (0, 0)
    flat = np.stack(frame["map"].to_numpy()) if len(frame) else np.empty((0, 0), np.float16)
    return flat.astype(np.float32).reshape(len(frame), int(height), int(width))


def several_inputs(df: pd.DataFrame) -> bool:
    """Whether the report spans several INPUTs: the run then gave each its own overlay folder (`layout.image_dir`)."""
    return "input_root" in df.columns and df["input_root"].nunique() > 1


def has_labels(df: pd.DataFrame) -> bool:
    """Whether the report carries ground truth (`label`), with at least one labelled image."""
    return "label" in df.columns and bool(df["label"].notna().any())


def per_image(df: pd.DataFrame) -> pd.DataFrame:
    """One row per successfully processed image: its best-ranked explained class.

    For a top-k run that is the top-1 prediction. For a `--classes` run it is the explained class
    ranked highest. When the report has labels but no `correct` column, `correct` is derived
    (top-1 name equals the label, case-insensitive, `_` and space alike). If an image appears
    under several runs (an older report written before resume existed), the newest run wins.
    """
    ok = df[df["status"] == "ok"]
    if "run_id" in ok.columns and ok["run_id"].nunique() > 1:
        # `schema.newest_run`, vectorized; as text: `load_report`'s categorical run ids have no order.
        run_ids = ok["run_id"].astype(str)
        ok = ok[run_ids == run_ids.groupby(ok["path"].astype(str)).transform("max")]
    first = ok[ok["rank"] == 1]
    if first["path"].is_unique and len(first) == ok["path"].nunique():
        top = first  # a top-k run: every image has its rank-1 row (no sort of a large frame needed)
    else:
        top = ok.sort_values(["path", "rank"], kind="stable").drop_duplicates("path", keep="first")
    if "label" in top.columns and "correct" not in top.columns:
        correct = [
            is_correct(None if pd.isna(label) else label, {1: c})
            for c, label in zip(top["class_name"], top["label"], strict=True)
        ]
        top = top.assign(correct=pd.array(correct, dtype="boolean"))
    return top.reset_index(drop=True)
