"""Every Python block of docs/shortcuts.md runs, in order, on a run holding a shortcut made on purpose, and is right."""

from __future__ import annotations

import re

import pytest
from conftest import REPO
from docs_support import run_blocks
from inspecting_support import copy_run

DOC = REPO / "docs" / "shortcuts.md"
EXAMPLE_FOLDER = re.compile(r"^\s*OUT\s*=")  # the doc's "cams" is replaced by the test's run


@pytest.fixture(scope="module")
def recipes(stamped_run_without_overlays, tmp_path_factory):
    out, kinds = stamped_run_without_overlays
    out = copy_run(out, tmp_path_factory.mktemp("shortcut_doc") / "out")  # the recipes render overlays into it
    namespace = {"OUT": str(out)}
    count = run_blocks(DOC, EXAMPLE_FOLDER, namespace)
    return namespace, kinds, out, count


def test_every_block_ran_and_found_the_stamp(recipes):
    ns, kinds, _, count = recipes
    assert count == 4
    assert list(ns["locked"].index) == ["stamp_bird"]
    assert ns["locked"].loc["stamp_bird", "peak_x1"] <= 0.25 and ns["locked"].loc["stamp_bird", "peak_y1"] <= 0.25
    assert ns["peak"][0] < 0.25 and ns["peak"][1] < 0.25
    assert abs(ns["baseline"]) < 0.1


def test_the_cluster_recipe_separates_stamped_photos(recipes):
    ns, kinds, _, _ = recipes
    assert list(ns["clusters"].images) == [10, 5]
    assert ns["by_cluster"].loc[0] == sorted(p for p, k in kinds.items() if k == "stamped")


def test_the_overlay_recipe_renders_the_suspects_only(recipes):
    ns, kinds, out, _ = recipes
    stamped = sorted(p for p, k in kinds.items() if k == "stamped")
    assert ns["rendered"] == [f"overlays/{p}/top1_stamp_bird.jpg" for p in stamped]
    assert sorted(p.parent.name for p in (out / "overlays").rglob("*.jpg") if p.is_file()) == stamped
