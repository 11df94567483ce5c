"""`cambatch.methods.layers`: the target layer, found with one dummy forward pass or named and checked."""

from __future__ import annotations

import pytest
import torch
from methods_support import TinyNet, bind
from torch import nn

from cambatch.errors import UsageError
from cambatch.methods import TokenGrid, locate_layer
from cambatch.methods.layers import has_grid, probe_layers, token_grid
from cambatch.model.build import load_model


def test_a_failing_layer_search_leaves_no_hook():
    net = TinyNet()
    with pytest.raises(UsageError, match="dummy forward pass at 8x8 failed"):
        locate_layer(nn.Sequential(net, nn.Linear(3, 3)), 8)
    assert all(not m._forward_hooks for m in net.modules())


def test_target_layers_found_automatically(default_model, resnet18, vit):
    torch.manual_seed(0)
    mobilenet = load_model("mobilenet_v3_small", "none", require_cam_head=False)
    assert bind("gradcam", default_model).layer == "bn2"
    assert bind("gradcam", resnet18).layer == "layer4"
    assert bind("gradcam", mobilenet).layer == "features"
    vit_method = bind("gradcam", vit)
    assert vit_method.layer == "blocks.11.norm1"
    assert vit_method.target.tokens == TokenGrid(prefix=1, height=14, width=14)
    assert bind("cam", default_model).layer == "forward_features"
    assert bind("cam", resnet18).layer == "layer4"


def test_layer_override_and_wrong_names(resnet18, resnet_images):
    explain = bind("gradcam", resnet18, layer="layer3")
    assert explain(resnet_images[:1], 1).maps.shape == (1, 1, 14, 14)
    with pytest.raises(UsageError) as wrong:
        bind("gradcam", resnet18, layer="layer5")
    message = str(wrong.value)
    assert "unknown layer 'layer5'" in message and "did you mean" in message and "layer4 [512, 7, 7]" in message
    with pytest.raises(UsageError, match=r"layer 'fc' outputs shape \(1, 1000\): no spatial grid"):
        bind("gradcam", resnet18, layer="fc")
    with pytest.raises(UsageError, match="is for the other methods"):
        bind("cam", resnet18, layer="layer4")


def test_token_grid_drops_prefix_tokens_and_keeps_row_major_patch_order():
    grid = TokenGrid(prefix=2, height=2, width=3)
    tokens = torch.arange(1 * 8 * 4, dtype=torch.float32).reshape(1, 8, 4)
    out = grid(tokens)
    assert out.shape == (1, 4, 2, 3)
    assert torch.equal(out[0, :, 1, 2], tokens[0, 2 + 1 * 3 + 2])  # patch (row 1, col 2)


def test_probe_lists_every_layer_in_the_order_it_finished():
    net = TinyNet().train()
    outputs = probe_layers(net, 32)
    assert [o.name for o in outputs] == ["body.0", "body.1", "body.2", "body.3", "body", "pool", "fc"]
    assert outputs[2].shape == (1, 16, 16, 16) and outputs[-1].shape == (1, 5)
    assert net.training and all(not m._forward_hooks for m in net.modules())  # as it was


def test_the_last_layer_with_a_grid_is_chosen_and_a_named_one_is_kept():
    net = TinyNet()
    target = locate_layer(net, 32)
    assert target.name == "body" and target.module is net.body and target.tokens is None
    chosen = locate_layer(net, 32, "body.0")
    assert chosen.name == "body.0" and chosen.module is net.body[0]
    with pytest.raises(UsageError, match=r"layer 'pool' outputs shape \(1, 16, 1, 1\): no spatial grid"):
        locate_layer(net, 32, "pool")


def test_a_model_without_any_spatial_layer_is_refused():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with pytest.raises(UsageError, match="no layer of this model outputs a spatial feature map; give --layer"):
        locate_layer(mlp, 4)


def test_has_grid():
    tokens = TokenGrid(prefix=1, height=2, width=2)
    assert has_grid(torch.Size([1, 8, 2, 2]), 32) and has_grid(torch.Size([1, 2, 2, 8]), 32)  # first / last
    assert not has_grid(torch.Size([1, 8, 2, 3]), 32)  # a square input gives a square grid
    assert not has_grid(torch.Size([1, 8, 1, 1]), 32) and not has_grid(torch.Size([1, 8, 64, 64]), 32)
    assert has_grid(torch.Size([1, 5, 16]), 32, tokens) and not has_grid(torch.Size([1, 4, 16]), 32, tokens)
    assert not has_grid(torch.Size([1, 5, 16]), 32)  # 5 tokens fill no square grid
    assert has_grid(torch.Size([1, 49, 768]), 224)  # a Swin window's tokens: 7 x 7


class Permute(nn.Module):
    """Channels-first to channels-last, the way timm's Swin and ConvNeXt blocks do inside forward()."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class SquareOnly(nn.Module):
    """A model built for square inputs only (as Swin's windows are): a wider probe fails."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 7, 4, stride=4), *layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError("square inputs only")
        return self.body(x).flatten(1)


def test_a_map_as_wide_as_it_has_channels_is_settled_by_a_wider_input():
    # At 28 px both nets output [1, 7, 7, 7]: channels-first and channels-last fit alike.
    first = nn.Sequential(nn.Conv2d(3, 7, 4, stride=4), nn.Identity(), nn.Flatten())
    last = nn.Sequential(nn.Conv2d(3, 7, 4, stride=4), Permute(), nn.Flatten())
    assert locate_layer(first, 28, "1").layout == "channels_first"
    target = locate_layer(last, 28, "1")
    assert target.layout == "channels_last"
    x = torch.randn(1, 3, 28, 28)
    torch.testing.assert_close(target.to_grid(last[1](last[0](x))), last[0](x))  # back to the conv's own map


def test_a_square_only_model_settles_the_layout_by_the_module_type_or_refuses():
    by_type = SquareOnly(Permute(), nn.LayerNorm(7))  # LayerNorm normalizes the last axis: the channels
    assert locate_layer(by_type, 28, "body.2").layout == "channels_last"
    assert locate_layer(by_type, 28, "body.0").layout == "channels_first"  # a Conv2d's output
    unknown = SquareOnly(Permute(), nn.Identity())
    with pytest.raises(UsageError, match=r"'body.2' outputs shape \(1, 7, 7, 7\), which reads as channels-first"):
        locate_layer(unknown, 28, "body.2")
    with pytest.raises(UsageError, match="give another --layer"):
        locate_layer(unknown, 28)  # the automatic choice is the same layer: refused, not guessed


def test_token_grid_of_a_vit_and_none_for_a_cnn(vit):
    assert token_grid(vit.network) == TokenGrid(prefix=1, height=14, width=14)
    assert token_grid(TinyNet()) is None


def test_the_candidates_listing_is_cut_to_the_last_twelve():
    deep = nn.Sequential(*[nn.Conv2d(3, 3, 1) for _ in range(15)], nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(UsageError) as wrong:
        locate_layer(deep, 8, "nope")
    message = str(wrong.value)
    assert "last first: 14 [3, 8, 8], 13 [3, 8, 8]" in message and "... (3 earlier)" in message
