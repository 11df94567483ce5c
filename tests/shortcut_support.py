"""A shortcut built on purpose: photos with a small magenta stamp pasted at one fixed place, and a tiny
hand-set CNN whose class `stamp_bird` fires on the stamp (and on blue discs), `green_ball` on green discs.

The net is a whole pickled module (loaded with `--trust-checkpoint`), with `features` and `fc` so the
runner splits it like a torchvision CNN: per pixel colour detectors (a 1x1 convolution undoing the
ImageNet normalization), ReLU, 16x16 average pooling (a 14x14 map at 224 px), and a linear head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

CLASSES = ["stamp_bird", "green_ball", "background"]
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
STAMP = (8, 8, 32, 26)  # the stamp's box in every stamped photo (160 x 120), top-left corner
# Per-pixel detectors on RGB in [0, 1]: (weights on R, G, B), bias.
DETECTORS = [((1.0, -2.0, 1.0), -1.2), ((-1.0, 1.0, -1.0), -0.3), ((-1.0, -1.0, 1.0), -0.3)]  # magenta, green, blue
HEAD = [(40.0, 0.0, 10.0), (0.0, 10.0, 0.0), (0.0, 0.0, 0.0)]
HEAD_BIAS = (0.0, 0.0, 0.05)


class ColourNet(nn.Module):
    """Per-pixel colour detectors (`(weights on R, G, B), bias` on RGB in [0, 1]) -> ReLU -> `pool` x `pool` average
    pool -> global average pool -> linear (`head` rows, `head_bias`). The detectors act on the normalized input,
    so the run's preprocessing is undone in the first convolution. `features` and `fc` are split by the runner as
    a torchvision CNN's are.
    """

    def __init__(self, detectors, head, head_bias, pool: int):
        super().__init__()
        conv = nn.Conv2d(3, len(detectors), 1)
        std, mean = torch.tensor(STD), torch.tensor(MEAN)
        with torch.no_grad():
            for k, (weights, bias) in enumerate(detectors):
                w = torch.tensor(weights)
                conv.weight[k, :, 0, 0] = w * std  # acts on the normalized input (x - mean) / std
                conv.bias[k] = bias + float((w * mean).sum())
        self.features = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(pool))
        self.fc = nn.Linear(len(detectors), len(head))
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(head))
            self.fc.bias.copy_(torch.tensor(head_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class StampNet(ColourNet):
    """Magenta, green and blue detectors, 16x16 pooling: `stamp_bird` fires on the magenta stamp."""

    def __init__(self):
        super().__init__(DETECTORS, HEAD, HEAD_BIAS, pool=16)


def save_net(path: Path) -> Path:
    torch.save(StampNet(), path)
    return path


def _photo(rng: np.random.Generator, disc: str | None, stamped: bool) -> Image.Image:
    gray = rng.uniform(0.35, 0.65, (120, 160, 1)) * np.ones((1, 1, 3))
    image = Image.fromarray((gray * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    if disc is not None:
        # Anywhere but the stamp's corner, so a disc never sits where the stamp goes.
        x, y = int(rng.integers(50, 140)), int(rng.integers(15, 100))
        draw.ellipse((x - 14, y - 14, x + 14, y + 14), fill=(0, 200, 0) if disc == "green" else (0, 0, 230))
    if stamped:
        draw.rectangle(STAMP, fill=(255, 0, 255))
    return image


def make_photos(folder: Path, *, stamped: int = 10, blue: int = 5, green: int = 8, seed: int = 0) -> dict[str, str]:
    """Write the photos; returns {file name: kind} with kind 'stamped', 'blue' or 'green'."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = {}
    for kind, count in (("stamped", stamped), ("blue", blue), ("green", green)):
        for i in range(count):
            name = f"{kind}_{i:02d}.png"
            _photo(rng, "green" if kind != "blue" else "blue", kind == "stamped").save(folder / name)
            kinds[name] = kind
    return kinds


def stamp_run(tmp: Path, **run_options) -> tuple[Path, dict[str, str]]:
    """The photos, the net and its class names in `tmp`; one cambatch run over them into tmp/out."""
    import cambatch

    kinds = make_photos(tmp / "photos")
    names = tmp / "classes.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    options = {"topk": 2, "workers": 0, "progress": False, **run_options}
    cambatch.run(
        tmp / "photos",
        tmp / "out",
        model="resnet18",
        weights=str(save_net(tmp / "stampnet.pt")),
        trust_checkpoint=True,
        num_classes=3,
        class_names=str(names),
        **options,
    )
    return tmp / "out", kinds
