"""Runs for the `cambatch check` tests: the hand-set `StampNet` of `shortcut_support` (class `stamp_bird` fires on
a stamp at one fixed place and on blue discs, `green_ball` on green discs), a variant of it with other head
weights, and photos where both discs move.

With both discs in a photo the variant's head mixes the two detectors, so its top-1 class changes for the
photos whose discs are about the same size and its `green_ball` maps take in the blue disc: two runs with
different weights over the same images, whose differences the tests compute by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from shortcut_support import CLASSES, StampNet, make_photos

VARIANT_HEAD = [(40.0, 2.0, 10.0), (0.0, 6.0, 8.0), (0.0, 0.0, 0.0)]  # rows: stamp_bird, green_ball, background


def save_stampnet(path: Path, head: list[tuple[float, float, float]] | None = None) -> Path:
    """The hand-set net (or the same detectors under another `head`), pickled whole (`--trust-checkpoint`)."""
    net = StampNet()
    if head is not None:
        with torch.no_grad():
            net.fc.weight.copy_(torch.tensor(head))
    torch.save(net, path)
    return path


def disc_photos(folder: Path, count: int = 16, seed: int = 1) -> list[str]:
    """Photos (160 x 120) with a green and a blue disc of random sizes at random places: no fixed place."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        gray = rng.uniform(0.35, 0.65, (120, 160, 1)) * np.ones((1, 1, 3))
        image = Image.fromarray((gray * 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for colour, (x_range, y_range) in (((0, 200, 0), ((20, 70), (20, 100))), ((0, 0, 230), ((90, 140), (20, 100)))):
            x, y, r = int(rng.integers(*x_range)), int(rng.integers(*y_range)), int(rng.integers(9, 17))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        names.append(f"discs_{i:02d}.png")
        image.save(folder / names[-1])
    return names


def stamp_photos(folder: Path) -> dict[str, str]:
    """`shortcut_support`'s photos: 10 stamped, 5 blue and 8 green discs."""
    return make_photos(folder)


def run_args(photos: Path, out: Path, weights: Path, names: Path) -> list[str]:
    """`cambatch run` over `photos` with the hand-set net: report only, top-2, in this process."""
    names.write_text("\n".join(CLASSES) + "\n")
    return [
        "run",
        str(photos),
        "--out",
        str(out),
        "--model",
        "resnet18",
        "--weights",
        str(weights),
        "--trust-checkpoint",
        "--num-classes",
        "3",
        "--class-names",
        str(names),
        "--topk",
        "2",
        "--workers",
        "0",
        "--no-overlays",
        "--quiet",
    ]
