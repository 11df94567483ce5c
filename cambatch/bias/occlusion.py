"""How `reliance` hides a region of a model input: the occluder, one function with one signature, so that
another (ROAD's noisy linear imputation) can take its place.

`blur_fill` replaces the masked pixels by those of a strongly blurred copy of the image: a Gaussian
of standard deviation `BLUR_SIGMA` of the input's side, applied separably with reflected borders.
Where a small, sharp feature was (a stamp, a logo, text) only a faint smear of its colour remains,
and the image keeps its overall colour and brightness, so the model does not see an unnatural grey
or black patch (the usual objection to zero- or mean-filling; RISE's insertion metric blurs too).
Blurring is linear and works per channel, so it is the same on normalized inputs as on pixels.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

BLUR_SIGMA = 0.1  # of the input's side: 6.4 px at 64 px, 22 px at 224 px


class Occluder(Protocol):
    """images [B, 3, S, S] (normalized model inputs) and masks [B, 1, S, S] (True: hide) -> occluded images."""

    def __call__(self, images: Tensor, masks: Tensor) -> Tensor: ...


def blur_fill(images: Tensor, masks: Tensor) -> Tensor:
    """The images with their masked pixels replaced by a blurred copy's (see the module's docstring)."""
    side = images.shape[-1]
    sigma = BLUR_SIGMA * side
    radius = min(int(3 * sigma), side - 1)  # reflection needs a pad smaller than the image
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    blurred = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), rows, groups=channels)
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="reflect"), rows.transpose(2, 3), groups=channels)
    return torch.where(masks, blurred, images)


def box_masks(boxes: Tensor, side: int) -> Tensor:
    """Boxes [B, 4] (x0, y0, x1, y1 as fractions of the image, right and bottom exclusive) as masks [B, 1, S, S]."""
    edges = (boxes * side).round().long()
    cells = torch.arange(side, device=boxes.device)
    inside_x = (cells[None] >= edges[:, 0:1]) & (cells[None] < edges[:, 2:3])
    inside_y = (cells[None] >= edges[:, 1:2]) & (cells[None] < edges[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None]
