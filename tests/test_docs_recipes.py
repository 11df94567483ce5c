"""Every Python block of docs/inspecting.md runs, in order, on a real run, and gives the right answer."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import REPO
from docs_support import run_blocks
from inspecting_support import add_labels, copy_run, swap_top2
from PIL import Image

DOC = REPO / "docs" / "inspecting.md"
# The doc's example folders ("cams", ...) are replaced by the test's runs.
EXAMPLE_FOLDERS = re.compile(r"^\s*(OUT(_A|_B)?(\s*,\s*OUT(_A|_B)?)*|ANNOTATIONS)\s*=")


GT_BOXES = {
    "astronaut.png": (100, 20, 400, 511),
    "camera.png": (100, 50, 400, 450),
    "chelsea.png": (60, 10, 420, 299),
    "coffee.png": (100, 20, 500, 380),
    "rocket.jpg": (0, 0, 60, 40),
}


@pytest.fixture(scope="module")
def recipes(sample_run, tmp_path_factory):
    """Run all blocks; OUT has labels (rocket.jpg labelled wrongly), OUT_B changed camera.png's top-1."""
    result, raw = sample_run
    base = tmp_path_factory.mktemp("recipes")
    labelled = copy_run(result.out, base / "labelled")
    top1 = raw[raw["rank"] == 1].set_index("path").class_name
    add_labels(labelled, {p: ("space shuttle" if p == "rocket.jpg" else str(c)) for p, c in top1.items()})
    changed = copy_run(result.out, base / "changed")
    swap_top2(changed, "camera.png")
    boxes = base / "boxes.csv"  # the photos' objects by eye, rocket.jpg's box moved to a corner it misses
    boxes.write_text("path,x0,y0,x1,y1\n" + "".join(f"{p},{','.join(map(str, b))}\n" for p, b in GT_BOXES.items()))
    namespace = {"OUT": str(labelled), "OUT_A": str(result.out), "OUT_B": str(changed), "ANNOTATIONS": str(boxes)}
    count = run_blocks(DOC, EXAMPLE_FOLDERS, namespace)
    return namespace, raw, count


def test_every_block_ran(recipes):
    namespace, _, count = recipes
    assert count >= 10
    assert namespace["df"].attrs["model"] == "efficientnet_lite0" and len(namespace["failed"]) == 0


def test_border_and_tiny_box_recipes(recipes):
    ns, raw, _ = recipes
    top1 = raw[raw["rank"] == 1]
    assert ns["border_by_class"].index[0] == top1.loc[top1.border_energy.idxmax(), "class_name"]
    area = (top1.bbox_x1 - top1.bbox_x0) * (top1.bbox_y1 - top1.bbox_y0)
    assert ns["tiny_boxes"]["path"].iloc[0] == top1.loc[area.idxmin(), "path"]
    assert ns["overlay"].size == Image.open(ns["overlay"].filename).size and ns["overlay"].size[0] > 0


def test_label_recipes(recipes):
    ns, _, _ = recipes
    per_label = ns["per_label"]
    assert per_label.loc["space shuttle", "accuracy"] == 0.0 and per_label["images"].sum() == 7
    assert (per_label.drop(index="space shuttle")["accuracy"] == 1.0).all()
    assert set(ns["suspicious"]["path"]) <= {"rocket.jpg"}


def test_comparison_recipes(recipes):
    ns, _, _ = recipes
    assert ns["disagree"]["path"].tolist() == ["camera.png"]
    assert ns["changed"]["path"].tolist() == ["camera.png"]
    assert ns["comparison"].classes.index[0] == "tripod"


def test_summary_and_raw_map_recipes(recipes):
    ns, raw, _ = recipes
    assert ns["summary"].by == "label" and ns["by_class"].by == "class"
    assert set(ns["summary"].flagged.index) <= set(ns["summary"].table.index)
    row = ns["row"]
    expected = raw[(raw.path == row["path"]) & (raw.class_index == row["class_index"])].iloc[0]
    assert ns["raw_map"].mean() == pytest.approx(expected.cam_mean, rel=2e-3, abs=2e-2)
    assert ns["all_maps"].shape == (7, 7, 7) and ns["mean_top1_map"].shape == (7, 7)
    first = ns["with_maps"].iloc[0]
    np.testing.assert_array_equal(ns["all_maps"][0], first["map"].astype(np.float32).reshape(7, 7))


def test_classes_missing_the_object_recipe(recipes):
    ns, raw, _ = recipes
    top1 = raw[raw["rank"] == 1].set_index("path").class_name
    assert ns["missing"].index[0] == top1["rocket.jpg"]  # its box is where the rocket is not
    assert ns["missing"].iloc[0] < 0.1 < ns["missing"].dropna().iloc[-1]
    assert ns["result"].metrics["images"] == len(GT_BOXES)
