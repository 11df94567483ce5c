"""EfficientNet-Lite0, the default model, in plain torch.nn: module for module timm's
`tf_efficientnet_lite0` (the same module names, state-dict keys, TensorFlow 'same' padding and
weight-init scheme), so a timm checkpoint loads as it is and layers keep timm's names (`bn2`, `blocks.5.3`).

Why not timm itself: importing timm imports torchvision, whose `ops` import torch._dynamo. That is
1.5 s of the start-up of every run with the default model, which never uses any of it
(docs/performance-runtime.md). `tests/test_model_lite0.py` holds this module to timm's: the same
keys in the same order, the same logits from the same weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# EfficientNet-Lite0's stages, as timm's arch_def: block kind ("ds" depthwise-separable, "ir"
# inverted residual), repeats, kernel, first stride, expansion, output channels.
STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280  # Lite keeps the stem and the head fixed
BN_EPS = 1e-3  # TensorFlow's
DROP_RATE = 0.2  # before the classifier, in training mode only


class Conv2dSame(nn.Conv2d):
    """A strided convolution with TensorFlow's 'same' padding: worked out from the input's size,
    the odd pixel going to the bottom and the right (what the ported weights were trained with).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A convolution as timm's `create_conv2d` makes one for tf_ models: a static symmetric pad at
    stride 1, 'same' when strided.
    """
    if stride > 1:
        return Conv2dSame(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """Batch norm, then its activation (timm's `BatchNormAct2d`: one module, so `bn2` names the map
    after ReLU6, as with timm).
    """

    def __init__(self, channels: int, act: bool):
        super().__init__(channels, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparableConv(nn.Module):
    """The first stage's block: depthwise conv, then pointwise projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv_dw = _conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin, act=True)
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return y + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """MobileNetV2's block: pointwise expansion, depthwise conv, pointwise projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid, act=True)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid, act=True)
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """The network, with timm's `forward_features` / `forward_head` / `get_classifier` (which
    `cambatch.model.build` splits CAM's feature map and head by).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv_stem = _conv(3, STEM_CHANNELS, 3, 2)
        self.bn1 = BatchNormAct2d(STEM_CHANNELS, act=True)
        stages, cin = [], STEM_CHANNELS
        for kind, repeats, kernel, stride, expansion, cout in STAGES:
            blocks = []
            for i in range(repeats):
                step = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparableConv(cin, cout, kernel, step))
                else:
                    blocks.append(InvertedResidual(cin, cout, kernel, step, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, HEAD_CHANNELS, 1)
        self.bn2 = BatchNormAct2d(HEAD_CHANNELS, act=True)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        self.apply(_init_goog)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        return self.bn2(self.conv_head(self.blocks(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x.mean((2, 3)), p=DROP_RATE, training=self.training)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.classifier


def _init_goog(module: nn.Module) -> None:
    """TensorFlow's init, as timm's `_init_weight_goog` applies it, for `--weights none`: the same
    distributions as timm's module, not the same draws.
    """
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.weight.size(0))
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)
