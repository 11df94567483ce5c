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
by one geometric multigrid V-cycle per iteration (damped Jacobi smoothing, the same stencil on grids
halved down to 8 pixels or fewer, a coarse pixel removed where all its 4 children are): about 10 iterations
reach a residual 1e-4 of the right-hand side's, where plain conjugate gradients need hundreds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TOLERANCE = 1e-4  # stop when |residual| <= this x |right-hand side| for every system (tests/test_methods_imputation.py)
MAX_ITERATIONS = 100  # a bound only: the systems of real maps converge in 5 to 15
OMEGA = 0.8  # Jacobi damping: D^-1 A has its eigenvalues in [0, 2), so 0.8 smooths every one of these systems
COARSEST = 8  # the V-cycle halves the grid while its shorter side is above this
COARSE_SWEEPS = 10  # Jacobi sweeps on the coarsest grid

# The solver works in place on buffers allocated once per solve: on the CPU, a fresh tensor for each of
# the hundreds of element-wise steps cost 20x the arithmetic (measured, 2-core EPYC: page faults of new memory).


def neighbour_sum(x: Tensor, out: Tensor | None = None, scratch: Tensor | None = None) -> Tensor:
    """sum_j w_j x_j over each pixel's 8 neighbours, [..., H, W], zero outside the image (into `out`, using
    `scratch`, both shaped as x, when given).

    The 3x3 kernel is [1 2 1]^T [1 2 1] / 12 less its centre 4/12: two 1-D passes, cheaper than a convolution.
    """
    out = torch.empty_like(x) if out is None else out
    rows = torch.mul(x, 2, out=torch.empty_like(x) if scratch is None else scratch)
    rows[..., 1:].add_(x[..., :-1])
    rows[..., :-1].add_(x[..., 1:])
    torch.mul(rows, 2, out=out)
    out[..., 1:, :].add_(rows[..., :-1, :])
    out[..., :-1, :].add_(rows[..., 1:, :])
    return out.sub_(x, alpha=4).div_(12)


class _Grid:
    """One level of the V-cycle: which pixels are unknown, the system's diagonal, and the level's buffers."""

    def __init__(self, unknown: Tensor, channels: int):
        """`unknown`: float [N, 1, h, w], 1 where the pixel is solved for; systems [N, channels, h, w]."""
        self.unknown = unknown
        self.diagonal = neighbour_sum(torch.ones_like(unknown[:1]))  # W_i: the in-image neighbour weight
        self.inverse = OMEGA * unknown / self.diagonal
        shape = (unknown.shape[0], channels, *unknown.shape[-2:])
        self.x, self.rhs, self.residual, self.scratch = (unknown.new_empty(shape) for _ in range(4))

    def apply(self, x: Tensor, out: Tensor) -> Tensor:
        """A x on the unknown pixels (x is zero on the known ones), into `out`."""
        neighbour_sum(x, out, self.scratch)
        return out.neg_().addcmul_(self.diagonal, x).mul_(self.unknown)

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


def _children(fine: Tensor) -> list[Tensor]:
    """The four strided views of `fine` that hold each coarse pixel's children (the odd ones a row or column short)."""
    return [fine[..., dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]


def _restrict(fine: Tensor, coarse: Tensor) -> None:
    """Each coarse pixel := the sum of its children (the transpose of `_prolong`: the V-cycle stays symmetric)."""
    first, *others = _children(fine)
    coarse.copy_(first)
    for part in others:
        coarse[..., : part.shape[-2], : part.shape[-1]].add_(part)


def _prolong(coarse: Tensor, fine: Tensor) -> None:
    """Each child += its coarse pixel's value (zero where a child is known: a coarse pixel is unknown only
    where all its children are).
    """
    for part in _children(fine):
        part.add_(coarse[..., : part.shape[-2], : part.shape[-1]])


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
    _restrict(grid.residual, coarse.rhs)
    _prolong(_v_cycle(grids[1:], coarse.rhs.mul_(coarse.unknown)), grid.x)
    grid.smooth(r)
    return grid.x


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """[N, C, 1, 1]: the dot product of each system's two planes."""
    return torch.einsum("nchw,nchw->nc", a, b)[..., None, None]


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
        p.mul_(_ratio(rz, previous)).add_(z)
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
