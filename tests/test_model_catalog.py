"""`cambatch.model.catalog`: the names `--model` accepts (`cambatch models`) and which work offline."""

from __future__ import annotations

import io
import os

import torch
import torchvision
from rich.console import Console
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.model.catalog import print_catalog, torchvision_models

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
    stream = io.StringIO()
    print_catalog(Console(file=stream, width=200))
    lines = stream.getvalue().splitlines()
    assert any("resnet18" in line and "yes (cached)" in line for line in lines)
    assert any("resnet50" in line and "needs download" in line for line in lines)
    assert any("efficientnet_lite0 (default)" in line and "yes" in line for line in lines)
