"""Running sums and counts per group, a batch of rows at a time: the means `summarize` reports per class or
label (its table, `inspection.summarize.GroupTable`; the trust columns, `inspection.trust.TrustSums`), in
memory that grows with the groups, never with the rows.
"""

from __future__ import annotations

import pandas as pd


class GroupSums:
    """Per group of `key` (as text; rows without a group left out): the row count and, for each
    `name -> source column` of `columns`, the sum and count of the column's values (NaN / NA left out).
    """

    def __init__(self, key: str, columns: dict[str, str]):
        self.key = key
        self.columns = columns
        self.sums = pd.DataFrame()  # index: the group; columns `images`, `<name>:sum`, `<name>:n`

    def add(self, rows: pd.DataFrame) -> None:
        """One batch of rows."""
        grouped = rows.dropna(subset=[self.key])
        present = {name: source for name, source in self.columns.items() if source in grouped.columns}
        values = grouped[list(present.values())].astype(float).set_axis(list(present), axis=1)
        by = values.groupby(grouped[self.key].astype(str).to_numpy())
        batch = pd.concat(
            [by.size().rename("images"), by.sum().add_suffix(":sum"), by.count().add_suffix(":n")], axis=1
        )
        self.sums = batch if self.sums.empty else self.sums.add(batch, fill_value=0)

    @property
    def groups(self) -> pd.Index:
        """The groups seen, as text."""
        return self.sums.index.astype(str)

    def sizes(self) -> pd.Series:
        """Rows per group."""
        return self.sums["images"].astype(int) if len(self.sums) else pd.Series([], dtype=int)

    def mean(self, name: str, groups: pd.Index | None = None) -> pd.Series | None:
        """The mean of `name` per group (those of `groups`, else those seen; NaN where a group has no value), or
        None when no batch had its column.
        """
        if f"{name}:sum" not in self.sums.columns:
            return None
        sums = self.sums if groups is None else self.sums.reindex(groups)
        counted = sums[f"{name}:n"]
        return (sums[f"{name}:sum"] / counted.where(counted > 0)).astype(float)
