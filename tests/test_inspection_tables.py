"""`cambatch.inspection.tables`: result tables for people (rich) and for scripts (CSV, JSON)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from cambatch.inspection.tables import emit, rich_table


@pytest.fixture
def frame() -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "images": [12, 3],
            "mean_probability": [0.912345, np.nan],
            "border_flag": [True, False],
            "flags": ["border", ""],
        },
        index=pd.Index(["tabby", "tiger cat"], name="class"),
    )
    return table


def test_json_has_meta_and_rows_with_nan_as_null(frame):
    stream = io.StringIO()
    meta = {"median": np.float32(0.25), "missing": float("nan"), "runs": ("a", "b"), "n": np.int64(3)}
    emit(frame, "json", title="t", meta=meta, stream=stream)
    payload = json.loads(stream.getvalue())
    assert payload["meta"] == {"median": 0.25, "missing": None, "runs": ["a", "b"], "n": 3}
    assert payload["rows"][0] == {
        "class": "tabby",
        "images": 12,
        "mean_probability": 0.912345,
        "border_flag": True,
        "flags": "border",
    }
    assert payload["rows"][1]["mean_probability"] is None


def test_csv_keeps_the_index_as_first_column(frame):
    stream = io.StringIO()
    emit(frame, "csv", title="t", stream=stream)
    back = pd.read_csv(io.StringIO(stream.getvalue()), index_col=0)
    assert list(back.index) == ["tabby", "tiger cat"] and back.loc["tabby", "images"] == 12
    assert back.loc["tabby", "mean_probability"] == pytest.approx(0.912345)


def test_the_rich_table_formats_cells_for_people(frame):
    stream = io.StringIO()
    emit(frame, "table", title="cambatch summarize", caption="2 classes", stream=stream)
    text = stream.getvalue()
    assert "cambatch summarize" in text and "2 classes" in text and "mean probability" in text
    rows = {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line)
    }
    assert rows["tabby"] == ["12", "0.912", "yes", "border"]  # 3 decimals, True as a mark
    assert rows["tiger cat"] == ["3", "-", "", ""]  # NaN as '-', False as blank
    table = rich_table(frame, "t")
    justify = {c.header: c.justify for c in table.columns}
    assert justify["images"] == "right" and justify["border flag"] == "left" and justify["class"] == "left"


def test_a_piped_table_keeps_long_names_whole():
    long = pd.DataFrame({"images": [1]}, index=pd.Index(["a-very-long-class-name-" * 3], name="class"))
    stream = io.StringIO()
    emit(long, "table", title="t", stream=stream)
    assert "a-very-long-class-name-" * 3 in stream.getvalue()
    narrow = Console(file=io.StringIO(), width=40)
    emit(long, "table", title="t", console=narrow)  # a given console is used as it is
    assert "a-very-long-class-name-" * 3 not in narrow.file.getvalue()


def test_an_unknown_format_is_refused(frame):
    with pytest.raises(ValueError, match="unknown format 'xml'; choose from table, csv, json"):
        emit(frame, "xml", title="t", stream=io.StringIO())


def test_a_table_off_a_terminal_prints_every_cell_whole():
    long_name = "a class name far longer than any terminal would show in one column " * 3
    frame = pd.DataFrame({"images": [1], "flags": ["border spread"]}, index=pd.Index([long_name], name="class"))
    stream = io.StringIO()
    emit(frame, "table", title="t", stream=stream)  # wider than the old 140-column pipe width, too
    assert long_name.strip() in stream.getvalue() and "…" not in stream.getvalue()


def test_counts_stay_integers_beside_float_columns():
    frame = pd.DataFrame({"images": [262, 3], "energy_in_gt": [0.51234, np.nan]}, index=["cat", "dog"])
    cells = [[str(cell) for cell in column._cells] for column in rich_table(frame, "t").columns]
    assert cells[1] == ["262", "3"] and cells[2] == ["0.512", "-"]
