"""`cambatch.methods.eigencam`: the first principal component of the activations, with a fixed sign."""

from __future__ import annotations

import pytest
import torch
from methods_support import bind, tiny_model


def svd_projection(activations: torch.Tensor) -> torch.Tensor:
    """The positions' centred channel vectors projected on their first right singular vector, [B, h, w];
    sign chosen so that the value of largest magnitude is positive."""
    b, c, h, w = activations.shape
    points = activations.flatten(2).transpose(1, 2).double()
    points = points - points.mean(1, keepdim=True)
    vh = torch.linalg.svd(points, full_matrices=False).Vh
    projection = (points @ vh[:, 0, :, None])[..., 0]
    largest = projection.gather(1, projection.abs().argmax(1, keepdim=True))
    return (projection * largest.sign()).float().reshape(b, h, w)


@pytest.mark.parametrize("size", [8, 32])  # 4x4 = 16 positions <= 16 channels, and 16x16 = 256 > 16
def test_eigencam_is_the_sign_fixed_first_principal_component(size):
    model = tiny_model(seed=13)
    images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(6))
    maps = bind("eigencam", model)(images, 3).maps
    with torch.no_grad():
        expected = svd_projection(model.network.body(images))
    torch.testing.assert_close(maps[:, 0], expected, atol=1e-4, rtol=1e-3)
    flat = maps.flatten(2)
    assert (flat.amax(2) >= flat.amin(2).abs()).all()  # the largest value is positive


def test_eigencam_is_class_agnostic_but_reports_each_class():
    model = tiny_model(seed=13)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cams = bind("eigencam", model)(images, 3)
    assert torch.equal(cams.maps[:, 0], cams.maps[:, 1]) and torch.equal(cams.maps[:, 0], cams.maps[:, 2])
    assert cams.rank.tolist() == [[1, 2, 3]] * 2 and cams.class_index.shape == (2, 3)
    assert not type(bind("eigencam", model)).class_specific
