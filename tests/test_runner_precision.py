"""`--precision` and `--compile` through the real pipeline: every method's passes under autocast, refusals up front.

The forward passes are observed from inside: a forward hook on the network's first convolution,
registered on the model the pipeline loads, records whether autocast is on and the dtype it outputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SAMPLES
from torch import nn
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.methods.registry import METHODS
from cambatch.runner import job
from cambatch.runner.engine import CamEngine

FAST = {
    "model": "resnet18",
    "weights": "none",
    "image_size": 64,
    "workers": 0,
    "threads": 1,
    "overlays": False,
    "progress": False,
}


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "chelsea.png").write_bytes((SAMPLES / "chelsea.png").read_bytes())
    return folder


@pytest.fixture
def passes(monkeypatch) -> list[tuple[str, bool, torch.dtype]]:
    """(phase, autocast on, output dtype) of every call of the loaded network's first conv.

    phase: `batch` inside the engine's work on a batch, `setup` otherwise (the layer search's
    dummy pass when the method is built, which only reads shapes).
    """
    seen: list[tuple[str, bool, torch.dtype]] = []
    in_batch = [False]
    real_load, real_call = job.load_model, CamEngine.__call__

    def load_model(*args, **kwargs):
        model = real_load(*args, **kwargs)
        conv = next(m for m in model.network.modules() if isinstance(m, nn.Conv2d))

        def hook(_module, _inputs, output):
            seen.append(("batch" if in_batch[0] else "setup", torch.is_autocast_enabled("cpu"), output.dtype))

        conv.register_forward_hook(hook)  # stays for the whole run
        return model

    def call(self, pixels, labels=None):
        in_batch[0] = True
        try:
            return real_call(self, pixels, labels)
        finally:
            in_batch[0] = False

    monkeypatch.setattr(job, "load_model", load_model)
    monkeypatch.setattr(CamEngine, "__call__", call)
    return seen


@pytest.mark.parametrize("method", list(METHODS))
def test_bf16_runs_every_forward_pass_of_every_method_under_autocast(method, photos, tmp_path, passes):
    result = cambatch.run(photos, tmp_path / "out", topk=1, precision="bf16", method=method, faithfulness=True, **FAST)
    assert (result.ok, result.errors, result.method) == (1, 0, method)
    batch = [(on, dtype) for phase, on, dtype in passes if phase == "batch"]
    minimum = {"scorecam": 4}.get(method, 2)  # the method's passes (scorecam: tap, blank, masked) + faithfulness
    assert len(batch) >= minimum, passes
    assert set(batch) == {(True, torch.bfloat16)}, f"{method}: a pass ran outside bf16 autocast: {passes}"
    assert all(phase == "setup" for phase, _, _ in passes[: len(passes) - len(batch)])  # setup comes first, once
    assert len(passes) - len(batch) <= 1
    df = pd.read_parquet(tmp_path / "out" / "report")
    assert (df.status == "ok").all() and (df.method == method).all()
    for column in ("probability", "logit", "cam_max", "cam_mean", "masked_probability", "confidence_drop"):
        assert np.isfinite(df[column].to_numpy(np.float64)).all(), column
    assert ((df.probability > 0) & (df.probability <= 1)).all()
    maps = np.stack(df["map"].to_numpy())
    assert maps.shape == (1, 4) and np.isfinite(maps).all()  # resnet18 at 64 px: a 2 x 2 grid
    assert (df.map_height == 2).all() and (df.map_width == 2).all()


def test_fp32_runs_no_pass_under_autocast(photos, tmp_path, passes):
    cambatch.run(photos, tmp_path / "out", topk=1, method="gradcam", **FAST)
    assert passes and not any(on for _, on, _ in passes) and {dtype for _, _, dtype in passes} == {torch.float32}


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def no_report_part(out) -> bool:
    return not list(out.rglob("*.parquet"))


def test_cli_refuses_fp16_on_a_cpu(photos, tmp_path, passes):
    out = tmp_path / "out"
    result = invoke("run", photos, "--out", out, "--model", "resnet18", "--weights", "none", "--image-size", 64,
                    "--device", "cpu", "--precision", "fp16", "--workers", 0, "--no-overlays")  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "fp16" in lines[0] and "needs a GPU" in lines[0], result.output
    assert "Traceback" not in result.output
    assert not passes and no_report_part(out)  # refused before the model was even loaded


def test_cli_refuses_compile_for_a_hooking_method_before_any_image(photos, tmp_path, passes, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("torch.compile must not be reached")

    monkeypatch.setattr(torch, "compile", refuse)
    out = tmp_path / "out"
    result = invoke("run", photos, "--out", out, "--model", "resnet18", "--weights", "none", "--image-size", 64,
                    "--method", "gradcam", "--compile", "--workers", 0, "--no-overlays")  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "compile (--compile) does not apply to gradcam" in lines[0]
    assert "every forward pass hooks the target layer" in lines[0]  # the reason
    assert not any(phase == "batch" for phase, _, _ in passes)  # no image went through the network
    assert no_report_part(out)
    assert not (out / "runs").exists() or not list((out / "runs").glob("*.json"))  # no run was started
