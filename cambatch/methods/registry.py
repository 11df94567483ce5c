"""The map methods by name: what `--method` accepts, without importing torch.

Each entry names the class that implements it (loaded on first use by `build_method`). Adding a
method: a module in this package with a `CamMethod` subclass, and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class MethodEntry:
    """Where a method's class lives."""

    module: str  # in cambatch.methods
    cls: str


METHODS: dict[str, MethodEntry] = {
    "cam": MethodEntry("cam", "CAM"),
    "gradcam": MethodEntry("gradient", "GradCAM"),
    "gradcampp": MethodEntry("gradient", "GradCAMpp"),
    "xgradcam": MethodEntry("gradient", "XGradCAM"),
    "layercam": MethodEntry("gradient", "LayerCAM"),
    "scorecam": MethodEntry("scorecam", "ScoreCAM"),
    "eigencam": MethodEntry("eigencam", "EigenCAM"),
}
AUTO = "auto"  # cam where the model's head allows it, else gradcam
METHOD_CHOICES = (*METHODS, AUTO)


def method_class(name: str) -> type:
    """The `CamMethod` subclass registered as `name`."""
    entry = METHODS[name]
    return getattr(import_module(f"{__package__}.{entry.module}"), entry.cls)


SCORECAM_BATCH = {"cuda": 256}  # masked images per forward pass, by device type; 32 elsewhere


def resolve_method_name(name: str, model, layer: str | None = None) -> str:
    """`auto` is `cam` where the model's head allows it (and no layer is asked for), else `gradcam`."""
    if name == AUTO:
        return "cam" if model.head is not None and layer is None else "gradcam"
    return name


def build_method(
    name: str,
    model,
    *,
    layer: str | None,
    scorecam_batch: int | None,
    execution,
    activation: str,
):
    """The method `name` (or `auto`) bound to a loaded `CamModel` (already on its device) and `layer`.

    `execution` (a `cambatch.model.accel.Execution`) sets precision and compilation;
    `activation` (softmax or sigmoid) how the logits become the probabilities reported.
    """
    name = resolve_method_name(name, model, layer)
    cls = method_class(name)
    if name == "cam":
        if layer is not None:
            from ..errors import UsageError

            raise UsageError(
                "layer (--layer) is for the other methods: cam weighs the layer that feeds the pooled linear head"
            )
        return cls(model, execution=execution, activation=activation)
    options = {"execution": execution, "activation": activation}
    if name == "scorecam":
        options["batch_size"] = scorecam_batch or SCORECAM_BATCH.get(execution.device_type, 32)
    return cls(model.network, layer, model.input_size, **options)
