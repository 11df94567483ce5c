"""`cambatch.model.grids`: the layout of a spatial grid, read off an output's shape."""

from __future__ import annotations

import torch
from torch import nn

from cambatch.model.grids import (
    AMBIGUOUS,
    CHANNELS_FIRST,
    CHANNELS_LAST,
    TOKENS,
    TokenGrid,
    layout_from_module,
    layout_from_wider,
    layout_of,
    square_tokens,
    to_channels_first,
)


def test_layout_of_each_shape():
    assert layout_of(torch.Size([1, 768, 7, 7]), 224) == CHANNELS_FIRST
    assert layout_of(torch.Size([1, 7, 7, 768]), 224) == CHANNELS_LAST  # timm Swin's norm
    assert layout_of(torch.Size([1, 7, 7, 7]), 224) == AMBIGUOUS
    assert layout_of(torch.Size([1, 49, 768]), 224) == TOKENS
    assert layout_of(torch.Size([1, 49, 49]), 224) == AMBIGUOUS  # [B, h*w, C] or [B, C, h*w]
    assert layout_of(torch.Size([1, 197, 192]), 224, TokenGrid(1, 14, 14)) == TOKENS
    assert layout_of(torch.Size([4, 768, 7, 7]), 224) is None  # not the probe's one image (Swin's windows)
    assert layout_of(torch.Size([1, 768, 1, 1]), 224) is None
    assert layout_of(torch.Size([1, 1000]), 224) is None


def test_the_axis_that_grows_with_a_wider_input_tells_the_layout():
    assert layout_from_wider(torch.Size([1, 7, 7, 7]), torch.Size([1, 7, 7, 14])) == CHANNELS_FIRST
    assert layout_from_wider(torch.Size([1, 7, 7, 7]), torch.Size([1, 7, 14, 7])) == CHANNELS_LAST
    assert layout_from_wider(torch.Size([1, 49, 49]), torch.Size([1, 98, 49])) == TOKENS
    assert layout_from_wider(torch.Size([1, 49, 49]), torch.Size([1, 49, 98])) is None  # [B, C, h*w]
    assert layout_from_wider(torch.Size([1, 7, 7, 7]), torch.Size([1, 7, 7, 7])) is None


def test_module_types_that_tell_the_layout():
    assert layout_from_module(nn.LayerNorm(7), torch.Size([1, 7, 7, 7])) == CHANNELS_LAST
    assert layout_from_module(nn.Linear(7, 7), torch.Size([1, 49, 49])) == TOKENS
    assert layout_from_module(nn.Conv2d(3, 7, 1), torch.Size([1, 7, 7, 7])) == CHANNELS_FIRST
    assert layout_from_module(nn.Identity(), torch.Size([1, 7, 7, 7])) is None

    class LayerNorm2d(nn.LayerNorm):  # timm's: a LayerNorm subclass over the channels of [B, C, h, w]
        pass

    assert layout_from_module(LayerNorm2d(7), torch.Size([1, 7, 7, 7])) is None


def test_every_layout_comes_back_channels_first():
    grid = torch.randn(2, 5, 3, 3)
    assert torch.equal(to_channels_first(grid, CHANNELS_FIRST), grid)
    assert torch.equal(to_channels_first(grid.permute(0, 2, 3, 1), CHANNELS_LAST), grid)
    tokens = grid.flatten(2).transpose(1, 2)  # [B, 9, 5], row-major
    assert torch.equal(to_channels_first(tokens, TOKENS, square_tokens(9, 32)), grid)
    assert square_tokens(10, 32) is None and square_tokens(1, 32) is None
