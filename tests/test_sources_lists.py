"""`cambatch.sources.lists`: `--from-list` text, CSV and Parquet lists, with optional labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import PHOTOS
from sources_support import write_datasets_parquet, write_shard

from cambatch.errors import UsageError
from cambatch.sources.lists import read_list


def test_a_text_list_has_a_path_a_line_and_skips_comments_and_blanks(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jpg").write_bytes(b"123")
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\n  data/a.jpg  \n\n   # indented comment\ndata/b.png\n")
    sources = read_list(listing)
    assert [s.rel for s in sources] == ["data/a.jpg", "data/b.png"]
    assert all(s.input_root == tmp_path and s.label is None for s in sources)
    assert sources[0].size == 3 and sources[0].path == tmp_path / "data" / "a.jpg"
    assert (sources[1].size, sources[1].mtime_ns) == (-1, -1)  # missing: an error row later, not a failed run


def test_a_csv_list_with_labels(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,extra\na.jpg,Tabby,1\nb.jpg,,2\nc.jpg,NA,3\n")
    sources = read_list(listing)
    assert [(s.rel, s.label) for s in sources] == [("a.jpg", "Tabby"), ("b.jpg", None), ("c.jpg", "NA")]


def test_a_parquet_list_with_and_without_labels(tmp_path):
    pd.DataFrame({"path": ["x/1.jpg", "x/2.jpg"], "label": ["dog", None]}).to_parquet(tmp_path / "l.parquet")
    assert [(s.rel, s.label) for s in read_list(tmp_path / "l.parquet")] == [("x/1.jpg", "dog"), ("x/2.jpg", None)]
    pd.DataFrame({"path": ["y.jpg"]}).to_parquet(tmp_path / "nolabels.pq")
    assert [(s.rel, s.label) for s in read_list(tmp_path / "nolabels.pq")] == [("y.jpg", None)]


def test_paths_resolve_against_the_lists_folder(tmp_path):
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "l.txt"
    listing.write_text(f"../photos/a.jpg\n./b.jpg\n{tmp_path}/lists/sub/../c.jpg\n/elsewhere/d.jpg\n")
    sources = read_list(listing)
    assert [s.path for s in sources] == [
        tmp_path / "photos" / "a.jpg",
        tmp_path / "lists" / "b.jpg",
        tmp_path / "lists" / "c.jpg",
        Path("/elsewhere/d.jpg"),
    ]
    # Outside the list's folder the key is the absolute path without its leading slash: never absolute.
    assert [s.rel for s in sources] == [
        (tmp_path / "photos" / "a.jpg").as_posix().lstrip("/"),
        "b.jpg",
        "c.jpg",
        "elsewhere/d.jpg",
    ]


def test_bad_lists_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="list not found"):
        read_list(tmp_path / "missing.txt")
    (tmp_path / "nopath.csv").write_text("file,label\na.jpg,cat\n")
    with pytest.raises(UsageError, match="has no 'path' column \\(columns: file, label\\)"):
        read_list(tmp_path / "nopath.csv")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UsageError, match="cannot read list"):
        read_list(tmp_path / "broken.parquet")


def test_a_list_of_shards_and_parquet_files_stands_for_their_samples(tmp_path):
    write_shard(tmp_path / "shards" / "s-000.tar", PHOTOS[:2])
    write_datasets_parquet(tmp_path / "rows.parquet", PHOTOS[2:3], [0], ["cat"])
    (tmp_path / "a.jpg").write_bytes(b"123")
    listing = tmp_path / "list.txt"
    listing.write_text("shards/s-000.tar\nrows.parquet\na.jpg\n")
    sources = read_list(listing)
    assert [(str(s.input_root), s.rel) for s in sources] == [
        (str(tmp_path / "shards"), f"s-000.tar/{PHOTOS[0].name}"),
        (str(tmp_path / "shards"), f"s-000.tar/{PHOTOS[1].name}"),
        (str(tmp_path), "rows.parquet#0"),
        (str(tmp_path), "a.jpg"),
    ]
    assert sources[1].read_bytes() == PHOTOS[1].read_bytes() and sources[2].label == "cat"


def test_lists_saved_by_a_spreadsheet_or_on_windows(tmp_path):
    """A BOM first (Excel's "CSV UTF-8"), a header with spaces, CRLF line endings: read as a plain list."""
    (tmp_path / "list.txt").write_bytes("\ufeffa.jpg\r\nb.jpg\r\n".encode())
    assert [s.rel for s in read_list(tmp_path / "list.txt")] == ["a.jpg", "b.jpg"]  # not "\ufeffa.jpg"
    (tmp_path / "list.csv").write_bytes("\ufeffpath, label\r\na.jpg, tabby\r\nb.jpg,\r\n".encode())
    assert [(s.rel, s.label) for s in read_list(tmp_path / "list.csv")] == [("a.jpg", "tabby"), ("b.jpg", None)]
