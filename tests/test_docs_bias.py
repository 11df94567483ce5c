"""Every Python block of docs/bias.md runs, in order, on a run holding a planted error slice, and is right."""

from __future__ import annotations

import re

import pytest
from bias_support import keys_of_the_path_alone
from conftest import REPO
from docs_support import run_blocks

from cambatch.bias.slices import find_slices, write_slices

DOC = REPO / "docs" / "bias.md"
EXAMPLE_FOLDER = re.compile(r"^\s*OUT\s*=")  # the doc's "cams" is replaced by the test's run


@pytest.fixture(scope="module")
def recipes(planted_slice):
    out, kinds = planted_slice
    write_slices(out, find_slices(out))  # what the page's `cambatch slices` line leaves in OUT/slices/
    namespace = {"OUT": str(out)}
    with keys_of_the_path_alone():
        count = run_blocks(DOC, EXAMPLE_FOLDER, namespace)
    return namespace, kinds, count


def test_every_block_ran_and_the_embeddings_are_one_row_per_image(recipes):
    ns, kinds, count = recipes
    assert count == 5
    assert len(ns["images"]) == len(kinds) and ns["vectors"].shape == (len(kinds), 5)
    assert len(ns["wrong"]) == sum(k == "stamped" for k in kinds.values())


def test_the_slice_recipes_find_the_stamped_photos(recipes):
    ns, kinds, _ = recipes
    assert ns["worst"]["group"] == "green_ball" and ns["worst"]["predicted"] == "red_ball"
    assert {kinds[p] for p in ns["members"]["path"]} == {"stamped"}
    assert ns["region"]["peak_x1"] <= 0.35 and ns["region"]["peak_y1"] <= 0.35
    assert ns["sizes"].loc[1].tolist() == [10, 10] and ns["confidence"].loc[1] > 0.99
    assert ns["per_slice"][["slice", "members", "wrong"]].values.tolist() == [[1, 10, 10]]
    assert ns["gaps"]["group"].tolist() == ["green_ball"] and ns["gaps"]["shown"].tolist() == [10]


def test_the_reliance_recipe_flags_the_stamp_class_only(recipes):
    ns, _, _ = recipes
    assert ns["stamp"]["flags"] == "relies-on-place, relies-off-object" and ns["stamp"]["reliance_ratio"] >= 3
    assert ns["moving"]["flags"] == "" and ns["moving"]["reliance_ratio"] <= 1.5
