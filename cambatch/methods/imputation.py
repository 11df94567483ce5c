"""Noisy linear imputation (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022), solved for a whole batch at once on the device.

Every removed pixel becomes the weighted mean of its 8 neighbours, 1/6 for the 4 that share an edge
and 1/12 for the 4 corners (neighbours outside the image drop out, the rest keep their weights and
the mean is over their sum), while the kept pixels stay as they are. For the removed pixels U of one
image and channel that is the sparse linear system

    W_i x_i - sum_{j in U} w_ij x_j = sum_{j kept} w_ij v_j        (i in U, j over i's neighbours)

with W_i the sum of i's in-image neighbour weights, then N(0, noise^2) added to each imputed value.
pytorch-grad-cam (`metrics/road.py`, `NoisyLinearImputer`) builds it with scipy and calls `spsolve`
once per image on the CPU. The matrix is symmetric and, when any pixel is kept, positive definite
(diagonally dominant, every removed region bordered by a kept pixel), so here every system of a
batch, all channels alike, is solved together by conjugate gradients on the device, preconditioned
by one geometric multigrid V-cycle per iteration (one damped Jacobi sweep before and after, the same
stencil on grids halved down to 8 pixels or fewer, a coarse pixel unknown where all its 4 children
are, bilinear transfers between grids): 5 to 8 iterations reach `TOLERANCE`, where plain conjugate
gradients need hundreds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Stop when |residual| <= TOLERANCE x |right-hand side| for every system of a chunk. Against a solve to 1e-6, the
# default model's ROAD scores of 3 sample images at 224 px moved by 2.1e-4 at most (3e-3: 8e-4; 1e-2: 5.8e-3).
TOLERANCE = 1e-3
MAX_ITERATIONS = 100  # a bound only: those systems converged in 8 iterations or fewer
OMEGA = 0.9  # Jacobi damping: D^-1 A has its eigenvalues in (0, 2), so |1 - 0.9 x| < 1 on all of them
COARSEST = 8  # the V-cycle halves the grid while its shorter side is above this
COARSE_SWEEPS = 4  # Jacobi sweeps on the coarsest grid

# The solver works in place on buffers allocated once per solve: on the CPU, a fresh tensor for each of
# the hundreds of element-wise steps cost 20x the arithmetic (measured, 2-core EPYC: page faults of new memory).


def _box_sum(x: Tensor, out: Tensor, scratch: Tensor) -> Tensor:
    """The 3x3 sums [1 2 1]^T [1 2 1] of x [..., H, W], zero outside the image, into `out`: two 1-D passes in
    place, far cheaper than a one-channel convolution on the CPU.
    """
    rows = torch.mul(x, 2, out=scratch)
    rows[..., 1:].add_(x[..., :-1])
    rows[..., :-1].add_(x[..., 1:])
    torch.mul(rows, 2, out=out)
    out[..., 1:, :].add_(rows[..., :-1, :])
    out[..., :-1, :].add_(rows[..., 1:, :])
    return out


def neighbour_sum(x: Tensor) -> Tensor:
    """sum_j w_j x_j over each pixel's 8 neighbours, [..., H, W], zero outside the image: the box sum less its
    centre's 4, over 12.
    """
    return _box_sum(x, torch.empty_like(x), torch.empty_like(x)).sub_(x, alpha=4).div_(12)


class _Grid:
    """One level of the V-cycle: which pixels are unknown, the system's diagonal, and the level's buffers."""

    def __init__(self, unknown: Tensor, channels: int):
        """`unknown`: float [N, 1, h, w], 1 where the pixel is solved for; systems [N, channels, h, w]."""
        self.unknown = unknown
        diagonal = neighbour_sum(torch.ones_like(unknown[:1]))  # W_i: the in-image neighbour weight
        self.inverse = OMEGA * unknown / diagonal
        # A x = u (W x - (box - 4 x) / 12) = u (W + 1/3) x - u box / 12: the factors of the two terms
        self.centre, self.box = unknown * (diagonal + 1 / 3), unknown / -12
        shape = (unknown.shape[0], channels, *unknown.shape[-2:])
        self.x, self.rhs, self.residual, self.scratch = (unknown.new_empty(shape) for _ in range(4))
        self.half = unknown.new_empty((*shape[:-1], (shape[-1] + 1) // 2))  # between this grid and the next

    def apply(self, x: Tensor, out: Tensor) -> Tensor:
        """A x on the unknown pixels (x is zero on the known ones), into `out`."""
        return _box_sum(x, out, self.scratch).mul_(self.box).addcmul_(self.centre, x)

    def smooth(self, r: Tensor) -> None:
        """One damped Jacobi sweep of A x = r on `x`."""
        torch.sub(r, self.apply(self.x, self.residual), out=self.residual)
        self.x.addcmul_(self.inverse, self.residual)

    def coarser(self) -> _Grid:
        """The grid halved (rounded up): a coarse pixel is unknown where all its children are."""
        return _Grid(-F.max_pool2d(-self.unknown, 2, ceil_mode=True), self.x.shape[1])


def _grids(unknown: Tensor, channels: int) -> list[_Grid]:
    grids = [_Grid(unknown, channels)]
    while min(grids[-1].unknown.shape[-2:]) > COARSEST:
        grids.append(grids[-1].coarser())
    return grids


def _every_other(x: Tensor, dim: int, start: int) -> Tensor:
    """The view of x at start, start + 2, ... along `dim`."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, None, 2)
    return x[tuple(index)]


def _double(coarse: Tensor, out: Tensor, dim: int) -> None:
    """`out` := `coarse` doubled along `dim` bilinearly (as `F.interpolate(..., align_corners=False)` does for
    an even size: each fine pixel 3/4 of its coarse pixel and 1/4 of the nearer neighbour, the edge one
    standing in beyond the edge); the fine size is 2 m or 2 m - 1 for a coarse size m.
    """
    m = coarse.shape[dim]
    even, odd = _every_other(out, dim, 0), _every_other(out, dim, 1)
    k, j = odd.shape[dim], min(odd.shape[dim], m - 1)
    torch.mul(coarse, 0.75, out=even)
    even.narrow(dim, 1, m - 1).add_(coarse.narrow(dim, 0, m - 1), alpha=0.25)
    even.narrow(dim, 0, 1).add_(coarse.narrow(dim, 0, 1), alpha=0.25)
    torch.mul(coarse.narrow(dim, 0, k), 0.75, out=odd)
    odd.narrow(dim, 0, j).add_(coarse.narrow(dim, 1, j), alpha=0.25)
    if k == m:
        odd.narrow(dim, m - 1, 1).add_(coarse.narrow(dim, m - 1, 1), alpha=0.25)


def _halve(fine: Tensor, out: Tensor, dim: int) -> None:
    """`out` := the transpose of `_double` applied to `fine` along `dim`."""
    m = out.shape[dim]
    even, odd = _every_other(fine, dim, 0), _every_other(fine, dim, 1)
    k, j = odd.shape[dim], min(odd.shape[dim], m - 1)
    torch.mul(even, 0.75, out=out)
    out.narrow(dim, 0, k).add_(odd, alpha=0.75)
    out.narrow(dim, 0, m - 1).add_(even.narrow(dim, 1, m - 1), alpha=0.25)
    out.narrow(dim, 0, 1).add_(even.narrow(dim, 0, 1), alpha=0.25)
    out.narrow(dim, 1, j).add_(odd.narrow(dim, 0, j), alpha=0.25)
    if k == m:
        out.narrow(dim, m - 1, 1).add_(odd.narrow(dim, m - 1, 1), alpha=0.25)


def _restrict(grid: _Grid, fine: Tensor, coarse: Tensor) -> None:
    """`coarse` := the transpose of `_prolong` applied to `fine` (so the V-cycle stays symmetric)."""
    _halve(fine, grid.half, -1)
    _halve(grid.half, coarse, -2)


def _prolong(grid: _Grid, coarse: Tensor) -> None:
    """`grid.x` += `coarse` doubled bilinearly, on the unknown pixels."""
    _double(coarse, grid.half, -2)
    _double(grid.half, grid.residual, -1)
    grid.x.addcmul_(grid.unknown, grid.residual)


def _v_cycle(grids: list[_Grid], r: Tensor) -> Tensor:
    """An approximate A^-1 r, into the top grid's `x`: a Jacobi sweep, the residual's correction from the
    coarser grids, one more sweep (Jacobi sweeps alone on the coarsest).
    """
    grid = grids[0]
    torch.mul(grid.inverse, r, out=grid.x)
    if len(grids) == 1:
        for _ in range(COARSE_SWEEPS - 1):
            grid.smooth(r)
        return grid.x
    coarse = grids[1]
    torch.sub(r, grid.apply(grid.x, grid.residual), out=grid.residual)
    _restrict(grid, grid.residual, coarse.rhs)
    _prolong(grid, _v_cycle(grids[1:], coarse.rhs.mul_(coarse.unknown)))
    grid.smooth(r)
    return grid.x


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """[N, C, 1, 1]: the dot product of each system's two planes (`vecdot`: 8x faster than einsum's batched
    matrix product on the CPU).
    """
    return torch.linalg.vecdot(a.flatten(-2), b.flatten(-2))[..., None, None]


def _ratio(a: Tensor, b: Tensor) -> Tensor:
    """The ratio a / b, 0 where b is 0 (a system already solved, or with nothing to solve)."""
    return torch.where(b > 0, a / b.clamp(min=torch.finfo(b.dtype).tiny), torch.zeros_like(a))


def _conjugate_gradients(grids: list[_Grid], b: Tensor) -> Tensor:
    """The x with A x = b for every system of b [N, C, H, W] at once, to `TOLERANCE`."""
    x, r, product = torch.zeros_like(b), b.clone(), torch.empty_like(b)
    p = _v_cycle(grids, r).clone()
    rz = _dot(r, p)
    limit = TOLERANCE**2 * _dot(b, b)
    for _ in range(MAX_ITERATIONS):
        if bool((_dot(r, r) <= limit).all()):
            break
        grids[0].apply(p, product)
        alpha = _ratio(rz, _dot(p, product))
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, product, value=-1)
        z = _v_cycle(grids, r)
        rz, previous = _dot(r, z), rz
        torch.addcmul(z, _ratio(rz, previous), p, out=p)
    return x


def linear_imputation(images: Tensor, known: Tensor, *, noise: float, generator: torch.Generator | None) -> Tensor:
    """`images` [N, C, H, W] with the pixels where `known` (bool [N, 1, H, W]) is False imputed, plus
    `noise` x N(0, 1) drawn from `generator` on each imputed value.

    A system with no known pixel has no unique solution: its pixels come back as 0.
    """
    unknown = (~known).to(images.dtype)
    grids = _grids(unknown, images.shape[1])
    solved = _conjugate_gradients(grids, neighbour_sum(images * known).mul_(unknown))
    if noise:
        solved.add_(torch.randn(images.shape, generator=generator, device=images.device), alpha=noise)
    return torch.where(known, images, solved)
