"""`cambatch.methods.hooks`: no hook outlives its use, and the network is left exactly as it was found."""

from __future__ import annotations

import pytest
import torch
from methods_support import TinyNet, bind, tiny_model
from torch import nn

from cambatch.errors import UsageError
from cambatch.methods import METHODS
from cambatch.methods.hooks import ActivationTap, TargetLayer, forward_with_tap, network_as_is

ALL = tuple(METHODS)  # cam, gradcam, gradcampp, xgradcam, layercam, scorecam, eigencam


def _snapshot(net: nn.Module) -> dict:
    return {
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "state": {k: v.clone() for k, v in net.state_dict().items()},
        "grad_enabled": torch.is_grad_enabled(),
    }


def _assert_as_before(net: nn.Module, before: dict) -> None:
    for module in net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert all(p.grad is None for p in net.parameters())
    after = _snapshot(net)
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    assert after["grad_enabled"] == before["grad_enabled"]
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())


@pytest.mark.parametrize("method", ALL)
def test_hooks_are_removed_and_the_model_left_as_it_was_even_on_error(method):
    model = tiny_model(seed=5)
    model.network.train()  # a user's model in training mode stays in training mode
    model.network.body[0].weight.requires_grad_(False)  # and a frozen layer stays frozen
    before = _snapshot(model.network)
    explain = bind(method, model)
    explain(torch.randn(3, 3, 32, 32), 2)
    _assert_as_before(model.network, before)
    with pytest.raises(RuntimeError):
        explain(torch.randn(3, 1, 32, 32), 2)  # wrong channel count: fails inside the forward pass
    _assert_as_before(model.network, before)


def test_network_as_is_restores_modes_and_grad_mode_even_on_error():
    net = TinyNet().train()
    net.body[1].eval()  # a mix of modes
    with torch.no_grad(), pytest.raises(ValueError, match="boom"), network_as_is(net):
        assert not any(m.training for m in net.modules())
        torch.set_grad_enabled(True)  # what a gradient method does inside
        raise ValueError("boom")
    assert net.training and net.body[0].training and not net.body[1].training
    with network_as_is(net):
        torch.set_grad_enabled(False)
    assert torch.is_grad_enabled()


def test_a_network_in_eval_mode_is_left_untouched(monkeypatch):
    """Every batch enters `network_as_is`; a run's network is in eval mode, so no module's mode is set."""
    net = TinyNet().eval()
    sets = []
    monkeypatch.setattr(torch.nn.Module, "train", lambda self, mode=True: sets.append(mode) or self)
    with network_as_is(net):
        assert not any(m.training for m in net.modules())
    assert sets == [] and not any(m.training for m in net.modules())


def test_the_tap_keeps_the_layer_output_and_removes_its_hook():
    net = TinyNet().eval()
    target = TargetLayer("body.2", net.body[2])
    images = torch.randn(2, 3, 32, 32)
    logits, output = forward_with_tap(net, images, target)
    assert logits.shape == (2, 5) and output.shape == (2, 16, 16, 16) and not output.requires_grad
    torch.testing.assert_close(output, net.body[:3](images).detach())
    assert not net.body[2]._forward_hooks
    with pytest.raises(RuntimeError), ActivationTap(target):
        assert net.body[2]._forward_hooks
        raise RuntimeError("inside the block")
    assert not net.body[2]._forward_hooks


def test_grad_from_here_builds_a_graph_only_after_the_target():
    net = TinyNet().eval()
    target = TargetLayer("body.2", net.body[2])
    with network_as_is(net):
        logits, leaf = forward_with_tap(net, torch.randn(2, 3, 32, 32), target, grad_from_here=True)
        assert leaf.requires_grad and leaf.is_leaf and logits.requires_grad
        (grad,) = torch.autograd.grad(logits[:, 0].sum(), leaf)
    assert grad.shape == leaf.shape
    assert all(p.grad is None for p in net.parameters())  # no parameter gradient was ever computed


def test_a_layer_that_does_not_run_or_returns_no_tensor_is_an_error():
    net = TinyNet().eval()
    unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(UsageError, match="layer 'unused' did not run in the forward pass"):
        forward_with_tap(net, torch.randn(1, 3, 32, 32), TargetLayer("unused", unused))

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x)[0].mean((2, 3))

    model = TwoOutputs()
    with pytest.raises(UsageError, match="layer 'pair' returns tuple, not a tensor"):
        forward_with_tap(model, torch.randn(1, 3, 4, 4), TargetLayer("pair", model.pair))
    assert not model.pair._forward_hooks


def test_a_model_whose_output_is_not_logits_is_an_error():
    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    model = Features()
    with pytest.raises(UsageError, match=r"not a \[batch, classes\] tensor of logits"):
        forward_with_tap(model, torch.randn(1, 3, 8, 8), TargetLayer("conv", model.conv))
