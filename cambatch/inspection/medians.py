"""Exact medians of columns streamed in batches, in memory independent of their length: radix selection.

A float's bits, flipped so that their unsigned order is the numbers' order, are read 16 bits at a time.
The first pass over the values counts them per top 16 bits and finds the bucket holding the middle
rank(s); each further pass counts, within the buckets found so far, per next 16 bits. A float32 column
takes two passes and a float64 one four, each with a 65,536-bin histogram per middle rank, whatever
the number of values. NaN is left out (as pandas' `median` does); no value gives NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

DIGIT = 16
_UNSIGNED = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}

Batches = Callable[[], Iterable[Mapping[str, np.ndarray]]]


def medians(read: Batches, dtypes: Mapping[str, np.dtype]) -> dict[str, float]:
    """The median of each named column; `read()` streams the columns anew for each pass (dicts of arrays).

    `dtypes` names the columns and their float types (float32 or float64): values are taken as that type.
    """
    return Medians(dtypes).finish(read)


class Medians:
    """`medians` whose first pass a caller may feed itself (`count`, then `next_pass`), beside its own sums."""

    def __init__(self, dtypes: Mapping[str, np.dtype]):
        self.found = {name: _Select(np.dtype(dtype)) for name, dtype in dtypes.items()}

    def count(self, batch: Mapping[str, np.ndarray]) -> None:
        for name, select in self.found.items():
            if not select.done:
                select.count(batch[name])

    def next_pass(self) -> None:
        for select in self.found.values():
            if not select.done:
                select.next_digit()

    def finish(self, read: Batches) -> dict[str, float]:
        """The passes still needed, then the medians."""
        while not all(select.done for select in self.found.values()):
            for batch in read():
                self.count(batch)
            self.next_pass()
        return {name: select.median() for name, select in self.found.items()}


class _Select:
    """The middle rank(s) of one column, found a 16-bit digit per pass."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.unsigned = _UNSIGNED[dtype]
        self.bits = dtype.itemsize * 8
        self.shift = self.bits - DIGIT  # of the digit counted in this pass
        self.total = 0  # values counted in the first pass
        self.prefixes: list[int] = []  # per middle rank, the digits found so far (high bits)
        self.ranks: list[int] = []  # per middle rank, its rank within the values with that prefix
        self.histograms: list[np.ndarray] = [np.zeros(1 << DIGIT, np.int64)]
        self.done = False

    def count(self, values: np.ndarray) -> None:
        keys = _ordered_bits(np.asarray(values, self.dtype), self.unsigned)
        digits = ((keys >> self.unsigned(self.shift)) & self.unsigned((1 << DIGIT) - 1)).astype(np.int64)
        if not self.prefixes:  # first pass: every value
            self.total += len(keys)
            self.histograms[0] += np.bincount(digits, minlength=1 << DIGIT)
            return
        high = keys >> self.unsigned(self.shift + DIGIT)
        for prefix, histogram in zip(self.prefixes, self.histograms, strict=True):
            histogram += np.bincount(digits[high == self.unsigned(prefix)], minlength=1 << DIGIT)

    def next_digit(self) -> None:
        """After a pass: the digit of each middle rank, and whether the bits are all found."""
        if not self.prefixes:
            if self.total == 0:
                self.done = True
                return
            middle = sorted({(self.total - 1) // 2, self.total // 2})
            self.prefixes, self.ranks = [0] * len(middle), middle
            self.histograms = self.histograms * len(middle)
        for i, (histogram, rank) in enumerate(zip(self.histograms, self.ranks, strict=True)):
            below = np.cumsum(histogram)
            digit = int(np.searchsorted(below, rank, side="right"))
            self.ranks[i] = rank - (int(below[digit - 1]) if digit else 0)
            self.prefixes[i] = (self.prefixes[i] << DIGIT) | digit
        self.shift -= DIGIT
        self.done = self.shift < 0
        self.histograms = [np.zeros(1 << DIGIT, np.int64) for _ in self.prefixes]

    def median(self) -> float:
        if not self.prefixes:
            return float("nan")
        keys = np.array(self.prefixes, self.unsigned)
        return float(np.mean(_floats_of(keys, self.dtype).astype(np.float64)))


def _ordered_bits(values: np.ndarray, unsigned) -> np.ndarray:
    """The floats' bits as unsigned integers in the floats' order (NaN dropped): negatives flipped whole,
    positives with the sign bit set.
    """
    values = values[~np.isnan(values)]
    bits = values.view(unsigned)
    sign = unsigned(1) << unsigned(values.dtype.itemsize * 8 - 1)
    return np.where(bits & sign, ~bits, bits | sign)


def _floats_of(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    sign = keys.dtype.type(1) << keys.dtype.type(dtype.itemsize * 8 - 1)
    return np.where(keys & sign, keys & ~sign, ~keys).view(dtype)
