"""`--runtime`: OpenVINO and ONNX Runtime run the forward passes that need no gradient, and give torch's rows.

Whole runs on the sample images and a nasty corpus (odd sizes, grayscale, RGBA, EXIF-rotated, CMYK)
with each runtime, against the same run on torch: cam on the default model; eigencam and scorecam on
a seeded resnet18 checkpoint at 64 px, at its `layer2` (128 channels, so Score-CAM's masked passes
stay few). Their conversions go to the user's cache (CAMBATCH_CACHE) as every run's do, so a later
session finds them. Then the cache itself (in a folder of its own: made once, reused, rebuilt when
damaged), which runtime `auto` resolves to, and the one-line refusals.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import REPO, SAMPLES, cat_on_the_left
from methods_support import engine_for, sample_batch, tiny_model
from PIL import Image
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app
from cambatch.errors import UsageError
from cambatch.methods.statistics import GRID
from cambatch.model.accel import Execution
from cambatch.model.backends import BACKENDS
from cambatch.model.catalog import RUNTIME_PREFERENCE
from cambatch.model.conversions import ConversionCache, cache_root, conversion_key
from cambatch.model.runtime import Runtime, resolve_runtime
from cambatch.report.schema import STAT_NAMES

RUNTIMES = [
    pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} missing"))
    for name in RUNTIME_PREFERENCE
]
KEY = ["path", "rank"]
PEAK = ("peak_x", "peak_y")
RESNET = {"model": "resnet18", "image_size": 64, "layer": "layer2"}


@pytest.fixture(scope="module")
def nasty(tmp_path_factory):
    """Pictures whose decoding differs from a plain RGB JPEG's."""
    folder = tmp_path_factory.mktemp("nasty")
    coffee = Image.open(SAMPLES / "coffee.png").convert("RGB")
    coffee.resize((37, 211)).save(folder / "odd_size.jpg", quality=90)
    coffee.convert("L").resize((301, 99)).save(folder / "grayscale.png")
    rgba = Image.open(SAMPLES / "astronaut.png").convert("RGBA").resize((150, 130))
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))  # transparent at the top: white shows through
    rgba.save(folder / "rgba.png")
    coffee.convert("CMYK").save(folder / "cmyk.jpg")
    cat_on_the_left(folder / "rotated.jpg", 6)
    return folder


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """A seeded random-init resnet18 as a checkpoint file: the same weights in every run (and every session)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return str(path)


def report(inputs, out, **options):
    result = cambatch.run(inputs, out, progress=False, workers=0, overlays=False, **options)
    rows = pd.read_parquet(out / "report").sort_values(KEY).reset_index(drop=True)
    return result, rows


def assert_same_rows(torch_rows: pd.DataFrame, rows: pd.DataFrame) -> None:
    """Classes equal; probability within 1e-5, every map statistic within 1e-4 (a peak may move to a cell
    that ties torch's maximum within the float16 of the stored map), maps within their float16 rounding.
    """
    assert rows[KEY + ["class_index", "status"]].equals(torch_rows[KEY + ["class_index", "status"]])
    np.testing.assert_allclose(rows.probability, torch_rows.probability, rtol=0, atol=1e-5)
    for name in STAT_NAMES:
        if name in PEAK:
            continue
        np.testing.assert_allclose(rows[name], torch_rows[name], rtol=1e-5, atol=1e-4, err_msg=name)
    for (_, before), (_, now) in zip(torch_rows.iterrows(), rows.iterrows(), strict=True):
        maps = np.asarray(before["map"], np.float32), np.asarray(now["map"], np.float32)
        np.testing.assert_allclose(maps[1], maps[0], rtol=2e-3, atol=2e-3 * np.abs(maps[0]).max())
        if not np.allclose([now[p] for p in PEAK], [before[p] for p in PEAK], rtol=0, atol=1e-4):
            assert ties_the_peak(before, now["peak_x"], now["peak_y"]), (before.path, before["rank"])


def ties_the_peak(row: pd.Series, x: float, y: float) -> bool:
    """Whether the cell at (x, y) of the row's map, upsampled as `map_statistics` does, holds its maximum
    within the float16 the report stores it in."""
    stored = torch.tensor(np.asarray(row["map"], np.float32)).reshape(1, 1, row.map_height, row.map_width)
    grid = F.interpolate(stored, size=(GRID, GRID), mode="bilinear", align_corners=False)[0, 0]
    cell = grid[int(y * GRID), int(x * GRID)]
    return bool(grid.max() - cell <= 1e-3 * grid.abs().max())


@pytest.fixture(scope="module")
def on_torch(tmp_path_factory, nasty, resnet_weights):
    """The torch rows of each method's run, made once."""
    out = tmp_path_factory.mktemp("torch")
    return {
        "cam": report([SAMPLES, nasty], out / "cam", runtime="torch")[1],
        "eigencam": report(
            [SAMPLES, nasty], out / "eigen", runtime="torch", method="eigencam", **RESNET, weights=resnet_weights
        )[1],
        "scorecam": report(
            [nasty, SAMPLES / "chelsea.png"],
            out / "score",
            runtime="torch",
            method="scorecam",
            scorecam_batch=16,
            **RESNET,
            weights=resnet_weights,
        )[1],
    }


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cam_on_the_default_model_gives_torchs_rows(tmp_path, runtime, on_torch, nasty):
    result, rows = report([SAMPLES, nasty], tmp_path / "out", runtime=runtime)
    assert result.ok == 12 and result.errors == 0
    assert result.runtime.startswith(f"{runtime} ") and "ran 2 forward passes without gradient" in result.runtime
    assert_same_rows(on_torch["cam"], rows)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_eigencam_gives_torchs_rows(tmp_path, runtime, on_torch, nasty, resnet_weights):
    result, rows = report(
        [SAMPLES, nasty], tmp_path / "out", runtime=runtime, method="eigencam", **RESNET, weights=resnet_weights
    )
    assert result.runtime.startswith(f"{runtime} ")
    assert_same_rows(on_torch["eigencam"], rows)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_scorecams_masked_passes_give_torchs_rows(tmp_path, runtime, on_torch, nasty, resnet_weights):
    result, rows = report(
        [nasty, SAMPLES / "chelsea.png"],
        tmp_path / "out",
        runtime=runtime,
        method="scorecam",
        scorecam_batch=16,
        **RESNET,
        weights=resnet_weights,
    )
    assert result.runtime.startswith(f"{runtime} ") and "torch" not in result.runtime.split(";")[0]
    assert_same_rows(on_torch["scorecam"], rows)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_conversion_is_made_once_reused_from_the_cache_and_rebuilt_when_damaged(tmp_path, runtime):
    model = tiny_model()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cache = ConversionCache(tmp_path / "cache")
    lines: list[str] = []

    def features():
        converted = Runtime(BACKENDS[runtime], cache=cache, notify=lines.append, strict=True)
        with torch.inference_mode():
            return converted.run(model.features, images), converted.run(model.features, images[:1])

    with torch.inference_mode():
        expected = model.features(images)
    first, one = features()
    assert len(lines) == 1 and "converting" in lines[0]  # two passes, two batch sizes: one conversion
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one, expected[:1], rtol=1e-5, atol=1e-5)
    (entry,) = (tmp_path / "cache" / runtime).iterdir()
    features()  # another run: found in the cache
    assert len(lines) == 1
    weights = max((p for p in entry.iterdir() if p.name != "entry.json"), key=lambda p: p.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a disk error, or a copy cut short
    weights.write_bytes(bytes(data))
    again, _ = features()
    assert len(lines) == 2 and "converting" in lines[1]
    torch.testing.assert_close(again, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gradient_methods_stay_on_torch_and_faithfulness_takes_the_runtime(runtime):
    model = tiny_model()
    engine = engine_for(model, method="gradcam", faithfulness=True, runtime=runtime, topk=2)
    reference = engine_for(tiny_model(), method="gradcam", faithfulness=True, runtime="torch", topk=2)
    pixels = (torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    got, expected = engine(pixels), reference(pixels)
    # The two masked passes of the faithfulness scores, one per rank: no forward of gradcam's own.
    assert dict(engine.execution.passes) == {engine.execution.runtime.label: 2}
    for name in ("probability", "cam_max", "masked_probability"):
        np.testing.assert_allclose(got.columns[name], expected.columns[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_a_resume_with_another_runtime_goes_on(tmp_path, nasty):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        (photos / name).write_bytes((SAMPLES / name).read_bytes())
    out = tmp_path / "out"
    cambatch.run(photos, out, progress=False, workers=0, overlays=False, runtime="torch")
    (photos / "rotated.jpg").write_bytes((nasty / "rotated.jpg").read_bytes())
    result = cambatch.run(photos, out, progress=False, workers=0, overlays=False, runtime="auto")
    assert result.skipped == 2 and result.ok == 1


def test_an_explicit_runtime_not_installed_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails, as where it is missing
    result = CliRunner().invoke(
        app, ["run", str(SAMPLES / "coffee.png"), "--out", str(tmp_path), "--runtime", "openvino"]
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "runtime openvino (--runtime) is not installed" in lines[0]
    assert "pip install 'cambatch[openvino]'" in lines[0]


def test_auto_without_a_runtime_falls_back_to_torch_and_says_so(tmp_path, monkeypatch):
    for name in RUNTIME_PREFERENCE:
        monkeypatch.setitem(sys.modules, name, None)
    result = CliRunner().invoke(app, ["run", str(SAMPLES / "coffee.png"), "--out", str(tmp_path), "--no-overlays"])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.strip().startswith("runtime:")]
    assert "torch" in line and "ran every pass" in line and "neither OpenVINO nor ONNX Runtime is installed" in line


def cpu(name: str, **settings) -> tuple[Runtime | None, str]:
    options = {"device_type": "cpu", "precision": "fp32", "compile": False, "weights": "pretrained"} | settings
    return resolve_runtime(name, notify=print, **options)


@pytest.mark.skipif(importlib.util.find_spec(RUNTIME_PREFERENCE[0]) is None, reason="openvino missing")
def test_auto_picks_the_first_installed_runtime_on_a_cpu_and_torch_elsewhere():
    runtime, reason = cpu("auto")
    assert runtime.backend is BACKENDS[RUNTIME_PREFERENCE[0]] and not runtime.strict and reason == ""
    assert cpu("auto", device_type="cuda") == (None, "")  # torch is a GPU's runtime, no fallback to explain
    assert cpu("torch") == (None, "")
    assert "fp32 only" in cpu("auto", precision="bf16")[1]
    assert "--compile" in cpu("auto", compile=True)[1]
    assert "random weights" in cpu("auto", weights="none")[1]
    assert cpu("onnxruntime", weights="none")[0].strict  # asked for: converted, whatever the weights


@pytest.mark.parametrize(
    "settings, message",
    [({"device_type": "cuda"}, "CPU only"), ({"precision": "bf16"}, "fp32 only"), ({"compile": True}, "--compile")],
)
def test_an_explicit_runtime_that_cannot_run_these_settings_is_refused(settings, message):
    with pytest.raises(UsageError, match=message):
        cpu("openvino", **settings)


def test_every_runtime_choice_has_its_backend():
    assert list(BACKENDS) == list(RUNTIME_PREFERENCE)


def test_the_cam_pass_through_an_execution_without_runtime_counts_as_torch(default_model):
    execution = Execution(device_type="cpu", precision="fp32", compile=False)
    with torch.inference_mode():
        execution.forward(default_model.features, sample_batch(default_model, ["coffee.png"]))
    assert execution.summary().startswith("torch ") and "ran every pass" in execution.summary()


def test_the_cache_is_cambatch_cache_else_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("CAMBATCH_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("CAMBATCH_CACHE")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "cambatch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "cambatch"


def test_the_key_follows_weights_architecture_input_and_runtime_not_memory_format():
    model = tiny_model()
    key = conversion_key(model.features, (3, 32, 32), "openvino", "1")
    assert conversion_key(model.features.to(memory_format=torch.channels_last), (3, 32, 32), "openvino", "1") == key
    assert conversion_key(model.features, (3, 64, 64), "openvino", "1") != key
    assert conversion_key(model.features, (3, 32, 32), "openvino", "2") != key
    assert conversion_key(model.network, (3, 32, 32), "openvino", "1")["architecture"] != key["architecture"]
    with torch.no_grad():
        model.features[0].bias[0] += 1e-6
    assert conversion_key(model.features, (3, 32, 32), "openvino", "1")["weights"] != key["weights"]


# A process that converts and runs a tiny network on OpenVINO, drops it, then takes a SIGINT (Ctrl-C in a notebook
# once `cambatch.run` has returned).
CTRL_C_AFTER_A_RUN = """
import gc, signal, sys, time
sys.path[:0] = [{tests!r}, {repo!r}]
from methods_support import engine_for, tiny_model
from test_runner_engine import pixels
engine = engine_for(tiny_model(seed=1), runtime="openvino", topk=2, sanity=True)
engine(pixels())
del engine
gc.collect()
seen = []
signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
signal.raise_signal(signal.SIGINT)
time.sleep(0.01)
print("handled", seen)
"""


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino missing")
def test_a_signal_after_an_openvino_run_is_handled_not_a_crash(tmp_path):
    # OpenVINO's CPU plugin registers an alternate signal stack on the thread that creates a Core and frees it with
    # the Core: with a Core per load, this process died of SIGSEGV (exit -11) on the signal.
    script = CTRL_C_AFTER_A_RUN.format(tests=str(REPO / "tests"), repo=str(REPO))
    env = {**os.environ, "CAMBATCH_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "handled [2]" in done.stdout, (done.returncode, done.stderr[-2000:])
