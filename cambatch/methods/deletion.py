"""Deletion and insertion (Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018), for every row of a batch at once.

The pixels are ordered by the map (the raw map upsampled bilinearly to the input,
`perturbation.input_maps`), most salient first. Deletion replaces them, in that order, with the
baseline 0 (the normalized input's zero: the dataset's mean colour, as RISE's `torch.zeros_like` on
its normalized tensors); insertion starts from the image blurred with RISE's kernel (`gkern(11, 5)`:
a centred unit impulse through `scipy.ndimage.gaussian_filter`, sigma 5) and puts the pixels back
in that order. Point i of a curve (i = 0..STEPS) has the first i * H * W / STEPS pixels changed
(rounded down), and its value is the class's probability. RISE's area under the curve, the
trapezoid rule on an axis from 0 to 1:

    AUC = (s_0 / 2 + s_1 + ... + s_{STEPS-1} + s_STEPS / 2) / STEPS

`deletion_auc` (lower: removing the salient pixels first kills the class sooner) and
`insertion_auc` (higher: they bring it back sooner). RISE changes 224 pixels a step at 224 px (224
steps); here STEPS = 16, each step 1/16 of the image (3136 pixels at 224 px: RISE's procedure with
`step` = H * W / 16), so a row costs 2 x 15 forwards, plus one of the blurred image per image and one
of the baseline per batch; the curves' points at the untouched image are the row's own `probability`.
A flat map has no order: its columns are NaN. Ties in the order go to the lower pixel index (row-major).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.accel import Execution
from .base import ClassMaps, probabilities
from .hooks import network_as_is
from .perturbation import flat_rows, input_maps, probe

STEPS = 16  # points 0..16 on each curve
BLUR_SIZE = 11  # RISE's insertion substrate: gkern(klen=11, nsig=5)
BLUR_SIGMA = 5.0
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: the Gaussian is cut at 4 sigma


def rise_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """RISE's `gkern(size, sigma)` [size, size]: a unit impulse at the centre of a size x size grid through
    `scipy.ndimage.gaussian_filter` (mode 'reflect', so the Gaussian's tails fold back into the grid).
    """
    radius = int(TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * offsets**2 / sigma**2)
    weights /= weights.sum()
    source = (torch.arange(size)[:, None] + offsets.long()[None]) % (2 * size)  # 'reflect': d c b a | a b c d | d c
    source = torch.where(source >= size, 2 * size - 1 - source, source)
    line = (weights[None] * (source == size // 2)).sum(1)
    return torch.outer(line, line).float()


def blurred(images: Tensor) -> Tensor:
    """RISE's insertion start: each channel convolved with `rise_kernel`, zeros beyond the border."""
    c = images.shape[1]
    kernel = rise_kernel().to(images)[None, None].expand(c, 1, BLUR_SIZE, BLUR_SIZE)
    return F.conv2d(images, kernel, padding=BLUR_SIZE // 2, groups=c)


def auc(curves: Tensor) -> Tensor:
    """RISE's normalized area under each curve [..., n + 1] (trapezoid rule, points equally spaced on 0..1)."""
    return (curves.sum(-1) - curves[..., 0] / 2 - curves[..., -1] / 2) / (curves.shape[-1] - 1)


def salience_ranks(maps: Tensor) -> Tensor:
    """int64 [R, L]: each pixel's place in its row's order, most salient first (ties by pixel index)."""
    order = torch.argsort(maps, dim=1, descending=True, stable=True)
    places = torch.arange(maps.shape[1], device=maps.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, places)


def _inner_points(
    network: nn.Module,
    images: Tensor,
    start: Tensor,
    cams: ClassMaps,
    maps: Tensor,
    *,
    execution: Execution,
    activation: str,
) -> Tensor:
    """[R, 2, STEPS - 1]: the probabilities at points 1..STEPS-1 of each row's deletion (0) and insertion (1)
    curves; `start` are the blurred images, `maps` the rows' maps at the input's resolution [R, H * W].
    """
    ranks = salience_ranks(maps)
    inner, k = STEPS - 1, cams.class_index.shape[1]
    counts = torch.arange(1, STEPS, device=images.device) * maps.shape[1] // STEPS

    def make(jobs: Tensor) -> Tensor:
        row, step = jobs // (2 * inner), jobs % inner
        insertion = (jobs // inner % 2).bool()[:, None, None, None]
        image, blur = images[row // k], start[row // k]
        before = torch.where(insertion, blur, image)  # a pixel before its turn, and after it
        after = torch.where(insertion, image, torch.zeros_like(image))
        changed = (ranks[row] < counts[step, None]).view(-1, 1, *images.shape[-2:])
        return torch.where(changed, after, before)

    classes = cams.class_index.reshape(-1).repeat_interleave(2 * inner)
    return probe(network, make, classes, chunk=images.shape[0], execution=execution, activation=activation).view(
        -1, 2, inner
    )


def deletion_insertion_scores(
    network: nn.Module, images: Tensor, cams: ClassMaps, *, execution: Execution, activation: str
) -> dict[str, Tensor]:
    """float32 [B, K] per image and class: `deletion_auc`, `insertion_auc` (see the module).

    `images` are the normalized inputs [B, 3, H, W] the maps were made from; `activation` is the run's.
    """
    b, k = cams.class_index.shape
    maps = input_maps(cams.maps, images.shape[-2:]).flatten(0, 1).flatten(1)  # [R, H * W], R = B * K rows
    with network_as_is(network), torch.inference_mode():
        start = blurred(images)
        inside = _inner_points(network, images, start, cams, maps, execution=execution, activation=activation)
        zeros = execution.forward(network, torch.zeros_like(images[:1]))
        baseline = probabilities(zeros, activation)[0, cams.class_index.reshape(-1)]
        from_blur = probabilities(execution.forward(network, start), activation).gather(1, cams.class_index)
    p = cams.probability.reshape(-1).float()
    deletion = torch.cat([p[:, None], inside[:, 0], baseline[:, None]], 1)
    insertion = torch.cat([from_blur.reshape(-1, 1), inside[:, 1], p[:, None]], 1)
    scores = torch.stack([auc(deletion), auc(insertion)], 1)
    scores[flat_rows(maps)] = float("nan")
    deletion_auc, insertion_auc = scores.view(b, k, 2).unbind(2)
    return {"deletion_auc": deletion_auc, "insertion_auc": insertion_auc}
