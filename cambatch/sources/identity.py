"""One image, one row: an image named twice (`cambatch run gen gen`, a list naming `a.png` and `./a.png`, a
folder given and listed) is processed once.

Two sources are the same image when they read the same bytes: the same local file, its folder resolved
(symbolic links, `..`), or the same URL, tar member or Parquet row. The first one met keeps its identity
(input root, relative path). Their labels must agree: an image labelled both `cat` and `dog` becomes one
error row naming both labels, never a guess.
"""

from __future__ import annotations

import os
from dataclasses import replace

from ..names import name_key
from .discover import ImageSource


def distinct(sources: list[ImageSource]) -> list[ImageSource]:
    """`sources` without repeats, in their order; each kept image carries the label its copies agree on."""
    real_folders: dict[str, str] = {}  # one `realpath` a folder, not a file: a million images stay quick
    copies: dict[str, list[ImageSource]] = {}
    for source in sources:
        copies.setdefault(_bytes_from(source, real_folders), []).append(source)
    return [_merged(same) for same in copies.values()]


def _bytes_from(source: ImageSource, real_folders: dict[str, str]) -> str:
    """Where the image's bytes are read from: a local file's resolved path, else the URL or container path."""
    if source.reader is not None:
        return str(source.path)
    folder, name = os.path.split(str(source.path))
    if folder not in real_folders:
        real_folders[folder] = os.path.realpath(folder)
    return os.path.join(real_folders[folder], name)


def _merged(same: list[ImageSource]) -> ImageSource:
    first = same[0]
    labels: dict[str, str] = {}  # by `name_key`: `Tabby` and `tabby` are one class
    for source in same:
        if source.label is not None:
            labels.setdefault(name_key(source.label), source.label)
    if len(labels) > 1:
        named = " and ".join(repr(label) for label in labels.values())
        return replace(first, label=None, error=f"conflicting labels: the image is given {len(same)} times, as {named}")
    return replace(first, label=next(iter(labels.values()))) if labels and first.label is None else first
