"""`cambatch.methods.statistics`: the report's map statistics, batched, NaN where undefined."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from cambatch.methods.normalize import display_maps
from cambatch.methods.statistics import GRID, component_labels, largest_component_box, map_statistics
from cambatch.report.schema import STAT_NAMES


def test_box_is_the_largest_component():
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 4:8, 4:8] = True  # small blob
    mask[0, 30:50, 10:40] = True  # large blob
    torch.testing.assert_close(largest_component_box(mask), torch.tensor([[10 / 64, 30 / 64, 40 / 64, 50 / 64]]))


def test_the_components_are_scipys_8_connected_ones_each_labelled_by_its_largest_index():
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(24, GRID, GRID, generator=generator) < torch.linspace(0.3, 0.7, 24)[:, None, None]
    maps = torch.randn(24, 7, 7, generator=generator).cumsum(1).cumsum(2)  # smooth, as class maps are
    grid = F.interpolate(maps[:, None], size=(GRID, GRID), mode="bilinear", align_corners=False)[:, 0]
    thresholded = grid >= 0.2 * grid.amax((1, 2), keepdim=True)
    edges = torch.stack([torch.zeros(GRID, GRID, dtype=torch.bool), torch.ones(GRID, GRID, dtype=torch.bool)])
    masks = torch.cat([noise, thresholded, edges])
    flat = np.arange(GRID * GRID).reshape(GRID, GRID)
    for mask, mine in zip(masks.numpy(), component_labels(masks).numpy(), strict=True):
        theirs, count = ndimage.label(mask, structure=np.ones((3, 3)))
        assert (mine[~mask] == 0).all()
        for component in range(1, count + 1):
            cells = theirs == component
            assert (mine[cells] == flat[cells].max() + 1).all()  # one label per component, not shared: maxima differ


def test_box_follows_a_winding_component():
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, ::2, :] = True  # rows joined alternately at the right and left ends: one snake
    mask[0, 1::4, -1] = True
    mask[0, 3::4, 0] = True
    torch.testing.assert_close(largest_component_box(mask), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_all_negative_map_gives_nulls_and_zeros_never_nan_overlays():
    maps = torch.full((1, 7, 7), -3.0)
    stats = {name: float(value[0]) for name, value in map_statistics(maps).items()}
    assert stats["cam_max"] == -3.0 and stats["active_area"] == 0.0
    for undefined in ["centroid_x", "bbox_x0", "border_energy", "entropy"]:
        assert np.isnan(stats[undefined])
    assert display_maps(maps).eq(0).all()


def test_statistics_of_a_centred_blob():
    maps = torch.zeros(1, 8, 8)
    maps[0, 3:5, 3:5] = 1.0
    stats = {name: float(value[0]) for name, value in map_statistics(maps).items()}
    assert stats["centroid_x"] == pytest.approx(0.5) and stats["centroid_y"] == pytest.approx(0.5)
    assert stats["bbox_x0"] < 0.5 < stats["bbox_x1"] and stats["border_energy"] == pytest.approx(0.0, abs=1e-6)
    assert stats["entropy"] == pytest.approx(np.log(4) / np.log(64))
    assert stats["cam_mean"] == pytest.approx(4 / 64)


def test_the_columns_are_the_reports_statistics_in_order():
    stats = map_statistics(torch.rand(3, 7, 7))
    assert tuple(stats) == STAT_NAMES
    assert all(v.shape == (3,) and v.dtype == torch.float32 for v in stats.values())


def test_a_map_hot_only_in_its_frame_has_all_its_energy_on_the_border():
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, :] = 1.0  # the top row: inside the outer 10%
    maps[1, 4:6, 4:6] = 1.0  # the middle
    stats = map_statistics(maps)
    assert stats["border_energy"][0] > 0.8 and stats["border_energy"][1] < 0.05
    assert stats["peak_y"][0] < 0.1 and stats["centroid_y"][0] < 0.15


def test_peak_and_box_follow_a_corner_spot_in_a_wide_map():
    maps = torch.zeros(1, 4, 8)  # 4 rows, 8 columns: coordinates are fractions of each side
    maps[0, 3, 7] = 2.0  # bottom-right cell
    stats = {name: float(v[0]) for name, v in map_statistics(maps).items()}
    assert stats["peak_x"] > 0.85 and stats["peak_y"] > 0.85
    assert stats["bbox_x0"] > 0.75 and stats["bbox_y0"] > 0.6 and stats["bbox_x1"] == 1.0 and stats["bbox_y1"] == 1.0
    assert stats["cam_max"] == 2.0 and stats["cam_mean"] == pytest.approx(2.0 / 32)
    assert stats["entropy"] == pytest.approx(0.0, abs=1e-6)  # all mass in one cell


def test_a_uniform_positive_map_is_spread_evenly():
    stats = {name: float(v[0]) for name, v in map_statistics(torch.ones(1, 7, 7)).items()}
    assert stats["entropy"] == pytest.approx(1.0) and stats["cam_std"] == 0.0
    assert stats["centroid_x"] == pytest.approx(0.5) and stats["centroid_y"] == pytest.approx(0.5)
    assert stats["border_energy"] == pytest.approx(0.36, abs=0.03)  # the frame's share of the area
    assert (stats["bbox_x0"], stats["bbox_y0"], stats["bbox_x1"], stats["bbox_y1"]) == (0.0, 0.0, 1.0, 1.0)


def test_each_map_of_a_batch_is_measured_alone():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 7, 7, generator=g)
    together = map_statistics(maps)
    for i in range(5):
        alone = map_statistics(maps[i : i + 1])
        for name in STAT_NAMES:
            np.testing.assert_allclose(together[name][i], alone[name][0], rtol=1e-5, atol=1e-6, err_msg=name)
