"""What the peer loops share: the same model as cambatch, its layer names, and the image list."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
JPEG_QUALITY = 90  # as cambatch's overlays


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("images", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--topk", type=int, default=3)
    return parser.parse_args()


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def build(name: str, weights: str | None, device: str):
    """cambatch's own model (same weights), and the names of its feature layer and linear head."""
    from cambatch.model.build import ForwardFeatures, load_model

    model = load_model(name, weights)
    network = model.network.eval().to(device)
    names = {id(m): n for n, m in network.named_modules() if n}
    features = model.features
    if isinstance(features, ForwardFeatures):  # forward_features (timm, the default): the last child before the head
        skip = (nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Linear, nn.Identity)
        children = [
            (n, m)
            for n, m in network.named_children()
            if not isinstance(m, skip) and "pool" not in type(m).__name__.lower()
        ]
        target = children[-1][0]
    elif isinstance(features, nn.Sequential) and id(features) not in names:
        target = names[id(list(features)[-1])]
    else:
        target = names[id(features)]
    return model, network, target, names[id(model.head)]
