"""Helpers for the tests of the map methods: the sample images as model inputs, and a tiny CNN.

`tests/test_methods_reference.py` imports them through `test_methods`, which re-exports them.
"""

from __future__ import annotations

import numpy as np
import torch
from conftest import SAMPLES
from PIL import Image
from torch import nn

from cambatch.config import RunConfig
from cambatch.model.accel import Execution
from cambatch.model.build import CamModel
from cambatch.model.catalog import ACTIVATIONS


def run_config(**options) -> RunConfig:
    """A `RunConfig` with the declared defaults but for `options` (its INPUT and OUT are never used)."""
    return RunConfig.create(["unused"], "unused", **options)


def cpu_execution(precision: str = "fp32", *, compile: bool = False) -> Execution:
    return Execution(device_type="cpu", precision=precision, compile=compile)


def bind(name: str, model: CamModel, *, layer=None, scorecam_batch=None, execution=None, activation=ACTIVATIONS[0]):
    """`build_method` with the run's defaults for what a test leaves out (fp32 on the CPU, softmax)."""
    from cambatch.methods.registry import build_method

    return build_method(
        name,
        model,
        layer=layer,
        scorecam_batch=scorecam_batch,
        execution=execution or cpu_execution(),
        activation=activation,
    )


def sample_batch(model: CamModel, names=None) -> torch.Tensor:
    """The sample images as the pipeline feeds them (whole image resized, normalized), [B, 3, S, S]."""
    from cambatch.data.inputs import Preprocess
    from cambatch.data.preprocess import ImageFiles, collate
    from cambatch.sources.discover import discover

    sources = [s for s in discover([SAMPLES]) if names is None or s.rel in names]
    files = ImageFiles(sources, Preprocess(image_size=model.input_size))
    pixels = collate([files[i] for i in range(len(sources))]).pixels.float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def normalized_batch(model, names):
    """The named sample images resized with PIL and normalized on the host: the reference input."""
    size = model.input_size
    arrays = [np.asarray(Image.open(SAMPLES / n).convert("RGB").resize((size, size), Image.BILINEAR)) for n in names]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    return (x - mean) / std


class TinyNet(nn.Module):
    """A small GAP -> linear CNN (16 channels, 32 px) for what would be slow on a real network."""

    def __init__(self, classes: int = 5, negative_head: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)
        if negative_head:  # activations >= 0 and weights < 0: every CAM of every class is <= 0
            with torch.no_grad():
                self.fc.weight.copy_(-self.fc.weight.abs() - 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))


def tiny_model(seed: int = 0, negative_head: bool = False) -> CamModel:
    torch.manual_seed(seed)
    net = TinyNet(negative_head=negative_head).eval()
    return CamModel(
        name="tiny",
        network=net,
        features=net.body,
        head=net.fc,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        input_size=32,
        class_names=[f"c{i}" for i in range(5)],
        weights="none",
        weights_sha256=None,
    )


def cams_of(model: CamModel, images, topk: int, classes=None, extra=None, *, execution=None, activation=ACTIVATIONS[0]):
    """`class_activation_maps` with the run's defaults for what a test leaves out."""
    from cambatch.methods.cam import class_activation_maps

    return class_activation_maps(
        model, images, topk, classes, extra, execution=execution or cpu_execution(), activation=activation
    )


def faithfulness_of(network, images, cams, *, execution=None, activation=ACTIVATIONS[0]):
    """`faithfulness_scores` with the run's defaults for what a test leaves out."""
    from cambatch.methods.faithfulness import faithfulness_scores

    return faithfulness_scores(network, images, cams, execution=execution or cpu_execution(), activation=activation)


def engine_for(model: CamModel, *, classes=None, **options):
    """A CPU `CamEngine` for `model` built as a run with `options` builds it (`classes`: indices, or the top-k)."""
    from cambatch.runner.engine import build_engine

    return build_engine(model, torch.device("cpu"), run_config(**options), classes=classes)
