"""Where the spatial grid is in a layer's output: `[B, C, h, w]`, `[B, h, w, C]` or a token sequence.

CNNs give channels-first maps; timm's Swin, MaxViT and ConvNeXt blocks give channels-last ones;
vision transformers give tokens. Nothing is assumed from the model's family: a layer's layout is
read off its output shape in a dummy pass on a square input (the grid's two sides are equal
there, and no larger than the input), and where two layouts fit one shape (`[B, 7, 7, 7]`, or
tokens whose count and width are both squares) a second pass on a non-square input, or else the
module's type, decides. A layout that stays undecided is refused: a transposed map looks like a
map, so guessing would be silently wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

CHANNELS_FIRST = "channels_first"  # [B, C, h, w]
CHANNELS_LAST = "channels_last"  # [B, h, w, C]
TOKENS = "tokens"  # [B, prefix + h*w, C]
AMBIGUOUS = "ambiguous"  # more than one of the above fits the shape

# Modules whose output keeps their input's channel axis where it is: the axis they act on.
_ACT_ON_DIM1 = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.GroupNorm)
_ACT_ON_LAST_DIM = (nn.Linear, nn.LayerNorm)


@dataclass(frozen=True)
class TokenGrid:
    """How tokens map onto a patch grid: drop `prefix` tokens (class, distillation, registers),
    lay the remaining `height * width` tokens out row by row.
    """

    prefix: int
    height: int
    width: int

    def fits(self, shape: torch.Size) -> bool:
        return len(shape) == 3 and shape[1] == self.prefix + self.height * self.width

    def __call__(self, tokens: Tensor) -> Tensor:
        """[B, prefix + h*w, D] -> [B, D, h, w]."""
        batch, _, dim = tokens.shape
        return tokens[:, self.prefix :].reshape(batch, self.height, self.width, dim).permute(0, 3, 1, 2)


def square_tokens(count: int, input_size: int) -> TokenGrid | None:
    """The square grid `count` tokens (no prefix) fill, e.g. Swin's 49 tokens of a 7 x 7 window; None if none does."""
    side = math.isqrt(count)
    return TokenGrid(0, side, side) if side > 1 and side * side == count and side <= input_size else None


def layout_of(shape: torch.Size, input_size: int, tokens: TokenGrid | None = None) -> str | None:
    """The layout(s) of a spatial grid that fit `shape`, the output of a dummy pass of one image
    `input_size` x `input_size`; None when no grid (larger than 1 x 1) fits. `tokens`: a ViT's
    patch grid (with its prefix), else token sequences must fill a square grid by themselves.
    """
    if len(shape) not in (3, 4) or shape[0] != 1:
        return None
    if len(shape) == 4:
        first = 1 < shape[2] == shape[3] <= input_size
        last = 1 < shape[1] == shape[2] <= input_size
        return AMBIGUOUS if first and last else CHANNELS_FIRST if first else CHANNELS_LAST if last else None
    if tokens is not None:
        return TOKENS if tokens.fits(shape) else None
    if square_tokens(shape[1], input_size) is None:
        return None
    return AMBIGUOUS if square_tokens(shape[2], input_size) is not None else TOKENS  # [B, C, h*w] fits too


def layout_from_wider(square: torch.Size, wider: torch.Size) -> str | None:
    """The layout told by which axis grew when the input grew wider (None: it did not tell)."""
    if len(square) != len(wider):
        return None
    grew = [axis for axis in range(1, len(square)) if wider[axis] > square[axis]]
    if len(square) == 4:
        return {(3,): CHANNELS_FIRST, (2,): CHANNELS_LAST}.get(tuple(grew))
    return TOKENS if grew == [1] else None  # tokens on the last axis ([B, C, h*w]) are not a layout we read


def layout_from_module(module: nn.Module, shape: torch.Size) -> str | None:
    """The layout told by the kind of module (None: it does not tell). Exact types: timm's
    `LayerNorm2d` subclasses `nn.LayerNorm` but normalizes the channels of a channels-first map.
    """
    if type(module) in _ACT_ON_LAST_DIM:
        return CHANNELS_LAST if len(shape) == 4 else TOKENS
    if type(module) in _ACT_ON_DIM1 and len(shape) == 4:
        return CHANNELS_FIRST
    return None


def to_channels_first(output: Tensor, layout: str, tokens: TokenGrid | None = None) -> Tensor:
    """A layer's output (or a gradient of the same shape) in `layout`, as [B, C, h, w]."""
    if layout == TOKENS:
        return tokens(output)
    if layout == CHANNELS_LAST:
        return output.permute(0, 3, 1, 2)
    return output
