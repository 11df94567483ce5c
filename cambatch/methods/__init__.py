"""Map methods: exact CAM, the gradient family, Score-CAM and Eigen-CAM, behind one interface.

    from cambatch.methods import GradCAM
    method = GradCAM(network)                  # target layer found with one dummy forward pass
    maps = method(images, topk=3)              # ClassMaps for the top-3 classes of every image
    maps.maps.shape                            # [B, 3, h, w], raw and signed

One module per method family (`cam`, `gradient`, `scorecam`, `eigencam`), each with the formula and
the paper in its docstring; `base` (the interface and the class selection every method shares),
`hooks` and `layers` (the target layer), `statistics`, `normalize` and `faithfulness` (what is
computed from the maps), and the trust checks of docs/trust.md: `sanity` (a re-initialised model,
another class), `road` (with `imputation`) and `deletion`, which share `perturbation`. `registry`
names the methods for `--method` and builds one for a loaded model.
Nothing here imports from the run. Importing this package is cheap: names load on first use.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "CAM": "cam",
    "class_activation_maps": "cam",
    "GradCAM": "gradient",
    "GradCAMpp": "gradient",
    "XGradCAM": "gradient",
    "LayerCAM": "gradient",
    "GradientMethod": "gradient",
    "ScoreCAM": "scorecam",
    "EigenCAM": "eigencam",
    "CamMethod": "base",
    "ClassMaps": "base",
    "select_classes": "base",
    "TargetLayer": "layers",
    "TokenGrid": "layers",
    "locate_layer": "layers",
    "FaithfulnessTally": "faithfulness",
    "faithfulness_scores": "faithfulness",
    "SanityCheck": "sanity",
    "road_scores": "road",
    "deletion_insertion_scores": "deletion",
    "linear_imputation": "imputation",
    "map_statistics": "statistics",
    "METHODS": "registry",
    "METHOD_CHOICES": "registry",
    "build_method": "registry",
    "resolve_method_name": "registry",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
