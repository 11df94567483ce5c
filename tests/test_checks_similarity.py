"""Map similarity of two runs: each image's top-1 maps compared where both runs predicted the same class, images
matched by their INPUT and path (never by file name alone), flat maps left out."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from cambatch.checks.similarity import map_similarity
from cambatch.inspection.shortcuts import GRID
from cambatch.report import schema

RNG = np.random.default_rng(0)


def write_run(out, rows: list[tuple[str, str, str, np.ndarray]], run_id: str):
    """A report of top-1 rows (input_root, path, class_name, map); maps at GRID x GRID, so the common grid is
    the map itself and Pearson r can be checked on the raw maps."""
    maps = np.stack([m for *_, m in rows]).astype(np.float32)
    columns = {
        "input_root": [r[0] for r in rows],
        "path": [r[1] for r in rows],
        "rank": [1] * len(rows),
        "class_index": [0] * len(rows),
        "class_name": [r[2] for r in rows],
        "status": ["ok"] * len(rows),
        "run_id": [run_id] * len(rows),
        "map": schema.map_array(maps),
        "map_height": [GRID] * len(rows),
        "map_width": [GRID] * len(rows),
    }
    table = schema.table(columns, len(rows))
    table = table.replace_schema_metadata({schema.METADATA_KEY: json.dumps({"run_id": run_id}).encode()})
    (out / "report").mkdir(parents=True)
    pq.write_table(table, out / "report" / f"part-{run_id}-00000.parquet")
    return out


def blob(x: int) -> np.ndarray:
    found = RNG.uniform(0, 0.2, (GRID, GRID))
    found[10:20, x : x + 8] += 1
    return found.astype(np.float16).astype(np.float32)  # as the report stores it


def test_images_are_matched_by_input_and_path_never_by_name_alone(tmp_path):
    left, right = blob(2), blob(22)
    rows = [("/data/a", "x.png", "cat", left), ("/data/b", "x.png", "cat", right)]
    a = write_run(tmp_path / "a", rows, "20250101T000000Z-a")
    b = write_run(tmp_path / "b", rows, "20250102T000000Z-b")
    found = map_similarity(b, a)
    assert len(found) == 2  # two images, not the four pairs a match by name would make
    assert found["r"].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_r_is_pearson_of_the_two_maps_where_the_class_is_the_same(tmp_path):
    maps_a = [blob(x) for x in (2, 8, 14, 20)]
    maps_b = [blob(x) for x in (4, 8, 20, 20)]
    flat = np.zeros((GRID, GRID), np.float32)
    rows_a = [("/data", f"{i}.png", "cat", m) for i, m in enumerate(maps_a)]
    rows_b = [("/data", f"{i}.png", "cat", m) for i, m in enumerate(maps_b)]
    rows_a += [("/data", "other.png", "dog", blob(3)), ("/data", "flat.png", "cat", flat)]
    rows_b += [("/data", "other.png", "cat", blob(3)), ("/data", "flat.png", "cat", blob(3))]
    rows_b.append(("/data", "only_b.png", "cat", blob(5)))
    a = write_run(tmp_path / "a", rows_a, "20250101T000000Z-a")
    b = write_run(tmp_path / "b", rows_b, "20250102T000000Z-b")
    found = map_similarity(b, a)
    by_hand = [np.corrcoef(ma.ravel(), mb.ravel())[0, 1] for ma, mb in zip(maps_a, maps_b, strict=True)]
    assert found["r"].tolist() == pytest.approx(by_hand, abs=1e-5)  # other (class changed), flat, only_b left out
    assert found["class_name"].tolist() == ["cat"] * 4
    assert 0 < min(by_hand) < max(by_hand) < 1
