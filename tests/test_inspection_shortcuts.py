"""Class mean maps, position-locked classes and map clusters: a shortcut made on purpose, and the math on arrays."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shortcut_support import STAMP
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.evaluation.maps import resize_matrix as resample_matrix
from cambatch.inspection.options import Thresholds
from cambatch.inspection.shortcuts import (
    EXAMPLES,
    GRID,
    GroupMaps,
    class_patterns,
    cluster_maps,
    find_shortcuts,
    grid_maps,
    shortcuts_run,
)

runner = CliRunner()
STAMP_BOX = (STAMP[0] / 160, STAMP[1] / 120, (STAMP[2] + 1) / 160, (STAMP[3] + 1) / 120)  # fractions


@pytest.fixture(scope="module")
def stamped(stamped_run):
    """A run of the hand-set stamp net over 10 stamped photos, 5 with a blue disc and 8 with a green disc."""
    return stamped_run


def test_the_stamp_run_predicts_the_shortcut_class_for_every_stamped_photo(stamped):
    out, kinds = stamped
    top = cambatch.load_report(out, rank=1)
    predicted = dict(zip(top["path"], top["class_name"].astype(str), strict=True))
    assert {p for p, c in predicted.items() if c == "stamp_bird"} == {p for p, k in kinds.items() if k != "green"}
    # The stamped photos hold a green disc too: the model ignores it for the stamp (the shortcut).
    assert all(predicted[p] == "stamp_bird" for p, k in kinds.items() if k == "stamped")


def test_the_stamp_class_is_flagged_fixed_location_and_the_object_class_is_not(stamped):
    out, _ = stamped
    table = cambatch.summarize_run(out).table
    assert table.loc["stamp_bird", "fixed_location_flag"]
    assert "fixed-location" in table.loc["stamp_bird", "flags"]
    assert table.loc["stamp_bird", "position_lock"] > 0.3
    # The green discs sit anywhere: their class's maps follow them, and it is not flagged.
    assert not table.loc["green_ball", "fixed_location_flag"]
    assert abs(table.loc["green_ball", "position_lock"]) < 0.1


def test_the_stamp_class_mean_map_peaks_on_the_stamp(stamped):
    out, _ = stamped
    found = shortcuts_run(out)
    row = found.classes.loc["stamp_bird"]
    x0, y0, x1, y1 = STAMP_BOX
    assert x0 <= row.peak_x <= x1 and y0 <= row.peak_y <= y1
    mean = found.mean_maps["stamp_bird"]
    assert mean.shape == (GRID, GRID)
    assert np.unravel_index(mean.argmax(), mean.shape) == (int(row.peak_y * GRID), int(row.peak_x * GRID))
    # The green class's mean map is spread over where the discs were, never peaked on the stamp corner.
    green = found.classes.loc["green_ball"]
    assert green.peak_x > x1 or green.peak_y > y1


def test_clusters_separate_stamped_from_unstamped_images(stamped):
    out, kinds = stamped
    found = shortcuts_run(out)
    images = found.images[found.images.group == "stamp_bird"].assign(kind=lambda f: f.path.map(kinds))
    by_kind = images.groupby("kind").map_cluster.unique()
    assert len(by_kind["stamped"]) == 1  # every stamped photo in one cluster ...
    assert by_kind["stamped"][0] not in set(by_kind["blue"])  # ... that no unstamped photo shares
    assert found.classes.loc["stamp_bird", "clusters"] >= 2
    clusters = found.clusters[found.clusters.group == "stamp_bird"].set_index("cluster")
    stamp_cluster = int(by_kind["stamped"][0])
    assert clusters.loc[stamp_cluster, "images"] == 10
    assert all(kinds[p] == "stamped" for p in clusters.loc[stamp_cluster, "examples"])
    assert clusters["images"].sum() == len(images)
    stamp_map = found.cluster_maps[("stamp_bird", stamp_cluster)]
    assert np.unravel_index(stamp_map.argmax(), stamp_map.shape)[1] < STAMP_BOX[2] * GRID


def test_summarize_json_carries_the_score_and_the_peak_region(stamped):
    out, _ = stamped
    result = runner.invoke(app, ["summarize", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    rows = {r["class"]: r for r in document["rows"]}
    assert rows["stamp_bird"]["fixed_location_flag"] is True
    assert {"position_lock", "peak_x", "peak_y", "peak_x0", "peak_y0", "peak_x1", "peak_y1"} <= set(rows["stamp_bird"])
    assert rows["stamp_bird"]["peak_x1"] <= 0.25 and rows["stamp_bird"]["peak_y1"] <= 0.25
    assert document["meta"]["lock_score"] == Thresholds.lock_score
    strict = runner.invoke(app, ["summarize", str(out), "--lock-score", "0.9", "--format", "json"])
    assert not any(r["fixed_location_flag"] for r in json.loads(strict.stdout)["rows"])  # the threshold is honoured
    table = runner.invoke(app, ["summarize", str(out)])
    assert "position lock" in table.stdout and "fixed-location" in table.stdout.split("\n", 4)[-1]


def test_summarize_without_maps_has_no_lock_columns(stamped):
    out, _ = stamped
    summary = cambatch.summarize_report(cambatch.load_report(out))  # `map` not read
    assert "position_lock" not in summary.table.columns
    assert not summary.table["fixed_location_flag"].any()


# ---- the math on small arrays ----


def test_resample_matrix_is_pils_bilinear_upsampling():
    rng = np.random.default_rng(0)
    small = rng.random((7, 5)).astype(np.float32)
    expected = np.asarray(Image.fromarray(small, mode="F").resize((GRID, GRID), Image.BILINEAR))
    got = resample_matrix(7, GRID) @ small @ resample_matrix(5, GRID).T
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(resample_matrix(7, GRID).sum(axis=1), 1, atol=1e-6)


def rows_of(maps: list[np.ndarray], groups: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"img_{i}.png" for i in range(len(maps))],
            "class_name": groups,
            "map": [m.astype(np.float16).reshape(-1) for m in maps],
            "map_height": [m.shape[0] for m in maps],
            "map_width": [m.shape[1] for m in maps],
        }
    )


def test_position_lock_equals_the_brute_force_mean_of_pairwise_correlations():
    rng = np.random.default_rng(1)
    maps = [rng.random((7, 7)) for _ in range(9)] + [rng.random((14, 14)) for _ in range(5)]  # two map sizes
    groups = ["a"] * 6 + ["b"] * 5 + ["c"] * 3
    rows = rows_of(maps, groups)
    table, baseline, _ = class_patterns(rows, "class_name")
    flat = grid_maps(rows).reshape(len(rows), -1)  # the sums are kept per map size: checked on the grids here
    corr = np.corrcoef(flat)
    same = {
        g: [corr[i, j] for i, j in combinations(range(len(groups)), 2) if groups[i] == groups[j] == g] for g in "abc"
    }
    cross = [corr[i, j] for i, j in combinations(range(len(groups)), 2) if groups[i] != groups[j]]
    assert baseline == pytest.approx(np.mean(cross), abs=1e-6)
    for g in "abc":
        assert table.loc[g, "coherence"] == pytest.approx(np.mean(same[g]), abs=1e-6)
        assert table.loc[g, "position_lock"] == pytest.approx(np.mean(same[g]) - np.mean(cross), abs=1e-6)
    # Streamed in batches (groups met in another order, a batch with one size only), the sums are the same.
    streamed = GroupMaps("class_name")
    for batch in (rows.iloc[9:12], rows.iloc[:9], rows.iloc[12:]):
        streamed.add(batch)
    again, again_baseline, means = streamed.patterns()
    pd.testing.assert_frame_equal(again, table, rtol=1e-9)
    assert again_baseline == pytest.approx(baseline, rel=1e-9)
    np.testing.assert_allclose(means[0], flat[:6].mean(axis=0).reshape(GRID, GRID), atol=1e-5)


def test_grid_maps_normalize_like_the_overlays_and_keep_the_peak_in_image_coordinates():
    square, wide = np.zeros((7, 7)), np.zeros((14, 14))
    square[1, 5] = 3.0  # top right, at cell centre (5.5/7, 1.5/7)
    wide[2:4, 10:12] = -1.0  # negative: ReLU'd away, the map is flat -> all zero
    grids = grid_maps(rows_of([square, wide], ["a", "b"]))
    assert grids.shape == (2, GRID, GRID) and grids[0].max() > 0.8 and grids[0].min() == 0
    y, x = np.unravel_index(grids[0].argmax(), (GRID, GRID))
    assert abs((x + 0.5) / GRID - 5.5 / 7) < 1 / GRID and abs((y + 0.5) / GRID - 1.5 / 7) < 1 / GRID
    assert not grids[1].any()


def blob(y: float, x: float, size: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 0.005)


def test_eigengap_finds_two_groups_of_places_and_one_for_alike_maps():
    rng = np.random.default_rng(2)
    left = [blob(0.5 + rng.normal(0, 0.02), 0.15 + rng.normal(0, 0.02)) for _ in range(12)]
    right = [blob(0.5 + rng.normal(0, 0.02), 0.85 + rng.normal(0, 0.02)) for _ in range(7)]
    grids = grid_maps(rows_of(left + right, ["a"] * 19))
    labels = cluster_maps(grids)
    assert set(labels[:12]) == {0} and set(labels[12:]) == {1}  # cluster 0 is the larger
    assert set(cluster_maps(grid_maps(rows_of(left[:1] * 8, ["a"] * 8)))) == {0}
    assert set(cluster_maps(grids[:3])) == {0}  # too few images: one cluster


def test_large_groups_are_clustered_on_a_sample_and_every_image_assigned():
    rng = np.random.default_rng(3)
    places = [blob(0.2, 0.2), blob(0.8, 0.8), blob(0.2, 0.8)]
    maps = [places[i % 3] + rng.random((16, 16)) * 0.05 for i in range(90)]
    grids = grid_maps(rows_of(maps, ["a"] * 90))
    labels = cluster_maps(grids, sample=45)  # 15 of each place in the affinity matrix, 45 assigned
    for i in range(3):
        assert len(set(labels[i::3])) == 1
    assert len(set(labels)) == 3


def test_find_shortcuts_groups_by_label_when_the_run_has_labels():
    maps = [blob(0.2, 0.2)] * 6 + [blob(0.5, 0.5 + 0.05 * i) for i in range(6)]
    rows = rows_of(maps, ["x"] * 12).assign(
        rank=1, status="ok", run_id="r", label=["stamped"] * 6 + ["plain"] * 6, correct=False
    )
    found = find_shortcuts(rows)
    assert found.by == "label" and set(found.classes.index) == {"stamped", "plain"}
    assert found.classes.loc["stamped", "fixed_location"]
    assert found.images["map_cluster"].notna().all()


def test_two_inputs_holding_one_path_are_two_images_and_examples_are_marked():
    """Nine maps at one place, nine at another, the same nine paths under two INPUTs: eighteen images, each
    INPUT's in its own cluster, and the images `clusters.examples` names are those marked `example`."""
    rng = np.random.default_rng(2)
    maps = [blob(0.5 + rng.normal(0, 0.02), x + rng.normal(0, 0.02)) for x in [0.15] * 9 + [0.85] * 9]
    rows = rows_of(maps, ["x"] * 18).assign(
        input_root=["/in/one"] * 9 + ["/in/two"] * 9, path=[f"img_{i % 9}.png" for i in range(18)], rank=1, status="ok"
    )
    found = find_shortcuts(rows.assign(run_id="r"))
    images = found.images
    clusters = images.groupby("input_root")["map_cluster"].unique().map(list).to_dict()
    assert len(images) == 18 and len(clusters["/in/one"]) == len(clusters["/in/two"]) == 1
    assert clusters["/in/one"] != clusters["/in/two"]
    for cluster in found.clusters.itertuples():
        marked = images[(images.map_cluster == cluster.cluster) & images.example]
        assert marked["path"].tolist() == cluster.examples and len(marked) == EXAMPLES
