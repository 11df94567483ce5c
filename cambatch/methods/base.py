"""The interface every map method offers the engine, and the parts all of them share.

A method is bound to one network and one target layer when it is built. Called on a batch of
normalized images [B, 3, S, S] it returns a `ClassMaps`: for each image, the top-k classes (or
the chosen ones), their ranks, probabilities and logits, and raw signed maps [B, K, h, w] at the
layer's resolution. The maps are not ReLU'd nor normalized: `statistics.map_statistics` and
`normalize.display_maps` take them as they are. Everything happens for the whole batch and all K
classes at once; the network's modes and hooks are as before when the call returns or raises.
Forward passes run through an `Execution` (precision, compilation, a converted runtime where no gradient flows).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..model.accel import Execution
from ..model.catalog import MULTI_LABEL
from .hooks import TappedNetwork, TargetLayer, network_as_is
from .layers import locate_layer


@dataclass
class ClassMaps:
    """Maps and scores of K classes for each of B images (all tensors on the model's device)."""

    class_index: torch.Tensor  # int64 [B, K]
    rank: torch.Tensor  # int64 [B, K]; 1 = the image's top prediction
    probability: torch.Tensor  # float32 [B, K], softmax over all classes, or the sigmoid of the logit
    logit: torch.Tensor  # float32 [B, K]
    scores: torch.Tensor  # float32 [B, N]: the probability of every class (a multi-label run's predicted set)
    maps: torch.Tensor  # float32 [B, K, h, w], raw (signed, not normalized)
    # bool [B, K]: False where a column only stands in (an `extra` class already explained, or none); None: all kept
    kept: torch.Tensor | None = None
    # float32 [B, C]: each image's target-layer activations averaged over space (for `cam`, the head's input);
    # the image's embedding (`--embeddings`)
    pooled: torch.Tensor | None = None


class Selection(NamedTuple):
    """The classes explained in each image, and their scores: a `ClassMaps` without its maps."""

    class_index: Tensor
    rank: Tensor
    probability: Tensor
    logit: Tensor
    scores: Tensor
    kept: Tensor | None = None  # see `ClassMaps.kept`

    def with_maps(self, maps: Tensor, activations: Tensor) -> ClassMaps:
        """These classes with their maps [B, K, h, w], and the images' pooled `activations` [B, C, h, w]."""
        pooled = activations.detach().float().mean((2, 3))
        return ClassMaps(
            self.class_index, self.rank, self.probability, self.logit, self.scores, maps, self.kept, pooled
        )


def probabilities(logits: Tensor, activation: str) -> Tensor:
    """Logits [B, N] as probabilities: softmax over the classes, or each logit's sigmoid (multi-label)."""
    return logits.float().sigmoid() if activation == MULTI_LABEL else logits.float().softmax(1)


def select_classes(
    logits: Tensor,
    topk: int,
    classes: Tensor | None = None,
    extra: Tensor | None = None,
    *,
    activation: str,
) -> Selection:
    """The classes to explain in each image, from logits [B, N].

    Each image's top-k classes by logit (the order of either activation), or `classes` (int64 [K])
    for every image with their ranks among all N classes. `extra` (int64 [B], -1 for none;
    `--explain-label`) adds one column per image with that class at its true rank; where it is -1 or
    already explained, the column repeats the first class and `kept` (bool [B, K]) is False there, so
    the whole batch keeps one shape. Every method picks its classes here, so all of them explain the
    same ones.
    """
    logits = logits.detach().float()
    if classes is None:
        class_index = logits.topk(min(topk, logits.shape[1]), dim=1).indices
    else:
        class_index = classes.to(logits.device).expand(logits.shape[0], -1)
    kept = None
    if extra is not None:
        extra = extra.to(logits.device)
        new = (extra >= 0) & (class_index != extra[:, None]).all(1)
        added = torch.where(new, extra, class_index[:, 0])
        class_index = torch.cat([class_index, added[:, None]], 1)
        kept = torch.cat([torch.ones_like(class_index[:, 1:], dtype=torch.bool), new[:, None]], 1)
    logit = logits.gather(1, class_index)
    rank = (logits[:, None, :] > logit[:, :, None]).sum(2) + 1
    if classes is None:  # the top-k by position, as `topk` ordered them (ties keep distinct ranks)
        k = min(topk, logits.shape[1])
        rank[:, :k] = torch.arange(1, k + 1, device=logits.device)
    scores = probabilities(logits, activation)
    return Selection(class_index, rank, scores.gather(1, class_index), logit, scores, kept)


def weighted_maps(weights: Tensor, activations: Tensor) -> Tensor:
    """sum_c weights[b, k, c] * activations[b, c]: [B, K, C] x [B, C, h, w] -> [B, K, h, w], in float32."""
    return torch.einsum("bkc,bchw->bkhw", weights.float(), activations.float())


class CamMethod(ABC):
    """Base class: subclasses set `name` and `passes` and implement `_explain`.

    `compile_refusal`: why `Execution.compile` cannot apply (None where it can); see `cambatch.model.accel`.
    """

    name: ClassVar[str]
    passes: ClassVar[str]  # what one batch costs (docs/methods.md's table says the same)
    class_specific: ClassVar[bool] = True  # False: one map per image, the same for all its K classes
    needs_gradient: ClassVar[bool] = False  # True: its passes run on torch, whatever the runtime
    compile_refusal: ClassVar[str | None] = (
        "every forward pass hooks the target layer, and a compiled graph skips such hooks"
    )

    def __init__(
        self,
        network: nn.Module,
        layer: str | TargetLayer | None = None,
        input_size: int = 224,
        *,
        execution: Execution,
        activation: str,
    ):
        """`layer`: a dotted module path, a located `TargetLayer`, or None to find one with a
        dummy forward pass at `input_size`; `execution`: precision and compilation;
        `activation`: how logits become the probabilities reported (`cambatch.model.catalog.ACTIVATIONS`).
        """
        self.network = network
        self.execution = execution
        self.activation = activation
        self._check_execution()
        self.target = layer if isinstance(layer, TargetLayer) else locate_layer(network, input_size, layer)
        self._tapped = TappedNetwork(network, self.target)

    def _check_execution(self) -> None:
        if self.execution.compile and self.compile_refusal:
            raise UsageError(
                f"compile (--compile) does not apply to {self.name}: {self.compile_refusal}; run it without"
            )

    @property
    def layer(self) -> str:
        return self.target.name

    def __call__(
        self, images: Tensor, topk: int, classes: Tensor | None = None, extra: Tensor | None = None
    ) -> ClassMaps:
        """Maps of the top-`topk` classes of each image, or of `classes` (int64 [K]) for all images;
        `extra` (int64 [B], -1 for none) adds one class per image (see `select_classes`).
        """
        with network_as_is(self.network):
            return self._explain(images, topk, classes, extra)

    @abstractmethod
    def _explain(self, images: Tensor, topk: int, classes: Tensor | None, extra: Tensor | None) -> ClassMaps:
        """The method proper; runs with the network in eval mode."""

    def _tapped_forward(
        self, images: Tensor, topk: int, classes: Tensor | None, extra: Tensor | None
    ) -> tuple[Selection, Tensor]:
        """One forward pass (no gradient) with the target layer tapped: the `Selection`, and the
        layer's activations as float32 [B, C, h, w].
        """
        logits, raw = self.execution.forward(self._tapped, images, hooked=True)
        selection = select_classes(logits, topk, classes, extra, activation=self.activation)
        return selection, self.target.to_grid(raw).float()

    def settings(self) -> dict:
        """What a report needs to say about how its maps were made."""
        return {"method": self.name, "layer": self.layer}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer!r})"
