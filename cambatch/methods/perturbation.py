"""What the perturbation metrics (ROAD, deletion and insertion) share: maps at the input's resolution,
and perturbed inputs scored in forwards of a bounded size.

A metric lists its perturbed inputs as jobs 0..n-1 and builds any slice of them on demand
(`make(jobs)`), so no more than one forward's worth of perturbed images is ever held: a batch of 64
images with 3 classes asks for thousands of them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.accel import Execution
from .base import probabilities


def input_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Raw maps [B, K, h, w] at the input's resolution, [B, K, H, W] float32: bilinear with half-pixel
    centres, as the overlays are drawn and as pytorch-grad-cam resizes its maps.
    """
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


def flat_rows(values: Tensor) -> Tensor:
    """Which rows of [R, L] (bool [R]) have all their values equal (a map with no order to perturb by)."""
    return values.amax(1) == values.amin(1)


def probe(
    network: nn.Module,
    make: Callable[[Tensor], Tensor],
    classes: Tensor,
    *,
    chunk: int,
    execution: Execution,
    activation: str,
) -> Tensor:
    """float32 [n]: the probability of class `classes[j]` (int64 [n]) for each perturbed input j, built by
    `make(jobs)` for int64 job numbers, `chunk` inputs per forward pass (the caller holds the network in eval mode).
    """
    scores = []
    for start in range(0, classes.shape[0], chunk):
        jobs = torch.arange(start, min(start + chunk, classes.shape[0]), device=classes.device)
        out = probabilities(execution.forward(network, make(jobs)), activation)
        scores.append(out.gather(1, classes[jobs, None])[:, 0])
    return torch.cat(scores)
