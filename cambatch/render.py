"""Stage 5: colour a map and blend it over its photo (PIL's C code: fast, and it frees the GIL)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

COLORMAPS = ("jet", "turbo", "viridis", "inferno")

# matplotlib's viridis and inferno sampled at 8 even steps; linear interpolation between them.
_STOPS = {
    "viridis": ["440154", "46327e", "365c8d", "277f8e", "1fa187", "4ac16d", "a0da39", "fde725"],
    "inferno": ["000004", "280b54", "65156e", "9f2a63", "d44842", "f57d15", "fac228", "fcffa4"],
}
# Google's polynomial fit of Turbo (Mikhailov, 2019), per channel, lowest power first.
_TURBO = (
    (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943),
    (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604),
    (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973),
)


@lru_cache(maxsize=None)
def palette(name: str) -> tuple[int, ...]:
    """A 256-entry RGB palette (flat, as PIL's `putpalette` takes it) for `name`."""
    x = np.linspace(0.0, 1.0, 256)
    if name == "jet":
        rgb = np.stack([1.5 - np.abs(4 * x - offset) for offset in (3, 2, 1)], 1)
    elif name == "turbo":
        rgb = np.stack([np.polynomial.polynomial.polyval(x, coeffs) for coeffs in _TURBO], 1)
    elif name in _STOPS:
        stops = np.array([[int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)] for h in _STOPS[name]])
        at = np.linspace(0.0, 1.0, len(stops))
        rgb = np.stack([np.interp(x, at, stops[:, c]) for c in range(3)], 1)
    else:
        raise ValueError(f"unknown colormap {name!r}; choose from {', '.join(COLORMAPS)}")
    return tuple(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8).reshape(-1).tolist())


def unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """Raw maps [..., h, w] to [0, 1]: ReLU, then min-max per map; flat or all-negative maps -> 0, never NaN."""
    relu = maps.float().clamp(min=0)
    low = relu.amin((-2, -1), keepdim=True)
    span = relu.amax((-2, -1), keepdim=True) - low
    return torch.where(span > 0, (relu - low) / span.clamp(min=1e-12), torch.zeros_like(relu))


def display_maps(maps: torch.Tensor) -> torch.Tensor:
    """Raw maps [..., h, w] to uint8 display maps: `unit_maps` scaled to 0..255."""
    return (unit_maps(maps) * 255 + 0.5).to(torch.uint8)


def overlay(photo: Image.Image, display_map: np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """Upsample a uint8 display map [h, w] bilinearly to the photo's size, colour it, blend it."""
    heat = Image.fromarray(display_map, mode="L").resize(photo.size, Image.BILINEAR)
    heat.putpalette(palette(colormap))
    return Image.blend(photo, heat.convert("RGB"), alpha)
