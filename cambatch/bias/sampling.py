"""Samples of a report's images whose size is fixed per group, drawn while the report streams past. Torch-free.

An image is kept when its *key*, a seeded 64-bit hash of its identity (`input_root` + `path`), is
among the `size` smallest of its group: a uniform sample without replacement that does not depend
on the order the rows come in (parts, row groups, shards), so the same report always gives the
same sample. Memory: `size` rows per group, plus one batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

IDENTITY = ("input_root", "path")  # what names an image across runs (`runner.resume` keys rows the same way)
HASH_KEY = "cambatch-sample0"  # pandas' hash key: 16 characters; a fixed one makes the sample reproducible


def image_keys(frame: pd.DataFrame, hash_key: str = HASH_KEY) -> np.ndarray:
    """uint64 [rows]: each row's seeded hash of its image's identity."""
    return pd.util.hash_pandas_object(frame[list(IDENTITY)], index=False, hash_key=hash_key).to_numpy()


class GroupSample:
    """At most `size` rows per group: those with the smallest keys (`image_keys`).

    `add` takes a batch of rows (a DataFrame with the identity columns), their group names, and
    arrays with one row per frame row (embeddings, maps); `rows`, `arrays` and `groups` give the
    kept ones back, and `offered` how many rows each group had.
    """

    def __init__(self, size: int):
        self.size = size
        self.offered: dict[str, int] = {}
        self._codes: dict[str, int] = {}
        self._rows: pd.DataFrame | None = None
        self._arrays: dict[str, np.ndarray] = {}
        self._group: np.ndarray = np.empty(0, np.int64)
        self._key: np.ndarray = np.empty(0, np.uint64)

    def add(self, frame: pd.DataFrame, groups: Iterable, arrays: dict[str, np.ndarray] | None = None) -> None:
        names = pd.Series(list(groups), index=frame.index, dtype=object).astype(str)
        for name, count in names.value_counts().items():
            self.offered[name] = self.offered.get(name, 0) + int(count)
            self._codes.setdefault(name, len(self._codes))
        codes = names.map(self._codes).to_numpy(np.int64)
        rows = frame.reset_index(drop=True)
        if self._rows is not None:
            rows = pd.concat([self._rows, rows], ignore_index=True)
            arrays = {name: np.concatenate([kept, arrays[name]]) for name, kept in self._arrays.items()}
        group = np.concatenate([self._group, codes])
        key = np.concatenate([self._key, image_keys(frame)])
        keep = _smallest_per_group(group, key, self.size)
        self._rows = rows.iloc[keep].reset_index(drop=True)
        self._arrays = {name: values[keep] for name, values in (arrays or {}).items()}
        self._group, self._key = group[keep], key[keep]

    @property
    def rows(self) -> pd.DataFrame:
        return self._rows if self._rows is not None else pd.DataFrame()

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return self._arrays

    def groups(self) -> dict[str, np.ndarray]:
        """Each group's positions in `rows` and `arrays`, in key order."""
        names = {code: name for name, code in self._codes.items()}
        order = np.lexsort((self._key, self._group))
        starts = np.flatnonzero(np.r_[True, np.diff(self._group[order]) != 0]) if len(order) else []
        bounds = [*starts, len(order)]
        return {names[int(self._group[order[a]])]: order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)}


def _smallest_per_group(group: np.ndarray, key: np.ndarray, size: int) -> np.ndarray:
    """Positions of the `size` smallest keys of each group (sorted by group, then key)."""
    order = np.lexsort((key, group))
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]]) if len(order) else np.empty(0, int)
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return np.sort(order[np.arange(len(order)) - first < size])
