"""`cambatch.sources.parquet`: the image column found, rows named `file.parquet#row` across row groups,
`datasets` ClassLabel names as labels, and a run giving the rows of the same photos in a folder."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PHOTOS
from sources_support import assert_same_rows, by_image, write_datasets_parquet

from cambatch.config import RunConfig
from cambatch.errors import UsageError
from cambatch.runner.pipeline import run
from cambatch.sources.discover import discover
from cambatch.sources.parquet import image_column


def test_the_image_column_is_found_by_name_then_by_type():
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert image_column(pa.schema([("id", pa.int64()), ("jpg", pa.binary()), ("png", pa.binary())])) == "jpg"
    assert image_column(pa.schema([("caption", pa.string()), ("pixels", struct)])) == "pixels"
    assert image_column(pa.schema([("thumb", pa.large_binary()), ("image", struct)])) == "image"
    assert image_column(pa.schema([("path", pa.string()), ("label", pa.string())])) is None


def test_rows_are_numbered_across_row_groups_with_class_names_as_labels(tmp_path):
    target = write_datasets_parquet(
        tmp_path / "train.parquet", PHOTOS[:5], [0, 1, 1, 0, 1], ["cat", "dog"], row_group_size=2
    )
    found = discover([target])
    assert [s.rel for s in found] == [f"train.parquet#{i}" for i in range(5)]
    assert [s.label for s in found] == ["cat", "dog", "dog", "cat", "dog"]
    assert {s.input_root for s in found} == {tmp_path}
    assert [s.read_bytes() for s in found] == [p.read_bytes() for p in PHOTOS[:5]]
    assert {(s.size, s.mtime_ns) for s in found} == {(target.stat().st_size, target.stat().st_mtime_ns)}


def test_a_row_without_bytes_reads_its_path_and_an_empty_row_says_so(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(PHOTOS[0].read_bytes())
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [{"bytes": None, "path": "pics/a.png"}, {"bytes": None, "path": None}]
    pq.write_table(pa.table({"image": pa.array(cells, struct)}), tmp_path / "refs.parquet")
    by_path, empty = discover([tmp_path / "refs.parquet"])
    assert by_path.read_bytes() == PHOTOS[0].read_bytes()
    with pytest.raises(ValueError, match="no image in row 1"):
        empty.read_bytes()


def test_a_parquet_file_without_images_is_refused_when_given_and_passed_over_in_a_folder(tmp_path):
    pq.write_table(pa.table({"path": ["a.png"], "label": ["cat"]}), tmp_path / "labels.parquet")
    (tmp_path / "a.png").write_bytes(PHOTOS[0].read_bytes())
    with pytest.raises(UsageError, match="has no image column"):
        discover([tmp_path / "labels.parquet"])
    assert [s.rel for s in discover([tmp_path])] == ["a.png"]


def test_a_datasets_parquet_gives_the_rows_of_the_same_photos_in_a_folder(tmp_path, sample_run):
    _, folder_rows = sample_run
    target = write_datasets_parquet(
        tmp_path / "photos.parquet", PHOTOS, [0] * len(PHOTOS), ["espresso"], row_group_size=3
    )
    out = tmp_path / "out"
    result = run(RunConfig.create(inputs=[target], out=out, workers=1))
    assert (result.ok, result.errors) == (len(PHOTOS), 0)
    rows = pd.read_parquet(out / "report")
    names = {f"photos.parquet#{i}": p.name for i, p in enumerate(PHOTOS)}
    assert set(rows["path"]) == set(names)
    assert_same_rows(by_image(rows, names.get), by_image(folder_rows, lambda p: p))
    assert set(rows["label"]) == {"espresso"}
    coffee = rows[(rows["path"] == next(k for k, v in names.items() if v == "coffee.png")) & (rows["rank"] == 1)]
    assert coffee["correct"].tolist() == [True]  # the ClassLabel name reached the label
