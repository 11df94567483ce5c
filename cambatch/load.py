"""Reading a run's outputs back: the Parquet report as a typed DataFrame, and saved raw maps.

Only pyarrow, pandas and numpy are imported here (never torch), so notebooks and the
`summarize` / `compare` / `gallery` commands open reports quickly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .discover import ImageSource
from .layout import OutputLayout, safe_key

# Where the writer stores the run settings (`cambatch.report.METADATA_KEY`; a test keeps them
# equal). Not imported from there: `report` pulls in torch through `stats`, and reading a report
# must not pay for torch.
METADATA_KEY = b"cambatch"

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


def report_parts(out: Path | str) -> list[Path]:
    """The complete part files of a report, in name order.

    `out` may be a run's output folder (holding `report/`), the report folder itself, or one
    Parquet file. Names starting with `.` or `_` (parts still being written) are skipped, as
    pyarrow does when reading a folder.
    """
    given = Path(out).expanduser()
    if given.is_file():
        return [given]
    folder = given / "report" if (given / "report").is_dir() else given
    if not folder.is_dir():
        raise FileNotFoundError(f"no cambatch report under {given} (expected {given / 'report'})")
    parts = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not parts:
        raise FileNotFoundError(f"{folder} holds no complete report part (*.parquet)")
    return parts


def out_folder(out: Path | str) -> Path:
    """The run's output folder (the one holding `report/`, `overlays/`, `maps/`) for any `out`."""
    given = Path(out).expanduser()
    if given.is_file():
        given = given.parent
    return given.parent if given.name == "report" and not (given / "report").is_dir() else given


def read_settings(out: Path | str) -> dict[str, Any]:
    """The settings of the newest run that wrote the report, plus `run_ids`: every run found.

    A report resumed or sharded over several runs has one part (or more) per run; run ids begin
    with a UTC timestamp, so the largest one is the newest run.
    """
    by_run: dict[str, dict] = {}
    for part in report_parts(out):
        metadata = pq.read_schema(part).metadata or {}
        settings = json.loads(metadata.get(METADATA_KEY, b"{}"))
        by_run[str(settings.get("run_id", part.stem))] = settings
    newest = max(by_run)
    return {**by_run[newest], "run_ids": sorted(by_run)}


def report_columns(out: Path | str) -> list[str]:
    """The report's columns (the union over its parts), read from the part footers only."""
    names: dict[str, None] = {}
    for part in report_parts(out):
        names.update(dict.fromkeys(pq.read_schema(part).names))
    return list(names)


def load_report(
    out: Path | str,
    *,
    status: str | Iterable[str] | None = None,
    rank: int | Iterable[int] | None = None,
    columns: Sequence[str] | None = None,
    where: ds.Expression | None = None,
) -> pd.DataFrame:
    """The report of the run in `out` as a DataFrame, one row per image x class.

    Filters are pushed down to pyarrow, so only matching row groups and the asked-for columns
    are read: `status="ok"`, `rank=1` (or several: `rank=[1, 2]`), `columns=[...]`, and any
    pyarrow expression as `where` (e.g. `pyarrow.dataset.field("probability") > 0.5`).

    Dtypes: `class_name`, `status`, `model`, `method`, `run_id` (and `label`, when the run had
    labels) are categoricals; integer columns are pandas' nullable integers (error rows have no
    rank); `correct` (with labels) is nullable boolean. `df.attrs` holds the run settings
    (`model`, `class_names`, `run_id`, `topk`, `options`, ...) and `run_ids`.

    >>> import cambatch
    >>> df = cambatch.load_report("cams", status="ok", rank=1)      # doctest: +SKIP
    >>> df.groupby("class_name", observed=True).border_energy.mean()  # doctest: +SKIP
    """
    parts = report_parts(out)
    schemas = [pq.read_schema(p) for p in parts]
    # Parts written by different cambatch versions may differ in columns: read their union.
    schema = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise KeyError(f"no column {', '.join(map(repr, missing))} in the report; it has: {', '.join(schema.names)}")
    dataset = ds.dataset([str(p) for p in parts], schema=schema, format="parquet")
    table = dataset.to_table(columns=list(columns) if columns is not None else None, filter=_filter(status, rank, where))
    categories = [c for c in CATEGORICAL_COLUMNS if c in table.column_names]
    frame = table.to_pandas(categories=categories, types_mapper=_NULLABLE.get)
    for column in categories:
        # Sorted categories read better in tables and plots; "ok"/"error" always exist for status.
        extra = ["error", "ok"] if column == "status" else []
        frame[column] = frame[column].cat.set_categories(sorted(set(frame[column].cat.categories) | set(extra)))
    frame.attrs.update(read_settings(out))
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


@dataclass(frozen=True)
class _ReportedImage:
    """An image known only by its report `path`: enough for the output layout to place its files.

    The layout takes an `ImageSource`, which describes a file being discovered (and may grow
    fields for that); the layout only reads `stem_rel`, so this borrows that one property.
    """

    rel: str
    stem_rel = ImageSource.stem_rel


def output_key(path: str) -> PurePosixPath:
    """The key under which a run stores the outputs of the image with report `path` (no extension)."""
    return safe_key(_ReportedImage(path))


def map_file(out: Path | str, path: str) -> Path:
    """Where `--save-maps` put the raw maps of the image whose report `path` is `path`."""
    # The same layout the writers use, so odd names (`..`, absolute parts) map the same way.
    return OutputLayout(out_folder(out)).maps_path(_ReportedImage(path))


def load_map(out: Path | str, path: str, class_index: int) -> np.ndarray:
    """The raw CAM (pre-ReLU, un-normalized, at the model's feature resolution) of one class.

    `path` is the image's `path` column in the report, `class_index` its `class_index`. Maps
    are stored as float16 by `cambatch run --save-maps`; they come back as float32 [h, w].

    >>> import cambatch
    >>> m = cambatch.load_map("cams", "dogs/husky.jpg", 248)  # doctest: +SKIP
    >>> m.shape, float(m.mean())                            # doctest: +SKIP
    ((7, 7), 9.31)
    """
    target = map_file(out, path)
    if not target.is_file():
        raise FileNotFoundError(f"no saved maps for {path!r} ({target}); were they written with `cambatch run --save-maps`?")
    with np.load(target) as maps:
        key = str(int(class_index))
        if key not in maps.files:
            raise KeyError(f"{path!r} has maps for classes {', '.join(sorted(maps.files, key=int))}, not {key}")
        return maps[key].astype(np.float32)


def name_key(name: object) -> str:
    """Class names and labels compared case-insensitively, `_` and space alike (as the labels issue does)."""
    return " ".join(str(name).replace("_", " ").lower().split())


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
        newest = ok.groupby("path", observed=True)["run_id"].transform("max")
        ok = ok[ok["run_id"] == newest]
    first = ok[ok["rank"] == 1]
    if first["path"].is_unique and len(first) == ok["path"].nunique():
        top = first  # a top-k run: every image has its rank-1 row (no sort of a large frame needed)
    else:
        top = ok.sort_values(["path", "rank"], kind="stable").drop_duplicates("path", keep="first")
    if "label" in top.columns and "correct" not in top.columns:
        correct = [None if pd.isna(l) else name_key(c) == name_key(l) for c, l in zip(top["class_name"], top["label"])]
        top = top.assign(correct=pd.array(correct, dtype="boolean"))
    return top.reset_index(drop=True)
