"""`cambatch.methods.imputation`: ROAD's noisy linear imputation, against pytorch-grad-cam's sparse solve."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cambatch.methods.imputation import linear_imputation, neighbour_sum

road = pytest.importorskip("pytorch_grad_cam.metrics.road")

# Each imputed value within this of the exact solution (scipy's spsolve), for images of unit variance: the
# solver stops at a residual 1e-3 of the right-hand side's (`TOLERANCE`); the largest difference seen was 6e-3.
VALUE_BOUND = 1e-2


def smooth_map(size: int, seed: int) -> torch.Tensor:
    """A map like an upsampled CAM: a random 7 x 7 grid, bilinear to size x size."""
    grid = torch.randn(1, 1, 7, 7, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def kept(values: torch.Tensor, percentile: float) -> torch.Tensor:
    return values < torch.quantile(values.flatten(), percentile / 100)


@pytest.mark.parametrize("size", [32, 63, 224])
def test_imputation_equals_the_sparse_solve(size):
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    known = torch.stack([kept(smooth_map(size, seed), p) for seed, p in enumerate((10, 50, 90))])[:, None]
    ours = linear_imputation(images, known, noise=0.0, generator=None)
    imputer = road.NoisyLinearImputer(noise=0.0)
    for image, mask, value in zip(images, known, ours, strict=True):
        exact = imputer(image, mask[0].float())
        assert (value - exact).abs().max() <= VALUE_BOUND
        assert torch.equal(value[:, mask[0]], image[:, mask[0]])  # kept pixels untouched


def test_imputed_pixels_are_the_weighted_mean_of_their_neighbours():
    images = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    known = torch.stack([kept(smooth_map(40, 3), 40), kept(smooth_map(40, 4), 70)])[:, None]
    filled = linear_imputation(images, known, noise=0.0, generator=None)
    weights = neighbour_sum(torch.ones(1, 1, 40, 40))
    mean = neighbour_sum(filled) / weights
    assert ((filled - mean).abs() * ~known).max() < 1e-2


def test_neighbour_sum_is_the_roads_3x3_kernel():
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(2))
    kernel = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
    expected = F.conv2d(x.reshape(6, 1, 9, 11), kernel[None, None], padding=1).view(2, 3, 9, 11)
    torch.testing.assert_close(neighbour_sum(x), expected)


def test_noise_lands_on_the_imputed_pixels_only():
    images = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    known = kept(smooth_map(48, 6), 50).expand(4, 1, 48, 48)
    quiet = linear_imputation(images, known, noise=0.0, generator=None)
    noisy = linear_imputation(images, known, noise=0.01, generator=torch.Generator().manual_seed(0))
    again = linear_imputation(images, known, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)  # seeded: the same draw
    difference = (noisy - quiet)[~known.expand_as(images)]
    assert torch.equal((noisy - quiet)[known.expand_as(images)], torch.zeros(int(known.sum()) * 3))
    assert difference.std().item() == pytest.approx(0.01, rel=0.05) and abs(difference.mean().item()) < 1e-3


def test_nothing_to_impute_and_nothing_known():
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    everything = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    assert torch.equal(linear_imputation(images, everything, noise=0.0, generator=None), images)
    nothing = linear_imputation(images, ~everything, noise=0.0, generator=None)
    assert torch.equal(nothing, torch.zeros_like(images))  # no unique solution: zeros, never NaN


@pytest.mark.parametrize("size", [2, 7, 15, 224])
def test_the_grid_transfers_are_bilinear_and_each_others_transpose(size):
    from cambatch.methods.imputation import _double, _halve

    g = torch.Generator().manual_seed(size)
    coarse, fine = torch.randn(2, 3, (size + 1) // 2, 4, generator=g), torch.randn(2, 3, size, 4, generator=g)
    doubled, halved = torch.empty_like(fine), torch.empty_like(coarse)
    _double(coarse, doubled, -2)
    _halve(fine, halved, -2)
    assert (doubled * fine).sum() == pytest.approx(float((coarse * halved).sum()), rel=1e-5)  # <P e, r> = <e, P^T r>
    if size % 2 == 0:
        expected = F.interpolate(coarse, size=(size, 4), mode="bilinear", align_corners=False)
        torch.testing.assert_close(doubled, expected)
