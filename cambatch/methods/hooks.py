"""Hooks that never outlive their use, and a network left exactly as it was found.

The reference libraries' most reported silent bugs are hooks left on the model after an error
and models switched to eval mode for good. Here every hook lives inside a `with` block that
removes it on the way out, whatever happens, and `network_as_is` restores each module's
training flag and the thread's grad mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..model.grids import CHANNELS_FIRST, TokenGrid, to_channels_first


@dataclass(frozen=True)
class TargetLayer:
    """The module a method hooks, and how its output becomes a [B, C, h, w] map."""

    name: str  # dotted path in `network.named_modules()`
    module: nn.Module
    tokens: TokenGrid | None = None  # set when the layer outputs tokens
    layout: str = CHANNELS_FIRST  # `grids.CHANNELS_FIRST`, `CHANNELS_LAST` or `TOKENS`

    def to_grid(self, output: Tensor) -> Tensor:
        """The layer's output (or a gradient of the same shape) as [B, C, h, w]."""
        return to_channels_first(output, self.layout, self.tokens)


@contextmanager
def network_as_is(network: nn.Module) -> Iterator[None]:
    """Run `network` in eval mode inside the block; afterwards every module's mode and the grad mode are as before."""
    # A network already in eval mode, as every run's is, is left untouched: `eval()` sets each module's mode
    # through nn.Module.__setattr__, and with the restore that took 1.0 ms a batch of the default model (0.1 now).
    training = [module for module in network.modules() if module.training]
    grad_enabled = torch.is_grad_enabled()
    try:
        if training:
            network.eval()
        yield
    finally:
        for module in training:
            module.training = True
        torch.set_grad_enabled(grad_enabled)


class ActivationTap:
    """A forward hook on one layer for the duration of a `with` block; removed on exit, even on error.

    With `grad_from_here`, the layer's output is replaced by a detached copy that requires grad,
    and grad mode is switched on for the rest of the forward pass: run the forward under
    `torch.no_grad()` and only the layers after the target build an autograd graph, so backward
    passes are short, no parameter gradient is ever computed and no `.grad` is touched.
    """

    def __init__(self, target: TargetLayer, grad_from_here: bool = False):
        self.target = target
        self.grad_from_here = grad_from_here
        self.output: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def __enter__(self) -> ActivationTap:
        self._handle = self.target.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, _module: nn.Module, _inputs: tuple, output: object) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise UsageError(f"layer {self.target.name!r} returns {type(output).__name__}, not a tensor")
        if not self.grad_from_here:
            self.output = output.detach()
            return None
        # A fresh leaf: gradients stop here, and in-place ops further on cannot change it.
        self.output = output.detach().clone().requires_grad_(True)
        torch.set_grad_enabled(True)
        return self.output


def forward_with_tap(
    network: nn.Module, images: Tensor, target: TargetLayer, grad_from_here: bool = False
) -> tuple[Tensor, Tensor]:
    """One forward pass of `network` (already in eval mode): its logits [B, N] and the target layer's raw output.

    The caller restores grad mode (see `network_as_is`): with `grad_from_here` it stays on after the pass.
    """
    with ActivationTap(target, grad_from_here) as tap:
        if grad_from_here:
            torch.set_grad_enabled(False)
        logits = network(images)
    if tap.output is None:
        raise UsageError(f"layer {target.name!r} did not run in the forward pass")
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise UsageError("the model's output is not a [batch, classes] tensor of logits")
    return logits, tap.output


class TappedNetwork(nn.Module):
    """`network` and its target layer as one module: images in, (logits, the layer's raw output) out.

    What the methods that read a layer without a gradient (eigencam, scorecam's first pass) run
    through `Execution.forward`, so that a converted runtime runs the network and the tap as one graph.
    """

    def __init__(self, network: nn.Module, target: TargetLayer):
        super().__init__()
        self.network = network
        self.target = target  # not a submodule of this one: its module is inside `network`

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return forward_with_tap(self.network, images, self.target)

    def extra_repr(self) -> str:
        return f"target={self.target.name!r}"
