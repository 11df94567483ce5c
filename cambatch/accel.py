"""Device-side speed settings for a `CamModel`: memory format, precision (autocast), compilation.

`accelerate(model, device, precision, compile)` changes the model in place and returns it:
- channels_last weights: oneDNN (CPU) and cuDNN (GPU) pick their fast NHWC kernels when the
  weights are NHWC; on the 2-core CPU of the benchmark this alone doubled EfficientNet-Lite0's
  forward at batch 8 (depthwise convolutions);
- fp16 / bf16: the feature extractor runs under `torch.autocast` and hands a float32 feature map
  to the head, so logits, maps and statistics stay float32 whatever the precision;
- compile: `torch.compile` of the feature extractor (the first batches pay the compilation).
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import UsageError
from .models import CamModel

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run (before any work)."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 needs a GPU (cuda or mps); on a CPU use fp32 (or bf16 where the CPU has bf16 units)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16: this GPU has no bfloat16 support; use fp16")


class AutocastFeatures(nn.Module):
    """Runs a feature extractor under autocast and returns its feature map as float32."""

    def __init__(self, inner: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.inner = inner
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.inner(x)
        return out.float()


def accelerate(model: CamModel, device: torch.device, precision: str = "fp32", compile: bool = False) -> CamModel:
    """Prepare `model` for fast inference on `device` (in place; see the module's docstring)."""
    check_precision(precision, device)
    # Features share their parameters with the network, so converting it converts them.
    model.network.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    features = model.features
    if compile:
        features = torch.compile(features)
    if precision in _DTYPES:
        features = AutocastFeatures(features, device.type, _DTYPES[precision])
    model.features = features
    return model
