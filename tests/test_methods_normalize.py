"""`cambatch.methods.normalize`: maps for display and masking: ReLU then min-max, never NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from methods_support import engine_for, tiny_model

from cambatch.methods import METHODS
from cambatch.methods.normalize import display_maps, unit_maps

ALL = tuple(METHODS)  # cam, gradcam, gradcampp, xgradcam, layercam, scorecam, eigencam


@pytest.mark.parametrize("method", ALL)
def test_all_negative_maps_give_zeros_never_nan(method):
    model = tiny_model(negative_head=True)
    engine = engine_for(model, topk=3, method=method, faithfulness=True)
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = engine(pixels)
    assert np.isfinite(out.maps.astype(np.float32)).all()
    assert all(np.isfinite(out.columns[name]).all() for name in ("masked_probability", "confidence_drop"))
    assert all(np.isfinite(out.columns[name]).all() for name in ("cam_max", "cam_mean", "cam_std"))  # always defined
    if method in ("cam", "gradcam", "xgradcam"):
        assert (out.maps <= 0).all() and (out.maps < 0).any()
    if method not in ("scorecam", "eigencam"):  # these two weigh channels positively / are class-agnostic
        assert (out.display == 0).all()
    negative = -torch.rand(2, 3, 7, 7) - 0.01
    assert torch.equal(unit_maps(negative), torch.zeros_like(negative))


def test_unit_maps_relu_then_min_max_per_map():
    maps = torch.tensor([[[-2.0, 0.0], [1.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]], [[0.5, 1.0], [1.5, 2.0]]])
    unit = unit_maps(maps)
    torch.testing.assert_close(unit[0], torch.tensor([[0.0, 0.0], [1 / 3, 1.0]]))  # negatives cut first
    assert torch.equal(unit[1], torch.zeros(2, 2))  # flat: zero, not NaN
    torch.testing.assert_close(unit[2], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))  # min-max of each map alone
    assert unit_maps(torch.zeros(1, 3, 3, dtype=torch.float16)).dtype == torch.float32


def test_display_maps_are_uint8_rounded_to_0_255():
    display = display_maps(torch.tensor([[[0.0, 1.0], [2.0, 4.0]]]))
    assert display.dtype == torch.uint8
    assert display.tolist() == [[[0, 64], [128, 255]]]  # 63.75 and 127.5 round half up


def test_leading_dimensions_are_kept():
    maps = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    unit = unit_maps(maps)
    assert unit.shape == maps.shape
    np.testing.assert_allclose(unit[1, 2].numpy(), unit_maps(maps[1, 2]).numpy())
