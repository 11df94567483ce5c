"""Map methods: exact CAM, the gradient family, Score-CAM and Eigen-CAM, behind one interface.

    from cambatch.methods import GradCAM
    method = GradCAM(network)                  # target layer found with one dummy forward pass
    maps = method(images, topk=3)              # ClassMaps for the top-3 classes of every image
    maps.maps.shape                            # [B, 3, h, w], raw and signed

`build_method` is what the engine uses: it maps a `--method` name (or `auto`) onto a method bound
to a loaded `CamModel`.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from ..models import CamModel
from .activation import CAM, EigenCAM, ScoreCAM
from .base import CamMethod
from .faithfulness import FAITHFULNESS_COLUMNS, FaithfulnessTally, faithfulness_scores
from .gradient import GradCAM, GradCAMpp, GradientMethod, LayerCAM, XGradCAM
from .layers import TargetLayer, TokenGrid, locate_layer

METHODS: dict[str, type[CamMethod]] = {
    cls.name: cls for cls in (CAM, GradCAM, GradCAMpp, XGradCAM, LayerCAM, ScoreCAM, EigenCAM)
}
METHOD_CHOICES = (*METHODS, "auto")
SCORECAM_BATCH = {"cuda": 256}  # masked images per forward pass, by device type; 32 elsewhere


def resolve_method_name(name: str, model: CamModel, layer: str | None = None) -> str:
    """`auto` is `cam` where the model's head allows it (and no --layer is asked for), else `gradcam`."""
    if name not in METHOD_CHOICES:
        raise UsageError(f"unknown method {name!r}; choose from {', '.join(METHOD_CHOICES)}")
    if name == "auto":
        return "cam" if model.head is not None and layer is None else "gradcam"
    return name


def build_method(name: str, model: CamModel, layer: str | None = None, scorecam_batch: int | None = None) -> CamMethod:
    """The method `name` bound to `model` (already on its device) and to `layer` (or the automatic one)."""
    name = resolve_method_name(name, model, layer)
    if name == "cam":
        if layer is not None:
            raise UsageError("--layer is for the other methods: cam weighs the layer that feeds the pooled linear head")
        return CAM(model)
    if name == "scorecam":
        device = next((p.device for p in model.network.parameters()), torch.device("cpu"))
        batch = scorecam_batch or SCORECAM_BATCH.get(device.type, 32)
        return ScoreCAM(model.network, layer, model.input_size, batch_size=batch)
    return METHODS[name](model.network, layer, model.input_size)


__all__ = [
    "CAM", "METHODS", "METHOD_CHOICES", "FAITHFULNESS_COLUMNS", "CamMethod", "EigenCAM", "FaithfulnessTally",
    "GradCAM", "GradCAMpp", "GradientMethod", "LayerCAM", "ScoreCAM", "TargetLayer", "TokenGrid", "XGradCAM",
    "build_method", "faithfulness_scores", "locate_layer", "resolve_method_name",
]  # fmt: skip
