"""`--from-list`: images named in a text, CSV or Parquet file, with optional ground-truth labels."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import UsageError
from .discover import ImageSource, discover, image_source
from .parquet import is_parquet_name
from .remote import is_url
from .text import csv_table, text_lines
from .webdataset import is_shard_name


def read_list(list_file: Path) -> list[ImageSource]:
    """Read `list_file`: a path a line (.txt), or a CSV/Parquet table with `path` and maybe `label`.

    Relative paths are resolved against the list's folder, which is the images' `input_root`.
    A listed file that does not exist becomes an error row, not a failed run. A listed URL, tar
    shard or Parquet file stands for its samples, as when given as an INPUT (a listing of shards).
    """
    list_file = Path(list_file).expanduser().absolute()
    if not list_file.is_file():
        raise UsageError(f"list not found: {list_file}")
    entries = _entries(list_file)
    root = list_file.parent
    sources = []
    for raw, label in entries:
        if is_url(raw) or is_shard_name(raw) or is_parquet_name(raw):
            sources.extend(discover([raw if is_url(raw) else root / Path(raw).expanduser()]))
            continue
        given = Path(raw).expanduser()
        path = given if given.is_absolute() else root / given
        path = Path(os.path.normpath(path))
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix().lstrip("/")
        sources.append(image_source(path, root, rel, label))
    return sources


def _entries(list_file: Path) -> list[tuple[str, str | None]]:
    suffix = list_file.suffix.lower()
    if suffix == ".csv":
        return _csv_entries(list_file)
    if suffix in (".parquet", ".pq"):
        return _parquet_entries(list_file)
    return [(line, None) for _number, line in text_lines(list_file) if not line.startswith("#")]


def _csv_entries(list_file: Path) -> list[tuple[str, str | None]]:
    try:
        with csv_table(list_file) as table:
            _check_path_column(list_file, table.fieldnames)
            return [((row["path"] or "").strip(), _label((row.get("label") or "").strip())) for row in table]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read list {list_file}: {exc}") from None


def _parquet_entries(list_file: Path) -> list[tuple[str, str | None]]:
    import pandas as pd

    try:
        table = pd.read_parquet(list_file)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad file
        raise UsageError(f"cannot read list {list_file}: {exc}") from None
    _check_path_column(list_file, table.columns)
    labels = table["label"] if "label" in table.columns else [None] * len(table)
    return [(str(p), _label(lab)) for p, lab in zip(table["path"], labels, strict=True)]


def _check_path_column(list_file: Path, columns) -> None:
    if "path" not in columns:
        raise UsageError(f"{list_file} has no 'path' column (columns: {', '.join(map(str, columns))})")


def _label(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or str(value) == "":
        return None
    return str(value)
