"""How the network runs on its device: memory format, precision (autocast) and compilation.

- `prepare_network`: channels_last weights. oneDNN (CPU) and cuDNN (GPU) pick their fast NHWC kernels
  when the weights are NHWC; on the 2-core CPU of the benchmark this alone doubled
  EfficientNet-Lite0's forward at batch 8 (depthwise convolutions).
- `Execution`: what every map method runs its forward passes through. fp16 / bf16 run them under
  `torch.autocast`; the methods read what they need back as float32, so logits, maps and
  statistics stay float32 whatever the precision. `compile` runs `torch.compile`d modules, but only
  for passes without a layer hook: a compiled graph silently skips hooks registered after it was
  compiled (measured with torch 2.14), so the methods that hook a layer in every pass refuse it.
  A `runtime` (`cambatch.model.runtime`: OpenVINO, ONNX Runtime) runs every pass made with grad
  mode off, hooked or not (the hook is part of the converted graph); the passes a gradient flows
  through stay on torch. This is the one seam: a method gets the runtime by passing its forwards here.
"""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import UsageError
from .catalog import PRECISIONS, TORCH

if TYPE_CHECKING:
    from .runtime import Runtime


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
    """How a method runs the network's forward passes: under autocast, compiled where allowed, or by a
    converted `runtime` where no gradient is needed.

    `torch_reason`: why torch runs the passes without gradient (`resolve_runtime`'s), for the summary.
    """

    def __init__(
        self, *, device_type: str, precision: str, compile: bool, runtime: Runtime | None = None, torch_reason: str = ""
    ):
        dtype_name = PRECISIONS[precision]
        self.device_type = device_type
        self.precision = precision
        self.dtype = getattr(torch, dtype_name) if dtype_name else None
        self.compile = compile
        self.runtime = runtime
        self.torch_reason = torch_reason
        self.passes: Counter[str] = Counter()  # forward passes without gradient, by who ran them
        self._compiled: dict[int, nn.Module] = {}

    def autocast(self) -> AbstractContextManager:
        """The autocast region of a forward pass (a no-op at fp32)."""
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def forward(self, module: nn.Module, x: torch.Tensor, *, hooked: bool = False) -> torch.Tensor | tuple:
        """`module(x)`: by the runtime when grad mode is off, else under autocast; with `compile`, through its
        compiled graph, unless the pass is `hooked` (it taps a layer: see the module doc).
        """
        if not torch.is_grad_enabled():
            out = self.runtime.run(module, x) if self.runtime is not None else None
            self.passes[self.runtime.label if out is not None else f"{TORCH} {torch.__version__}"] += 1
            if out is not None:
                return out
        with self.autocast():
            return module(x) if hooked else self._module(module)(x)

    def _module(self, module: nn.Module) -> nn.Module:
        if not self.compile:
            return module
        if id(module) not in self._compiled:
            self._compiled[id(module)] = torch.compile(module)
        return self._compiled[id(module)]

    def summary(self) -> str:
        """Which runtime ran what, in a line: the passes without gradient by runtime, and torch for the rest."""
        on_torch = f"{TORCH} {torch.__version__}"
        reason = f" ({self.torch_reason})" if self.torch_reason else ""
        if set(self.passes) <= {on_torch}:
            return f"{on_torch} ran every pass{reason}"
        ran = [
            f"{label} ran {n} forward pass{'' if n == 1 else 'es'} without gradient" for label, n in self.passes.items()
        ]
        return "; ".join([*ran, f"{on_torch} the rest (maps, statistics, gradients)"]) + reason

    def __repr__(self) -> str:
        runtime = f", runtime={self.runtime.label!r}" if self.runtime is not None else ""
        return f"Execution({self.device_type!r}, precision={self.precision!r}, compile={self.compile}{runtime})"
