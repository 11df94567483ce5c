"""`cambatch.methods.scorecam`: Score-CAM as defined, with constant channels scored once per batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from methods_support import bind, tiny_model


def with_constant_channels(seed: int):
    """The tiny model with channels 0 and 1 of its target layer constant on every image (0 and 0.5)."""
    model = tiny_model(seed=seed)
    conv = model.network.body[2]
    with torch.no_grad():
        conv.weight[:2] = 0
        conv.bias[0], conv.bias[1] = -1.0, 0.5
    return model


def naive_scorecam(model, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Score-CAM written out one image and one channel at a time (a constant channel masks to zero)."""
    net = model.network
    with torch.no_grad():
        activations = net.body(images)
        maps = []
        for b in range(images.shape[0]):
            scores = []
            for channel in activations[b]:
                span = channel.max() - channel.min()
                mask = (channel - channel.min()) / span if span > 0 else torch.zeros_like(channel)
                mask = F.interpolate(mask[None, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
                scores.append(net(images[b : b + 1] * mask[0])[0, class_index[b]])
            weights = torch.stack(scores, 1).softmax(1)  # [K, C]
            maps.append(torch.einsum("kc,chw->khw", weights, activations[b]))
    return torch.stack(maps)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_scorecam_follows_its_definition(batch_size):
    model = with_constant_channels(seed=11)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    cams = bind("scorecam", model, scorecam_batch=batch_size)(images, 2)
    assert cams.maps.shape == (3, 2, 16, 16)
    torch.testing.assert_close(cams.maps, naive_scorecam(model, images, cams.class_index), atol=1e-5, rtol=1e-4)


def test_only_varying_channels_are_forwarded():
    model = with_constant_channels(seed=11)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        activations = model.network.body(images)
    varying = int((activations.amax((2, 3)) > activations.amin((2, 3))).sum())
    assert varying <= 3 * 14  # channels 0 and 1 never vary
    explain = bind("scorecam", model, scorecam_batch=4)  # (its layer search runs one dummy pass)
    rows = []
    hook = model.network.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        explain(images, 2)
    finally:
        hook.remove()
    assert rows[0] == 3 and rows[1] == 1  # the tapped pass, then the blank input once
    assert sum(rows[2:]) == varying and max(rows[2:]) <= 4  # one masked image per varying pair, 4 at a time
