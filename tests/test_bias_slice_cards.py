"""`cambatch.bias.slice_cards`: the gallery's "Error slices" section, from what `cambatch slices` kept in OUT."""

from __future__ import annotations

import re

from cambatch.bias.slice_cards import MEMBERS_CARDED, slice_cards
from cambatch.bias.slices import find_slices, write_slices
from cambatch.inspection.gallery import build_gallery
from cambatch.layout import ImageNames, OutputLayout


def test_no_section_before_slices_ran(tmp_path):
    assert slice_cards(OutputLayout(tmp_path), colormap="jet", names=ImageNames()) is None


def test_the_gallery_shows_each_slice_with_its_mean_map_and_member_thumbnails(planted_slice):
    out, kinds = planted_slice
    write_slices(out, find_slices(out))
    made = build_gallery(out)
    html = made.index.read_text(encoding="utf-8")
    section = html[html.index('data-testid="slices"') : html.index('<section id="errors"')]
    assert "green_ball" in section and "mostly predicted <b>red_ball</b>" in section
    assert section.count('data-testid="slice"') == 1  # the planted slice is the only one
    pictures = re.findall(r'src="([^"]+)"', section)
    assert pictures[0] == "maps/slices/00001_green_ball.png" and (out / "gallery" / pictures[0]).is_file()
    thumbs = pictures[1:]
    assert len(thumbs) == min(MEMBERS_CARDED, 10) and all((out / "gallery" / t).is_file() for t in thumbs)
    shown = {t.removeprefix("thumbs/").removesuffix(".jpg") for t in thumbs}
    assert all(kinds[p] == "stamped" for p in shown)
