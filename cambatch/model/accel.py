"""How the network runs on its device: memory format, precision (autocast) and compilation.

- `prepare_network`: channels_last weights. oneDNN (CPU) and cuDNN (GPU) pick their fast NHWC kernels
  when the weights are NHWC; on the 2-core CPU of the benchmark this alone doubled
  EfficientNet-Lite0's forward at batch 8 (depthwise convolutions).
- `Execution`: what every map method runs its forward passes through. fp16 / bf16 run them under
  `torch.autocast`; the methods read what they need back as float32, so logits, maps and
  statistics stay float32 whatever the precision. `compile` runs `torch.compile`d modules, but only
  for passes without a layer hook: a compiled graph silently skips hooks registered after it was
  compiled (measured with torch 2.14), so the methods that hook a layer in every pass refuse it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from ..errors import UsageError
from .catalog import PRECISIONS


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run (the choice itself is checked by `RunConfig`)."""
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("precision fp16 (--precision) needs a GPU (cuda or mps); on a CPU use fp32, or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("precision bf16 (--precision): this GPU has no bfloat16 support; use fp16")


def prepare_network(network: nn.Module, device: torch.device) -> nn.Module:
    """Move `network` to `device` with channels_last weights (in place; features share them)."""
    network.to(device=device, memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    return network


class Execution:
    """How a method runs the network's forward passes: under autocast, and compiled where allowed."""

    def __init__(self, *, device_type: str, precision: str, compile: bool):
        dtype_name = PRECISIONS[precision]
        self.device_type = device_type
        self.precision = precision
        self.dtype = getattr(torch, dtype_name) if dtype_name else None
        self.compile = compile
        self._compiled: dict[int, nn.Module] = {}

    def autocast(self) -> AbstractContextManager:
        """The autocast region of a forward pass (a no-op at fp32)."""
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`module(x)` under autocast; with `compile`, through its compiled graph (never hooked: see the module doc)."""
        with self.autocast():
            return self._module(module)(x)

    def _module(self, module: nn.Module) -> nn.Module:
        if not self.compile:
            return module
        if id(module) not in self._compiled:
            self._compiled[id(module)] = torch.compile(module)
        return self._compiled[id(module)]

    def __repr__(self) -> str:
        return f"Execution({self.device_type!r}, precision={self.precision!r}, compile={self.compile})"
