"""`cambatch.bias.sampling`: a per-group sample of fixed size, the same whatever order the rows come in."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cambatch.bias.sampling import GroupSample, image_keys


def frame(n: int, root: str = "/in") -> pd.DataFrame:
    return pd.DataFrame({"input_root": [root] * n, "path": [f"{i:03d}.jpg" for i in range(n)], "n": range(n)})


def test_each_group_keeps_its_smallest_keys_whatever_the_order_and_batches():
    rows = frame(50)
    groups = np.where(rows["n"] % 3 == 0, "a", "b")
    whole = GroupSample(5)
    whole.add(rows, groups, {"v": rows["n"].to_numpy()[:, None] * [1, 2]})
    shuffled = GroupSample(5)
    order = np.random.default_rng(1).permutation(50)
    for part in np.array_split(order, 7):  # a different order, in batches
        shuffled.add(rows.iloc[part], groups[part], {"v": rows["n"].to_numpy()[part, None] * [1, 2]})
    for sample in (whole, shuffled):
        kept = {g: sorted(sample.rows.iloc[p]["n"]) for g, p in sample.groups().items()}
        assert kept == {g: sorted(_expected(rows, groups, g, 5)) for g in ("a", "b")}
        assert (sample.arrays["v"][:, 1] == 2 * sample.rows["n"].to_numpy()).all()  # arrays stay aligned
        assert sample.offered == {"a": 17, "b": 33}


def _expected(rows, groups, group, size):
    inside = rows[groups == group]
    return inside.iloc[np.argsort(image_keys(inside), kind="stable")[:size]]["n"]


def test_a_small_group_is_kept_whole_and_the_identity_is_the_key():
    sample = GroupSample(10)
    sample.add(frame(4), ["x"] * 4)
    assert sorted(sample.rows["n"]) == [0, 1, 2, 3] and sample.arrays == {}
    same_path_other_root = image_keys(frame(3, "/other"))
    assert not set(same_path_other_root) & set(image_keys(frame(3)))
    assert (image_keys(frame(3)) == image_keys(frame(3))).all()
