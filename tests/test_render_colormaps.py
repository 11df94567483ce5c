"""`cambatch.render.colormaps`: 256-entry palettes with the colormaps' known ends."""

from __future__ import annotations

import pytest

from cambatch.render.colormaps import COLORMAPS, palette

# First and last colour of each palette: jet's dark blue to dark red, matplotlib's viridis and inferno
# ends, and Google's Turbo polynomial at 0 and 1.
ENDS = {
    "jet": ((0, 0, 128), (128, 0, 0)),
    "turbo": ((35, 23, 27), (144, 13, 0)),
    "viridis": ((0x44, 0x01, 0x54), (0xFD, 0xE7, 0x25)),
    "inferno": ((0x00, 0x00, 0x04), (0xFC, 0xFF, 0xA4)),
}


@pytest.mark.parametrize("name", COLORMAPS)
def test_palette_has_256_rgb_entries_with_the_known_ends(name):
    flat = palette(name)
    assert len(flat) == 768 and all(isinstance(v, int) and 0 <= v <= 255 for v in flat)
    first, last = ENDS[name]
    assert tuple(flat[:3]) == first and tuple(flat[-3:]) == last


def test_every_colormap_is_listed_with_its_ends():
    assert set(ENDS) == set(COLORMAPS)


def test_jet_runs_blue_cyan_green_yellow_red():
    flat = palette("jet")
    at = {i: tuple(flat[3 * i : 3 * i + 3]) for i in (32, 96, 128, 160, 224)}
    assert at[32] == (0, 0, 255)  # blue
    assert at[96][0] < 5 and at[96][1] == 255 and at[96][2] > 250  # cyan
    assert at[128][1] == 255 and max(at[128][0], at[128][2]) < 140  # green
    assert at[160][0] == 255 and at[160][1] > 250 and at[160][2] == 0  # yellow
    assert at[224][0] > 250 and at[224][1] == 0 and at[224][2] == 0  # red


@pytest.mark.parametrize("name", ["viridis", "inferno"])
def test_perceptual_maps_brighten_from_low_to_high(name):
    flat = palette(name)
    brightness = [sum(flat[3 * i : 3 * i + 3]) for i in range(256)]
    assert brightness[0] < brightness[128] < brightness[255]


def test_palettes_differ_and_unknown_names_are_refused():
    assert len({palette(name) for name in COLORMAPS}) == len(COLORMAPS)
    with pytest.raises(ValueError, match="unknown colormap 'rainbow'; choose from jet, turbo"):
        palette("rainbow")
