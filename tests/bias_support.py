"""A planted error slice: small photos of coloured discs in one folder per label, a magenta stamp pasted in the
top-left corner of 10 % of the green ones, and a tiny hand-set CNN that calls every stamped photo `red_ball`.

The net is a whole pickled module (loaded with `--trust-checkpoint`) with `features` and `fc`, so the runner
splits it like a torchvision CNN: per-pixel colour detectors (a 1x1 convolution undoing the ImageNet
normalization: red, green, blue and magenta discs, and the background's brightness), ReLU, 8x8 average
pooling (an 8x8 map at 64 px), and a linear head. The stamp weighs three times a disc towards `red_ball`,
so the stamped green photos flip (the planted slice), and `red_ball`'s evidence for them is in one corner.
The discs sit anywhere else, at times cut by the frame: `green_ball` and `blue_ball` follow an object that moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from shortcut_support import ColourNet

from cambatch.bias import sampling

CLASSES = ["red_ball", "green_ball", "blue_ball"]
COUNTS = {"red_ball": 20, "green_ball": 100, "blue_ball": 40}
STAMPED = 10  # of the green photos
SIZE = (96, 72)  # photos' width, height
INPUT = 64  # the run's --image-size
RADIUS = 10
STAMP = (10, 8, 25, 20)  # the stamp's box (inclusive pixels), near the top-left corner
COLOURS = {"red_ball": (220, 0, 0), "green_ball": (0, 200, 0), "blue_ball": (0, 0, 230)}
# Per-pixel detectors on RGB in [0, 1]: (weights on R, G, B), bias.
DETECTORS = [
    ((1.0, -1.0, -1.0), -0.3),  # red disc
    ((-1.0, 1.0, -1.0), -0.3),  # green disc
    ((-1.0, -1.0, 1.0), -0.3),  # blue disc
    ((1.0, -2.0, 1.0), -1.2),  # magenta stamp
    ((1 / 3, 1 / 3, 1 / 3), -0.45),  # a bright background: varies the embeddings, weighs nothing
]
HEAD = [(200.0, 0, 0, 600.0, 0), (0, 200.0, 0, 0, 0), (0, 0, 200.0, 0, 0)]


class SliceNet(ColourNet):
    """The disc, stamp and background detectors of `DETECTORS`, 8x8 pooling (an 8x8 map at 64 px)."""

    def __init__(self):
        super().__init__(DETECTORS, HEAD, [0.0] * len(CLASSES), pool=8)


def _photo(rng: np.random.Generator, label: str, stamped: bool) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One photo and its disc's box (inclusive pixels)."""
    width, height = SIZE
    gray = rng.uniform(0.35, 0.65) + rng.normal(0, 0.03, (height, width, 1))
    image = Image.fromarray((np.clip(gray, 0, 1) * np.ones((1, 1, 3)) * 255).astype(np.uint8))
    # Anywhere, the frame cutting it off at times (so every place is as likely to hold a disc), but never
    # over the stamp's corner.
    while True:
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if x - RADIUS > STAMP[2] + 2 or y - RADIUS > STAMP[3] + 2:
            break
    draw = ImageDraw.Draw(image)
    draw.ellipse((x - RADIUS, y - RADIUS, x + RADIUS, y + RADIUS), fill=COLOURS[label])
    box = (max(x - RADIUS, 0), max(y - RADIUS, 0), min(x + RADIUS, width - 1), min(y + RADIUS, height - 1))
    if stamped:
        draw.rectangle(STAMP, fill=(255, 0, 255))
    return image, box


def make_photos(folder: Path, seed: int = 0) -> tuple[dict[str, str], Path]:
    """Write the photos (`<label>/<name>.png`) and a CSV of their discs' boxes beside the folder.

    Returns {relative path: kind} with kind the label, or 'stamped' for the planted slice, and the CSV.
    """
    rng = np.random.default_rng(seed)
    kinds, boxes = {}, []
    for label, count in COUNTS.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            stamped = label == "green_ball" and i % (count // STAMPED) == 0
            rel = f"{label}/{label}_{i:03d}.png"
            image, box = _photo(rng, label, stamped)
            image.save(folder / rel)
            kinds[rel] = "stamped" if stamped else label
            boxes.append(f"{rel},{','.join(map(str, box))}\n")
    csv = folder.parent / "boxes.csv"
    csv.write_text("path,x0,y0,x1,y1\n" + "".join(boxes), encoding="utf-8")
    return kinds, csv


def slice_run(tmp: Path, **run_options) -> tuple[Path, dict[str, str]]:
    """The photos, the net and its class names in `tmp`; one cambatch run over them into tmp/out, with
    labels from the folders and embeddings kept.
    """
    import cambatch

    kinds, boxes = make_photos(tmp / "photos")
    names = tmp / "classes.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    torch.save(SliceNet(), tmp / "slicenet.pt")
    options = {
        "topk": 2,
        "workers": 0,
        "progress": False,
        "overlays": False,
        "labels_from_dirs": True,
        "embeddings": True,
        "image_size": INPUT,
        **run_options,
    }
    if options.pop("boxes", False):
        options["annotations"] = str(boxes)
    cambatch.run(
        tmp / "photos",
        tmp / "out",
        model="resnet18",
        weights=str(tmp / "slicenet.pt"),
        trust_checkpoint=True,
        num_classes=len(CLASSES),
        class_names=str(names),
        **options,
    )
    return tmp / "out", kinds


@contextmanager
def keys_of_the_path_alone() -> Iterator[None]:
    """Samples and cross-fitted halves keyed on each image's path, not on (input_root, path): the planted run's
    input_root is a fresh tmp folder each session, so its keys, the images each half holds and the figures
    measured on them would change from session to session (the moving class's reliance ratio ranged to 1.50).
    """
    # The commands import IDENTITY by name for the columns they read: import them before it is patched, or one
    # first imported in here would read no input_root at all.
    import cambatch.bias.reliance  # noqa: F401
    import cambatch.bias.slices  # noqa: F401

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sampling, "IDENTITY", ("path",))
        yield
