"""`cambatch.sources.text`: lists and CSV tables as spreadsheets and Windows editors save them."""

from __future__ import annotations

from cambatch.sources.text import csv_table, text_lines

BOM = "\ufeff"


def test_lines_lose_the_bom_and_every_kind_of_line_ending(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{BOM}a.png\r\n\r\n  b.png  \rc.png\n".encode())
    assert list(text_lines(listing)) == [(1, "a.png"), (3, "b.png"), (4, "c.png")]


def test_a_csv_header_loses_the_bom_and_the_spaces_around_its_names(tmp_path):
    table = tmp_path / "boxes.csv"
    table.write_bytes(f'{BOM}path, x0 ,y0\r\n"a, b.png",1,2\r\nc.png,3,4\r\n'.encode())
    with csv_table(table) as reader:
        assert reader.fieldnames == ["path", "x0", "y0"]
        rows = [(reader.line_num, row) for row in reader]
    assert rows == [(2, {"path": "a, b.png", "x0": "1", "y0": "2"}), (3, {"path": "c.png", "x0": "3", "y0": "4"})]


def test_an_empty_csv_has_no_columns(tmp_path):
    (tmp_path / "empty.csv").write_bytes(BOM.encode())
    with csv_table(tmp_path / "empty.csv") as reader:
        assert reader.fieldnames == [] and list(reader) == []
