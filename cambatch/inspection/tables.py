"""Printing a result table for people (rich) or for scripts (CSV, JSON) - shared by summarize and compare."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO

import numpy as np
import pandas as pd
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from .options import FORMATS, Format

PIPE_WIDTH = 140


def emit(
    frame: pd.DataFrame,
    fmt: Format,
    *,
    title: str,
    caption: str = "",
    meta: dict[str, Any] | None = None,
    console: Console | None = None,
    stream: TextIO | None = None,
) -> None:
    """Write `frame` (its index becomes the first column) as a rich table, CSV or JSON.

    JSON is `{"meta": {...}, "rows": [{column: value}, ...]}` with NaN as null, so a script
    gets the dataset-wide figures (medians, thresholds, counts) next to the rows.
    """
    stream = stream or sys.stdout
    if fmt == "csv":
        frame.to_csv(stream, float_format="%.6g")
    elif fmt == "json":
        rows = json.loads(frame.reset_index().to_json(orient="records", double_precision=6))
        json.dump({"meta": _plain(meta or {}), "rows": rows}, stream, indent=1)
        stream.write("\n")
    elif fmt == "table":
        table = rich_table(frame, title, caption)
        if console is None:
            print_whole(table, Console(file=stream))
        else:
            console.print(table)  # a given console is used as it is
    else:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def print_whole(table: Table, console: Console) -> None:
    """Print `table`; off a terminal (a pipe, a log file, CI) wide enough that no cell is cut or wrapped.

    On a terminal rich fits the table to its width; a log has no width to fit, and a cell cut to
    "run…" is useless there, so the console is widened to the table's natural width.
    """
    if not console.is_terminal:
        console = Console(file=console.file, width=PIPE_WIDTH, color_system=None, highlight=False)
        needed = Measurement.get(console, console.options.update(width=10**6), table).maximum
        console.width = max(PIPE_WIDTH, needed)
    console.print(table)


def rich_table(frame: pd.DataFrame, title: str, caption: str = "") -> Table:
    """Numbers right-aligned to 3 decimals, booleans as a mark, the `flags` column highlighted."""
    table = Table(title=title, caption=caption or None, caption_justify="left")
    table.add_column(str(frame.index.name or ""), style="bold")
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])
        table.add_column(
            column.replace("_", " "),
            justify="right" if numeric else "left",
            style="yellow" if column == "flags" else None,
        )
    # Row tuples keep each column's type (`iterrows` makes a row one Series: counts became 262.000).
    for name, *row in frame.itertuples(index=True, name=None):
        table.add_row(str(name), *(_cell(value) for value in row))
    return table


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return str(value)


def _plain(value: Any) -> Any:
    """Settings and figures as JSON-safe values (NaN -> None, numpy scalars -> Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
