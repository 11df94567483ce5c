"""A generated set with a known object box, and maps of it, for the trust metrics' behaviour tests.

Each image is a sample photo (the cat, the cameraman) pasted into a box on a plain grey canvas, at
128 px: the perturbation metrics cost a third of what they cost at 224, and the default model still
names the objects (Egyptian cat 0.99, tripod 0.82). Three maps per image, at the input's resolution,
for the model's top-1 class: `box` ranks the box first (its centre highest, then by distance to the
box), `random` is a seeded random 7 x 7 grid upsampled, and `inverted` is the box map negated (the
box last).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from conftest import SAMPLES
from methods_support import tiny_model
from PIL import Image

from cambatch.methods.base import ClassMaps, select_classes
from cambatch.model.build import CamModel

KINDS = ("box", "random", "inverted")
# (photo, box x0, y0, x1, y1 as fractions of the canvas)
OBJECTS = (("chelsea.png", 0.05, 0.30, 0.60, 0.90), ("camera.png", 0.40, 0.05, 0.95, 0.60))
SIZE = 128


def sensitive_model() -> CamModel:
    """The tests' tiny CNN with its head scaled up, so that perturbing pixels moves its probabilities (ROAD
    scores of 0.01 to 0.2, where the plain one moves them by 1e-3 and a comparison at 1e-3 would prove nothing).
    """
    model = tiny_model(seed=3)
    with torch.no_grad():
        model.network.fc.weight *= 50
    return model


def boxed_images(model) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """The normalized model inputs [N, 3, SIZE, SIZE] and each image's box in pixels."""
    size = SIZE
    arrays, boxes = [], []
    for name, *fractions in OBJECTS:
        x0, y0, x1, y1 = (round(f * size) for f in fractions)
        canvas = Image.new("RGB", (size, size), (128, 128, 128))
        canvas.paste(Image.open(SAMPLES / name).convert("RGB").resize((x1 - x0, y1 - y0)), (x0, y0))
        arrays.append(np.asarray(canvas))
        boxes.append((x0, y0, x1, y1))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    return (pixels - mean) / std, boxes


def box_map(size: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """[size, size]: 0 minus the distance to the box, less a little of the distance to its centre."""
    x0, y0, x1, y1 = box
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    outside = torch.hypot((x0 - x).clamp(min=0) + (x - x1).clamp(min=0), (y0 - y).clamp(min=0) + (y - y1).clamp(min=0))
    return -outside - 0.01 * torch.hypot(x - (x0 + x1) / 2, y - (y0 + y1) / 2)


def boxed_maps(model) -> tuple[torch.Tensor, ClassMaps]:
    """The generated images three times over, [3 N, 3, S, S], with the `box`, then the `random`, then the
    `inverted` map of each image's top-1 class (one batch: the metrics' costs are per batch, not per map).
    """
    images, boxes = boxed_images(model)
    with torch.no_grad():
        selection = select_classes(model.network.eval()(images.repeat(3, 1, 1, 1)), 1, activation="softmax")
    size = images.shape[-1]
    box = torch.stack([box_map(size, b) for b in boxes])[:, None]
    grid = torch.rand(len(boxes), 1, 7, 7, generator=torch.Generator().manual_seed(0))
    random = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    batch = images.repeat(3, 1, 1, 1)
    # The images stand in for the layer's activations: they only give `ClassMaps.pooled`, which no trust score reads.
    return batch, selection.with_maps(torch.cat([box, random, -box]), batch)


def by_kind(scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """A column [3 N, 1] of `boxed_maps`'s batch as {kind: [N]}."""
    return dict(zip(KINDS, scores.view(len(KINDS), -1), strict=True))
