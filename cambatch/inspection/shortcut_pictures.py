"""The gallery's class mean maps and cluster strips: pictures under `OUT/gallery/maps/`, and their data. Torch-free.

Each group (class or label) gets its mean map as a picture coloured with the run's colormap on the
overlays' 0..1 scale (a locked class's map is bright where it looks; a diffuse one stays dim), and,
where it has more than one cluster, one strip per cluster: that cluster's mean map, its size and
its example images (`cambatch.inspection.shortcuts`), named as their cards name them. Cards carry their
raw cluster; `km` numbers them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from ..layout import OutputLayout
from ..render.colormaps import palette
from .shortcuts import GroupMaps, Shortcuts

PICTURE_SIDE = 96  # CSS pixels of a mean-map picture in a group header


def shortcut_pictures(
    found: Shortcuts,
    maps: GroupMaps,
    groups: dict[str, dict[str, Any]],
    layout: OutputLayout,
    *,
    colormap: str,
    shown: Callable[[str, str], str] = lambda input_root, path: path,
) -> None:
    """Add to each group of `groups` its mean map (`mm`), cluster strips (`cl`) and raw -> cluster numbers (`km`).

    A strip's examples (`ex`) are its images (input_root, path) as `shown` names them: the cards' `p`.
    """
    numbers = maps.renumbering()
    for number, name in enumerate(found.classes.index):
        group = groups.setdefault(name, {})
        code = maps.codes[name]
        rel = layout.gallery_map_rel(found.by, number, name)
        group["mm"] = map_picture(found.mean_maps[name], layout, rel, colormap)
        group["km"] = numbers[code].tolist()
        clusters = found.clusters[found.clusters.group == name]
        if len(clusters) > 1:
            group["cl"] = [
                {
                    "n": int(row.images),
                    "mm": map_picture(
                        found.cluster_maps[(name, int(row.cluster))],
                        layout,
                        layout.gallery_map_rel(found.by, number, name, int(row.cluster)),
                        colormap,
                    ),
                    "ex": [shown(*image) for image in _examples(maps, code, numbers[code], int(row.cluster))],
                }
                for row in clusters.itertuples(index=False)
            ]


def _examples(maps: GroupMaps, code: int, numbers: np.ndarray, cluster: int) -> list[tuple[str, str]]:
    """The example images (input_root, path) of a group's cluster `cluster` (numbered by `numbers`)."""
    raw = int(np.flatnonzero(numbers == cluster)[0])
    return maps.examples.get((code, raw), [])


def map_picture(mean_map: np.ndarray, layout: OutputLayout, rel: str, colormap: str) -> str:
    """Write one mean map [grid, grid] in 0..1 as a coloured PNG; return its path relative to the gallery."""
    target = layout.gallery_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    values = (np.clip(mean_map, 0, 1) * 255 + 0.5).astype(np.uint8)
    picture = Image.fromarray(values, mode="L").resize((PICTURE_SIDE * 2, PICTURE_SIDE * 2), Image.BILINEAR)
    picture.putpalette(palette(colormap))
    picture.convert("RGB").save(target, compress_level=1)  # small pictures: fast beats a few bytes
    return rel
