"""The gallery's error slices: `OUT/slices/slices.json` (written by `cambatch slices`) as cards of the page's
"Error slices" section (`templates/slices.html.j2`), with each slice's mean map as a picture. Torch-free.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..inspection.shortcut_pictures import map_picture
from ..layout import ImageNames, OutputLayout
from .slices import MEMBERS_SHOWN, Slices, read_slices

MEMBERS_CARDED = 8  # member thumbnails per card (slices.json keeps MEMBERS_SHOWN)


def slice_cards(layout: OutputLayout, *, colormap: str, names: ImageNames) -> dict[str, Any] | None:
    """The section's data (`by` and one card per slice), or None when `cambatch slices` has not run on OUT.

    Members point at the gallery's own thumbnails (every processed image has one), named by the run's
    `names` as the gallery names its pictures (`layout.gallery_rel`).
    """
    if not layout.slices_file.is_file():
        return None
    found = read_slices(layout.root)
    cards = []
    for number, row in found.table.iterrows():
        members = _carded(found, number)
        mean_map = found.mean_maps.get(number)
        rel = layout.gallery_map_rel("slices", int(number), str(row["group"]))
        cards.append(
            {
                **{key: row[key] for key in ("group", "accuracy", "class_accuracy", "predicted", "label")},
                "slice": int(number),
                "images": round(float(row["images"])),
                "map": map_picture(mean_map, layout, rel, colormap) if mean_map is not None else None,
                "members": [
                    {
                        "p": m.path,
                        "t": layout.gallery_rel("thumbs", names.folder(m.input_root, m.path)),
                        "m": round(float(m.membership), 2),
                    }
                    for m in members.itertuples(index=False)
                ],
            }
        )
    return {"by": found.by, "cards": cards}


def carded_images(layout: OutputLayout) -> set[tuple[str, str]]:
    """The images (input_root, path) whose thumbnails the section shows (none before `cambatch slices` ran): the
    gallery makes their thumbnails whatever else it makes.
    """
    if not layout.slices_file.is_file():
        return set()
    found = read_slices(layout.root)
    return {
        (str(m.input_root), str(m.path))
        for number in found.table.index
        for m in _carded(found, number).itertuples(index=False)
    }


def _carded(found: Slices, number) -> pd.DataFrame:
    """The members a slice's card shows: its leading `MEMBERS_CARDED`."""
    return found.members[found.members["slice"] == number].head(min(MEMBERS_CARDED, MEMBERS_SHOWN))
