"""The gallery's class mean maps and cluster strips: pictures under `OUT/gallery/maps/`, and their data. Torch-free.

Each group (class or label) gets its mean map as a picture coloured with the run's colormap on the
overlays' 0..1 scale (a locked class's map is bright where it looks; a diffuse one stays dim), and,
where it has more than one cluster, one strip per cluster: that cluster's mean map, its size and
its example images (`cambatch.inspection.shortcuts`), given as the positions of their records in
`data["images"]`. Each image's record gets its cluster.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..layout import OutputLayout
from ..render.colormaps import palette
from ..report.reader import image_ids
from .options import Thresholds
from .shortcuts import Shortcuts, find_shortcuts

PICTURE_SIDE = 96  # CSS pixels of a mean-map picture in a group header


def shortcut_pictures(
    df: pd.DataFrame,
    data: dict[str, Any],
    layout: OutputLayout,
    *,
    cards: dict[tuple[str, ...], int],
    colormap: str,
    labelled: bool,
    thresholds: Thresholds = Thresholds(),
) -> None:
    """Add mean maps (`mm`), position lock and cluster strips (`cl`) to `data["groups"]`, and clusters to images.

    `cards` gives the position in `data["images"]` of each image (`report.reader.image_ids`). Does nothing
    for a report without maps, or without scikit-learn (the clusters need it).
    """
    if "map" not in df.columns or not data["images"]:
        return
    try:
        import sklearn  # noqa: F401 - only to know whether clusters can be made
    except ImportError:
        return
    for by, key in (("class", "kc"), ("label", "kl")):
        if by == "label" and not labelled:
            continue
        found = find_shortcuts(df, by, thresholds)
        examples = _clustered(found, data["images"], cards, key)
        for number, name in enumerate(found.classes.index):
            group = data["groups"][by].setdefault(name, {})
            group["mm"] = map_picture(found.mean_maps[name], layout, layout.gallery_map_rel(by, number, name), colormap)
            clusters = found.clusters[found.clusters.group == name]
            if len(clusters) > 1:
                group["cl"] = [
                    {
                        "n": int(row.images),
                        "mm": map_picture(
                            found.cluster_maps[(name, int(row.cluster))],
                            layout,
                            layout.gallery_map_rel(by, number, name, int(row.cluster)),
                            colormap,
                        ),
                        "ex": examples.get((name, int(row.cluster)), []),
                    }
                    for row in clusters.itertuples(index=False)
                ]


def _clustered(
    found: Shortcuts, records: list[dict], cards: dict[tuple[str, ...], int], key: str
) -> dict[tuple[str, int], list[int]]:
    """Give each image's record its cluster under `key`; return the cards of each (group, cluster)'s examples."""
    examples: dict[tuple[str, int], list[int]] = {}
    for image, row in zip(image_ids(found.images), found.images.itertuples(index=False), strict=True):
        card = cards.get(image)
        if card is None or pd.isna(row.map_cluster):
            continue
        records[card][key] = int(row.map_cluster)
        if row.example:
            examples.setdefault((row.group, int(row.map_cluster)), []).append(card)
    return examples


def map_picture(mean_map: np.ndarray, layout: OutputLayout, rel: str, colormap: str) -> str:
    """Write one mean map [grid, grid] in 0..1 as a coloured PNG; return its path relative to the gallery."""
    target = layout.gallery_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    values = (np.clip(mean_map, 0, 1) * 255 + 0.5).astype(np.uint8)
    picture = Image.fromarray(values, mode="L").resize((PICTURE_SIDE * 2, PICTURE_SIDE * 2), Image.BILINEAR)
    picture.putpalette(palette(colormap))
    picture.convert("RGB").save(target)
    return rel
