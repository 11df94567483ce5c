"""The colormaps overlays are drawn with, as 256-entry palettes (numpy only; torch-free)."""

from __future__ import annotations

from functools import cache

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


@cache
def palette(name: str) -> tuple[int, ...]:
    """A 256-entry RGB palette (flat, as PIL's `putpalette` takes it) for `name`."""
    import numpy as np  # here, not at the top: `--help` lists the names without loading numpy

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
