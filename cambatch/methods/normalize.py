"""Maps for display and masking: ReLU, then min-max per map (Zhou et al.'s and every CAM library's convention)."""

from __future__ import annotations

import torch


def unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """Raw maps [..., h, w] to [0, 1]: ReLU, then min-max per map; flat or all-negative maps -> 0, never NaN."""
    relu = maps.float().clamp(min=0)
    low = relu.amin((-2, -1), keepdim=True)
    span = relu.amax((-2, -1), keepdim=True) - low
    return torch.where(span > 0, (relu - low) / span.clamp(min=1e-12), torch.zeros_like(relu))


def display_maps(maps: torch.Tensor) -> torch.Tensor:
    """Raw maps [..., h, w] to uint8 display maps: `unit_maps` scaled to 0..255."""
    return (unit_maps(maps) * 255 + 0.5).to(torch.uint8)
