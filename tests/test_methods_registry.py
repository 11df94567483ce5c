"""`cambatch.methods.registry`: the names `--method` takes, `auto`, and a method built for a loaded model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from methods_support import bind, cpu_execution, tiny_model

from cambatch.errors import UsageError
from cambatch.methods.base import CamMethod
from cambatch.methods.registry import METHOD_CHOICES, METHODS, method_class, resolve_method_name
from cambatch.model.accel import Execution
from cambatch.model.build import load_model


def test_cam_refusal_stays_and_auto_falls_back_to_gradcam(resnet18, vit):
    torch.manual_seed(0)
    with pytest.raises(
        UsageError, match="CAM needs a global-average-pool -> linear head, but its head is Linear -> Hardswish"
    ):
        load_model("mobilenet_v3_small", "none")
    mobilenet = load_model("mobilenet_v3_small", "none", require_cam_head=False)
    assert mobilenet.head is None and len(mobilenet.class_names) == 1000
    with pytest.raises(UsageError, match="CAM needs a global-average-pool -> linear head"):
        bind("cam", mobilenet)
    with pytest.raises(UsageError, match="features are not a spatial map"):
        bind("cam", vit)
    assert bind("auto", mobilenet).name == "gradcam"
    assert bind("auto", vit).name == "gradcam"
    assert bind("auto", resnet18).name == "cam"
    assert bind("auto", resnet18, layer="layer3").name == "gradcam"
    with pytest.raises(KeyError, match="gradcam\\+\\+"):  # RunConfig refuses it with the choices (test_config)
        bind("gradcam++", resnet18)


def test_every_registered_name_is_its_class_name():
    assert (*METHODS, "auto") == METHOD_CHOICES
    for name in METHODS:
        cls = method_class(name)
        assert issubclass(cls, CamMethod) and cls.name == name and cls.passes


def test_auto_resolves_without_building_anything():
    model = tiny_model()
    assert resolve_method_name("auto", model) == "cam"
    assert resolve_method_name("auto", model, layer="body.0") == "gradcam"
    headless = tiny_model()
    headless.head = None
    assert resolve_method_name("auto", headless) == "gradcam"
    assert resolve_method_name("layercam", headless) == "layercam"


def test_scorecam_batch_defaults_by_device_and_the_option_wins():
    model = tiny_model()
    assert bind("scorecam", model).batch_size == 32
    assert (
        bind("scorecam", model, execution=Execution(device_type="cuda", precision="fp32", compile=False)).batch_size
        == 256
    )
    assert (
        bind(
            "scorecam",
            model,
            scorecam_batch=3,
            execution=Execution(device_type="cuda", precision="fp32", compile=False),
        ).batch_size
        == 3
    )


def test_the_method_gets_the_execution_and_the_layer():
    model = tiny_model()
    execution = cpu_execution("bf16")
    method = bind("xgradcam", model, layer="body.2", execution=execution)
    assert method.execution is execution and method.layer == "body.2" and method.network is model.network
    assert bind("cam", model).execution.dtype is None  # default: fp32, eager
    with pytest.raises(UsageError, match="layer \\(--layer\\) is for the other methods"):
        bind("cam", model, layer="body")
    assert isinstance(bind("eigencam", model)(torch.randn(1, 3, 32, 32), 2).maps, torch.Tensor)


def test_the_registry_loads_without_torch():
    code = "import sys; import cambatch.methods.registry as r; r.METHOD_CHOICES; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == (
        "False"
    )
