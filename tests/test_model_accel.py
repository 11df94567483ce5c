"""`cambatch.model.accel`: precision checks, channels_last, and the `Execution` every forward pass runs through."""

from __future__ import annotations

import pytest
import torch
from methods_support import cams_of, cpu_execution
from torch import nn

from cambatch.errors import UsageError
from cambatch.model.accel import check_precision, prepare_network
from cambatch.model.build import load_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return load_model("mobilenet_v2", "none")


def test_precision_checks():
    check_precision("fp32", CPU)
    check_precision("bf16", CPU)
    with pytest.raises(UsageError, match="fp16 .*needs a GPU"):
        check_precision("fp16", CPU)


def test_channels_last_keeps_the_cam_identity(small_model):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = cams_of(small_model, images, 3)
        prepare_network(small_model.network, CPU)
        after = cams_of(small_model, images, 3)
        bias = small_model.head.bias[after.class_index]
    assert small_model.network.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(before.class_index, after.class_index)
    torch.testing.assert_close(after.maps, before.maps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after.maps.mean((2, 3)) + bias, after.logit, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_hands_float32_features_to_the_head(resnet18):
    model = resnet18
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = cams_of(model, images, 1)
        fast = cams_of(model, images, 1, execution=cpu_execution("bf16"))
    assert fast.maps.dtype == torch.float32 and fast.logit.dtype == torch.float32
    scale = reference.maps.abs().max()
    assert (fast.maps - reference.maps).abs().max() < 0.1 * scale


def test_bf16_on_a_gpu_without_bfloat16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UsageError, match="no bfloat16 support; use fp16"):
        check_precision("bf16", torch.device("cuda"))
    check_precision("fp16", torch.device("cuda"))  # fp16 is what such a GPU runs


def test_fp32_runs_without_autocast_and_bf16_under_it():
    seen = {}

    class Probe(nn.Module):
        def forward(self, x):
            seen["autocast"] = torch.is_autocast_enabled("cpu")
            seen["dtype"] = torch.get_autocast_dtype("cpu")
            return x

    cpu_execution("fp32").forward(Probe(), torch.zeros(1))
    assert seen["autocast"] is False
    assert cpu_execution().dtype is None and cpu_execution().precision == "fp32"
    execution = cpu_execution("bf16")
    execution.forward(Probe(), torch.zeros(1))
    assert seen == {"autocast": True, "dtype": torch.bfloat16} and execution.dtype is torch.bfloat16
    with execution.autocast():
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")


def test_compile_compiles_each_module_once_and_runs_the_compiled_one(monkeypatch):
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return lambda x: x + 100

    monkeypatch.setattr(torch, "compile", fake_compile)
    a, b = nn.Identity(), nn.Identity()
    execution = cpu_execution(compile=True)
    assert execution.forward(a, torch.zeros(1)).item() == 100  # through the compiled graph
    execution.forward(a, torch.zeros(1))
    execution.forward(b, torch.zeros(1))
    assert compiled == [a, b]
    assert cpu_execution().forward(a, torch.zeros(1)).item() == 0 and compiled == [a, b]  # eager: never compiled
    assert repr(execution) == "Execution('cpu', precision='fp32', compile=True)"


def test_prepare_network_moves_weights_to_channels_last_in_place():
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    assert prepare_network(network, CPU) is network
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in (network[0], network[2]))
