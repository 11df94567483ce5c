"""Class Activation Maps (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016).

For a global-average-pool -> linear head, logit_c = b_c + w_c . mean_hw(F), with F the last feature
map [C, h, w], so the map M_c = sum_k w_ck F_k satisfies mean_hw(M_c) + b_c = logit_c exactly: the
map is the logit spread over space. One forward pass, then the maps of all K classes of all B
images in one einsum with the gathered rows of the head's weight: no backward pass, no loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import UsageError
from ..model.accel import Execution
from .base import CamMethod, ClassMaps, select_classes, weighted_maps

if TYPE_CHECKING:
    from ..model.build import CamModel


class CAM(CamMethod):
    """CAM, exactly. Bound to a `CamModel` whose head `load_model` has proven to be GAP -> linear;
    the layer is the one that feeds that pooling, and cannot be chosen.
    """

    name = "cam"
    passes = "1 forward"
    compile_refusal = None

    def __init__(self, model: CamModel, *, execution: Execution, activation: str):  # noqa: D107 - the model's split fixes the layer
        if model.head is None or model.features is None:
            raise UsageError(model.cam_refusal or f"{model.name}: CAM needs a global-average-pool -> linear head")
        self.model = model
        self.network = model.network
        self.execution = execution
        self.activation = activation
        self._check_execution()
        self.target = None

    @property
    def layer(self) -> str:
        return self.model.feature_layer

    @torch.inference_mode()
    def _explain(self, images: Tensor, topk: int, classes: Tensor | None, extra: Tensor | None) -> ClassMaps:
        return class_activation_maps(
            self.model, images, topk, classes, extra, execution=self.execution, activation=self.activation
        )


def class_activation_maps(
    model: CamModel,
    images: Tensor,
    topk: int,
    classes: Tensor | None = None,
    extra: Tensor | None = None,
    *,
    execution: Execution,
    activation: str,
) -> ClassMaps:
    """One forward pass, then the maps of the top-k classes (or of `classes`, int64 [K]; `extra`: see
    `select_classes`) in one einsum.

    `images` are normalized model inputs [B, 3, S, S]. The feature extractor runs through
    `execution` (autocast, compilation); the head and the maps are computed in float32.
    """
    feature_map = execution.forward(model.features, images).float()
    logits = model.head(feature_map.mean((2, 3)))
    selection = select_classes(logits, topk, classes, extra, activation=activation)
    maps = weighted_maps(model.head.weight[selection.class_index], feature_map)
    return selection.with_maps(maps, feature_map)
