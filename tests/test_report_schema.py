"""`cambatch.report.schema`: the columns, `table()`, the map column, and how `correct` is decided."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cambatch.report.schema import (
    COLUMNS,
    MAP_NAMES,
    SCHEMA,
    STAT_NAMES,
    is_correct,
    map_array,
    name_key,
    newest_run,
    table,
)


def test_schema_is_the_declared_columns_in_order():
    assert SCHEMA.names == [c.name for c in COLUMNS]
    assert len(set(SCHEMA.names)) == len(SCHEMA.names)
    assert set(STAT_NAMES) | set(MAP_NAMES) <= set(SCHEMA.names)
    assert all(c.doc for c in COLUMNS)


def test_table_fills_missing_columns_with_nulls():
    rows = table({"path": ["a.jpg", "b.jpg"], "rank": [1, 2]}, 2)
    assert rows.schema == SCHEMA and rows.num_rows == 2
    assert rows.column("path").to_pylist() == ["a.jpg", "b.jpg"]
    assert rows.column("rank").type == pa.int16() and rows.column("rank").to_pylist() == [1, 2]
    for name in SCHEMA.names:
        if name not in ("path", "rank"):
            assert rows.column(name).null_count == 2, name
    assert table({}, 0).num_rows == 0


def test_table_turns_float_nan_into_null():
    values = np.array([0.25, np.nan, 1.0], dtype=np.float32)
    rows = table({"centroid_x": values, "cam_max": np.array([1.0, 2.0, 3.0])}, 3)
    assert rows.column("centroid_x").to_pylist() == [0.25, None, 1.0]
    assert rows.column("centroid_x").type == pa.float32()
    assert rows.column("cam_max").type == pa.float32() and rows.column("cam_max").null_count == 0


def test_table_casts_arrow_arrays_to_the_column_type():
    rows = table({"class_index": pa.array([3, 4], pa.int64())}, 2)
    assert rows.column("class_index").type == pa.int32() and rows.column("class_index").to_pylist() == [3, 4]


def test_table_refuses_an_unknown_column():
    with pytest.raises(KeyError, match="not report columns: colour"):
        table({"path": ["a"], "colour": ["red"]}, 1)


def test_map_array_round_trips_through_parquet(tmp_path):
    maps = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 7 - 1  # K=2 maps of 3 x 4, signed
    column = map_array(maps)
    assert len(column) == 2 and column.type == pa.list_(pa.float16())
    rows = table({"map": column, "map_height": [3, 3], "map_width": [4, 4]}, 2)
    pq.write_table(rows, tmp_path / "maps.parquet")
    back = pq.read_table(tmp_path / "maps.parquet")
    for k, stored in enumerate(back.column("map").to_pylist()):
        restored = np.array(stored, dtype=np.float32).reshape(3, 4)  # row-major
        np.testing.assert_array_equal(restored, maps[k].astype(np.float16).astype(np.float32))


@pytest.mark.parametrize(
    "label, names_by_rank, expected",
    [
        (None, {1: "tabby", 2: "tiger cat"}, None),  # no label: unknown
        ("tabby", {1: "tabby", 2: "tiger cat"}, True),
        ("Tiger_Cat", {1: "tiger cat"}, True),  # compared by name_key
        ("tiger cat", {1: "tabby", 2: "tiger cat"}, False),  # explained, but not at rank 1
        ("dog", {1: "tabby"}, False),
        # --classes without the top-1 among them: rank 1 is unknown
        ("espresso", {4: "espresso", 90: "tabby"}, False),  # the label's class ranked below 1: wrong
        ("cup", {4: "espresso", 90: "tabby"}, None),  # the label's class not explained: cannot tell
        ("Espresso", {1: "espresso", 7: "cup"}, True),  # --classes including the top-1
    ],
)
def test_is_correct(label, names_by_rank, expected):
    assert is_correct(label, names_by_rank) is expected


@pytest.mark.parametrize(
    ("label", "predicted", "expected"),
    [
        ("Effusion|atelectasis", ["atelectasis", "effusion"], True),  # a set: order and case do not count
        ("effusion", ["atelectasis", "effusion"], False),  # one predicted class too many
        ("effusion|mass", ["effusion"], False),
        ("effusion", [], False),
    ],
)
def test_is_correct_multi_label_compares_the_label_set_with_the_predicted_set(label, predicted, expected):
    assert is_correct(label, {1: "effusion"}, predicted) is expected


def test_name_key_is_case_blind_and_treats_underscore_as_space():
    assert name_key("Tiger_Cat") == name_key("tiger cat") == name_key("  TIGER   cat ") == "tiger cat"
    assert name_key("jack-o'-lantern") == "jack-o'-lantern"
    assert name_key("a_b") != name_key("ab")
    assert name_key(281) == "281"


def test_newest_run_is_the_latest_start_time():
    assert newest_run(["20250102T000000Z-aaaaaa", "20250110T000000Z-000000", "20241231T235959Z-ffffff"]) == (
        "20250110T000000Z-000000"
    )
