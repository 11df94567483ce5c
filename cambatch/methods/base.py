"""The interface every map method offers the engine.

A method is bound to one network and one target layer when it is built. Called on a batch of
normalized images [B, 3, S, S] it returns a `ClassMaps`: for each image, the top-k classes (or
the chosen ones), their ranks, probabilities and logits, and raw signed maps [B, K, h, w] at the
layer's resolution. The maps are not ReLU'd nor normalized: `stats.map_statistics` and
`render.display_maps` take them as they are. Everything happens for the whole batch and all K
classes at once; the network's modes and hooks are as before when the call returns or raises.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..cam import ClassMaps
from .hooks import network_as_is
from .layers import TargetLayer, locate_layer


class CamMethod(ABC):
    """Base class: subclasses set `name` and `passes` and implement `_explain`."""

    name: ClassVar[str]
    passes: ClassVar[str]  # what one batch costs, for the README and `--help`
    class_specific: ClassVar[bool] = True  # False: one map per image, the same for all its K classes

    def __init__(self, network: nn.Module, layer: str | TargetLayer | None = None, input_size: int = 224):
        """`layer`: a dotted module path, a located `TargetLayer`, or None to find one with a
        dummy forward pass at `input_size`."""
        self.network = network
        self.target = layer if isinstance(layer, TargetLayer) else locate_layer(network, input_size, layer)

    @property
    def layer(self) -> str:
        return self.target.name

    def __call__(self, images: Tensor, topk: int, classes: Tensor | None = None) -> ClassMaps:
        """Maps of the top-`topk` classes of each image, or of `classes` (int64 [K]) for all images."""
        with network_as_is(self.network):
            return self._explain(images, topk, classes)

    @abstractmethod
    def _explain(self, images: Tensor, topk: int, classes: Tensor | None) -> ClassMaps:
        """The method proper; runs with the network in eval mode."""

    def settings(self) -> dict:
        """What a report needs to say about how its maps were made."""
        return {"method": self.name, "layer": self.layer}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"


def weighted_maps(weights: Tensor, activations: Tensor) -> Tensor:
    """sum_c weights[b, k, c] * activations[b, c] for all images and classes: [B, K, C] x [B, C, h, w] -> [B, K, h, w]."""
    return torch.einsum("bkc,bchw->bkhw", weights, activations)
