"""`cambatch.model.catalog`: the names `--model` accepts (`cambatch models`) and which work offline."""

from __future__ import annotations

import io
import os
from fnmatch import fnmatchcase

import pytest
import timm
import torch
import torchvision
from methods_support import bind
from rich.console import Console
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.model.build import load_model
from cambatch.model.catalog import FAMILIES, family_of, print_catalog, torchvision_models

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_models_lists_the_default_and_torchvision_names():
    result = invoke("models")
    assert result.exit_code == 0
    assert "efficientnet_lite0" in result.output and "resnet50" in result.output and "timm:NAME" in result.output


def test_weights_in_the_torch_hub_cache_count_as_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = os.path.basename(torchvision.models.get_model_weights("resnet18").DEFAULT.url)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / cached).write_bytes(b"")
    rows = dict(torchvision_models())
    assert rows["resnet18"] is True and rows["resnet50"] is False
    assert set(rows) == set(torchvision.models.list_models(module=torchvision.models))
    lines = _printed_catalog(width=200)
    assert any("resnet18" in line and "yes (cached)" in line for line in lines)
    assert any("resnet50" in line and "needs download" in line for line in lines)
    assert any("efficientnet_lite0 (default)" in line and "yes" in line for line in lines)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_each_familys_claim_is_what_load_model_says_of_its_example(family):
    torch.manual_seed(0)
    model = load_model(family.example, "none", require_cam_head=False)
    assert family_of(family.example) is family
    if family.refusal is None:
        assert model.cam_refusal is None and model.head is not None
    else:
        assert model.cam_refusal is not None and family.evidence in model.cam_refusal, model.cam_refusal
    assert bind("gradcam", model).layer  # the gradient methods find a target layer in every family


def test_every_torchvision_model_belongs_to_one_family_and_every_timm_pattern_names_models():
    for name in torchvision.models.list_models(module=torchvision.models):
        matches = [f.name for f in FAMILIES if any(fnmatchcase(name, pattern) for pattern in f.patterns)]
        assert len(matches) == 1, (name, matches)
    timm_names = ["timm:" + name for name in timm.list_models()]
    for family in FAMILIES:
        for pattern in family.patterns:
            if pattern.startswith("timm:"):
                assert any(fnmatchcase(name, pattern) for name in timm_names), pattern
    assert family_of("timm:mobilevit_xxs") is None  # no listed family: its head is checked when the run starts


def test_models_prints_the_methods_of_each_family():
    lines = _printed_catalog(width=300)
    assert any("resnet18" in line and "ResNet" in line for line in lines)
    assert any("│ ConvNeXt " in line and "gradient methods only (LayerNorm between" in line for line in lines)
    assert any("timm Swin" in line and "cam + gradient methods" in line for line in lines)
    assert any("timm:NAME" in line and "checked as the run starts" in line for line in lines)


def _printed_catalog(width: int) -> list[str]:
    """The lines `cambatch models` prints, on a console `width` wide."""
    stream = io.StringIO()
    print_catalog(Console(file=stream, width=width))
    return stream.getvalue().splitlines()
