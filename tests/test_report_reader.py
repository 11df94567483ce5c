"""`cambatch.report.reader`: a report read back as a typed DataFrame, with its maps and one row per image."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import cambatch
from cambatch.report import reader
from cambatch.report.schema import METADATA_KEY, SCHEMA, map_array, table


def test_load_report_has_typed_columns_and_run_settings(sample_run):
    result, raw = sample_run
    df = cambatch.load_report(result.out)
    assert len(df) == len(raw) == 21
    for column in ("class_name", "status", "model", "method", "run_id"):
        assert isinstance(df[column].dtype, pd.CategoricalDtype), column
    assert list(df["status"].cat.categories) == ["error", "ok"]
    assert df["rank"].dtype == "Int16" and df["class_index"].dtype == "Int32"
    assert df["probability"].dtype == np.float32
    # Same values as a plain read, row for row.
    key = ["path", "rank"]
    a, b = df.sort_values(key).reset_index(drop=True), raw.sort_values(key).reset_index(drop=True)
    assert list(a["class_name"].astype(str)) == list(b["class_name"])
    np.testing.assert_array_equal(a["border_energy"].to_numpy(), b["border_energy"].to_numpy())
    # Settings from the Parquet metadata.
    assert df.attrs["model"] == "efficientnet_lite0"
    assert df.attrs["run_id"] == result.run_id and df.attrs["run_ids"] == [result.run_id]
    assert len(df.attrs["class_names"]) == 1000 and df.attrs["topk"] == 3


def test_load_report_filters_and_columns_are_applied_by_pyarrow(sample_run):
    result, raw = sample_run
    top = cambatch.load_report(result.out, status="ok", rank=1, columns=["path", "class_name", "probability"])
    assert list(top.columns) == ["path", "class_name", "probability"]  # filter columns not added
    expected = raw[(raw.status == "ok") & (raw["rank"] == 1)]
    assert sorted(top["path"]) == sorted(expected["path"])
    assert dict(zip(top["path"], top["class_name"].astype(str), strict=True)) == dict(
        zip(expected["path"], expected["class_name"], strict=True)
    )

    two = cambatch.load_report(result.out, rank=[1, 2])
    assert len(two) == 14 and set(two["rank"]) == {1, 2}
    confident = cambatch.load_report(result.out, where=ds.field("probability") > 0.5)
    assert sorted(confident["path"]) == sorted(raw.loc[raw.probability > 0.5, "path"])
    assert len(cambatch.load_report(result.out, status="error")) == 0
    with pytest.raises(KeyError, match="no column 'nope'"):
        cambatch.load_report(result.out, columns=["path", "nope"])
    with pytest.raises(FileNotFoundError, match="no cambatch report"):
        cambatch.load_report(result.out / "missing")


def test_load_map_returns_the_raw_map_kept_in_the_report(sample_run):
    result, raw = sample_run
    assert not (result.out / "maps").exists()  # no other file: the report holds the maps
    for row in raw.itertuples():
        m = cambatch.load_map(result.out, row.path, row.class_index)
        assert m.dtype == np.float32 and m.ndim == 2
        # Stored as float16: the report's statistics of the raw map hold to that precision.
        assert m.max() == pytest.approx(row.cam_max, rel=2e-3, abs=2e-2)
        assert m.mean() == pytest.approx(row.cam_mean, rel=2e-3, abs=2e-2)
    with pytest.raises(KeyError, match="has maps for classes"):
        cambatch.load_map(result.out, "coffee.png", 999_999)
    with pytest.raises(KeyError, match="no processed image"):
        cambatch.load_map(result.out, "nope.png", 1)


def test_per_image_takes_top1_and_the_newest_run_of_a_repeated_image():
    df = pd.DataFrame(
        {
            "path": ["a.jpg", "a.jpg", "a.jpg", "b.jpg", "c.jpg"],
            "rank": [1, 2, 1, 1, None],
            "class_name": ["old", "x", "new", "cat", None],
            "status": ["ok", "ok", "ok", "ok", "error"],
            "run_id": [
                "20250101T000000Z-a",
                "20250101T000000Z-a",
                "20250102T000000Z-b",
                "20250101T000000Z-a",
                "20250101T000000Z-a",
            ],
            "label": ["New", "New", "New", "dog", None],
        }
    )
    top = reader.per_image(df)
    assert list(top["path"]) == ["a.jpg", "b.jpg"]
    assert list(top["class_name"]) == ["new", "cat"]
    assert list(top["correct"]) == [True, False]  # derived: names compared case-insensitively
    # As `load_report` returns them, run ids are an unordered categorical (summarize of a resumed report crashed).
    categorical = reader.per_image(df.assign(run_id=df["run_id"].astype("category")))
    assert list(categorical["class_name"]) == ["new", "cat"]


def test_per_image_keys_an_image_by_its_input_and_path():
    """Two INPUTs holding `x.png` hold two images, resumed (newest run) and ranked each on its own."""
    df = pd.DataFrame(
        {
            "input_root": ["/in/one", "/in/one", "/in/two", "/in/two", "/in/two"],
            "path": ["x.png"] * 5,
            "rank": [1, 1, 2, 1, 1],
            "class_name": ["old cat", "cat", "saucer", "cup", "mug"],
            "status": ["ok"] * 5,
            "run_id": ["2025-a", "2025-b", "2025-a", "2025-a", "2024-z"],
        }
    )
    top = reader.per_image(df)
    assert list(zip(top["input_root"], top["class_name"], strict=True)) == [("/in/one", "cat"), ("/in/two", "cup")]
    assert reader.image_key(df) == ["input_root", "path"] and reader.image_key(df[["path"]]) == ["path"]
    assert reader.image_ids(top) == [("/in/one", "x.png"), ("/in/two", "x.png")]


def test_load_map_asks_which_input_when_several_hold_the_path(tmp_path):
    maps = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    rows = {
        "input_root": ["/in/one", "/in/two"],
        "path": ["x.png", "x.png"],
        "status": ["ok", "ok"],
        "rank": [1, 1],
        "class_index": [7, 7],
        "run_id": ["r", "r"],
        "map": map_array(maps),
        "map_height": [2, 2],
        "map_width": [3, 3],
    }
    write_part(tmp_path / "report" / "part.parquet", rows, 2, "r")
    with pytest.raises(KeyError, match=r"several INPUTs hold 'x.png' \(/in/one, /in/two\): pass input_root"):
        cambatch.load_map(tmp_path, "x.png", 7)
    np.testing.assert_array_equal(cambatch.load_map(tmp_path, "x.png", 7, input_root="/in/two"), maps[1])


def write_part(path, rows: dict, count: int, run_id: str, schema: pa.Schema = SCHEMA):
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"run_id": run_id, "model": "tiny", "class_names": ["a", "b"]}
    pq.write_table(
        table(rows, count, schema).replace_schema_metadata({METADATA_KEY: json.dumps(settings).encode()}), path
    )


def test_parts_of_different_versions_are_read_as_the_union_of_their_columns(tmp_path):
    report = tmp_path / "report"
    old_schema = pa.schema([f for f in SCHEMA if f.name not in ("label", "correct", "map", "map_height", "map_width")])
    write_part(
        report / "part-1.parquet",
        {"path": ["old.jpg"], "status": ["ok"], "rank": [1]},
        1,
        "20240101T000000Z-a",
        old_schema,
    )
    write_part(
        report / "part-2.parquet",
        {"path": ["new.jpg"], "status": ["ok"], "rank": [1], "label": ["a"]},
        1,
        "20250101T000000Z-b",
    )
    assert "label" in reader.report_columns(tmp_path) and "map" in reader.report_columns(tmp_path)
    df = cambatch.load_report(tmp_path)
    assert sorted(df.path) == ["new.jpg", "old.jpg"] and "map" not in df.columns  # maps only when asked
    labels = df.set_index("path").label
    assert labels["new.jpg"] == "a" and pd.isna(labels["old.jpg"])  # a column the old part lacks: null
    assert df.attrs["run_ids"] == ["20240101T000000Z-a", "20250101T000000Z-b"] and df.attrs["run_id"].startswith("2025")


def test_maps_are_read_only_when_asked_and_stacked(tmp_path):
    maps = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    rows = {
        "path": ["a.jpg", "a.jpg"],
        "status": ["ok", "ok"],
        "rank": [1, 2],
        "class_index": [0, 1],
        "run_id": ["r", "r"],
        "map": map_array(maps),
        "map_height": [2, 2],
        "map_width": [3, 3],
    }
    write_part(tmp_path / "report" / "part.parquet", rows, 2, "r")
    with_maps = cambatch.load_report(tmp_path, maps=True)
    np.testing.assert_array_equal(reader.map_stack(with_maps.sort_values("rank")), maps)
    np.testing.assert_array_equal(cambatch.load_map(tmp_path, "a.jpg", 1), maps[1])
    assert reader.map_stack(with_maps.iloc[:0]).shape == (0, 0, 0)
    mixed = pd.DataFrame({"map": [np.zeros(4), np.zeros(6)], "map_height": [2, 2], "map_width": [2, 3]})
    with pytest.raises(ValueError, match="maps of several sizes"):
        reader.map_stack(mixed)


def test_a_row_written_before_maps_were_kept_says_so(tmp_path):
    rows = {"path": ["a.jpg"], "status": ["ok"], "rank": [1], "class_index": [0], "run_id": ["r"]}
    write_part(tmp_path / "report" / "part.parquet", rows, 1, "r")
    with pytest.raises(KeyError, match="holds no map"):
        cambatch.load_map(tmp_path, "a.jpg", 0)


def test_per_image_of_a_classes_run_takes_the_best_ranked_explained_class():
    df = pd.DataFrame(
        {
            "path": ["a.jpg", "a.jpg", "b.jpg", "b.jpg"],
            "rank": [40, 3, 1, 900],
            "class_name": ["cup", "espresso", "tabby", "cup"],
            "status": ["ok"] * 4,
            "label": ["Espresso", "Espresso", "dog", "dog"],
        }
    )
    top = reader.per_image(df)
    assert list(top["class_name"]) == ["espresso", "tabby"] and list(top["rank"]) == [3, 1]
    assert list(top["correct"]) == [True, False]  # derived from the best-ranked class
    kept = reader.per_image(df.assign(correct=[False, False, True, True]))
    assert list(kept["correct"]) == [False, True]  # a stored `correct` column is kept, not derived again


def test_has_labels():
    assert not reader.has_labels(pd.DataFrame({"path": ["a"]}))
    assert not reader.has_labels(pd.DataFrame({"label": [None, None]}))
    assert reader.has_labels(pd.DataFrame({"label": [None, "cat"]}))


def _embedded_report(tmp_path):
    """Three images x top-2: b.jpg failed; each ok image's vector on its rank-1 row."""
    embedding = pa.array([[1.0, 2.0], None, [3.0, 4.0], None, None], pa.list_(pa.float16()))
    rows = {
        "input_root": ["/in"] * 5,
        "path": ["a.jpg", "a.jpg", "c.jpg", "c.jpg", "b.jpg"],
        "status": ["ok", "ok", "ok", "ok", "error"],
        "rank": [1, 2, 1, 2, None],
        "class_name": ["cat", "dog", "dog", "cat", None],
        "label": ["cat", "cat", "cat", "cat", "dog"],
        "correct": [True, True, False, False, None],
        "embedding": embedding,
    }
    write_part(tmp_path / "report" / "part.parquet", rows, 5, "r")
    return tmp_path


def test_load_embeddings_reads_one_vector_per_image_and_load_report_leaves_them_out(tmp_path):
    out = _embedded_report(tmp_path)
    images, vectors = cambatch.load_embeddings(out)
    assert images["path"].tolist() == ["a.jpg", "c.jpg"] and images["class_name"].tolist() == ["cat", "dog"]
    assert vectors.dtype == np.float16 and vectors.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert images["correct"].tolist() == [True, False] and images["input_root"].tolist() == ["/in", "/in"]
    narrowed = cambatch.load_embeddings(out, where=ds.field("class_name") == "dog")
    assert narrowed.images["path"].tolist() == ["c.jpg"] and narrowed.vectors.shape == (1, 2)
    assert "embedding" not in cambatch.load_report(out, maps=True).columns  # only when named
    assert "embedding" in cambatch.load_report(out, columns=["path", "embedding"]).columns


def test_load_embeddings_of_a_run_without_them_says_how_to_get_them(tmp_path):
    old_schema = pa.schema([f for f in SCHEMA if f.name != "embedding"])
    write_part(tmp_path / "report" / "part.parquet", {"path": ["a.jpg"], "status": ["ok"]}, 1, "r", old_schema)
    with pytest.raises(cambatch.errors.UsageError, match="holds no embeddings: run it with --embeddings"):
        cambatch.load_embeddings(tmp_path)
    write_part(tmp_path / "new" / "report" / "part.parquet", {"path": ["a.jpg"], "status": ["ok"]}, 1, "r")
    with pytest.raises(cambatch.errors.UsageError, match="holds no embeddings"):  # the column, all null
        cambatch.load_embeddings(tmp_path / "new")


def test_scan_report_streams_the_matching_rows_in_batches(tmp_path):
    out = _embedded_report(tmp_path)
    batches = list(reader.scan_report(out, columns=["path", "rank"], where=ds.field("status") == "ok", batch_rows=3))
    assert len(batches) >= 2 and max(len(b) for b in batches) <= 3 and list(batches[0].columns) == ["path", "rank"]
    assert pd.concat(batches)["path"].tolist() == ["a.jpg", "a.jpg", "c.jpg", "c.jpg"]
    with pytest.raises(KeyError, match="no column 'nope'"):
        next(reader.scan_report(out, columns=["nope"]))
