"""Lists and CSV tables as people write them, read one way: `--from-list` lists and every annotation file.

A spreadsheet's "CSV UTF-8" starts with a byte-order mark, a hand-typed header may read `path, x0, y0`,
and a file saved on Windows ends its lines with CRLF: each file is opened by `open_text`, so all of them
read alike, whoever wrote them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def open_text(path: Path) -> TextIO:
    """`path` as UTF-8 text, without the BOM a spreadsheet writes first; lines end in LF, CRLF or CR alike.

    `newline=""` hands the CSV reader the line endings as written (a quoted field may hold a newline);
    `text_lines` strips them.
    """
    return Path(path).open(encoding="utf-8-sig", newline="")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of `path`, stripped, with their line numbers (from 1)."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line.strip()


@contextmanager
def csv_table(path: Path) -> Iterator[csv.DictReader]:
    """A `csv.DictReader` over `path` whose column names are trimmed (`path, x0` names `x0`); its
    `line_num` is the line a row ends on.
    """
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
        yield reader
