"""The command line: options, exit codes and one-line messages; whole runs through the CLI, every map method
end to end on the default model, resnet18, mobilenet_v3_small (both random init) and a random-init timm
ViT-tiny, plus the options that go with the methods.

To keep the suite quick the method runs use two sample images, and Score-CAM (one forward pass per
channel and image) one image, at 64 px on the CNNs; the full-size runs over all sample images are
behind the method table of docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import SAMPLES
from PIL import Image
from typer.testing import CliRunner

import cambatch
from cambatch import __version__
from cambatch.cli import app
from cambatch.methods import METHODS
from cambatch.report.parts import read_settings

runner = CliRunner()


@pytest.fixture(autouse=True)
def seeded_random_init():
    """Runs on random-init models (`--weights none`) draw their weights from torch's global generator:
    seeded here, they are the same whichever tests ran before."""
    torch.manual_seed(0)


NON_CAM = tuple(m for m in METHODS if m != "cam")
MODELS = {  # name: (options, methods that apply, layer of the non-cam methods)
    "default": ([], (*METHODS, "auto"), "bn2"),
    "resnet18": (["--model", "resnet18", "--weights", "none"], (*METHODS, "auto"), "layer4"),
    "mobilenet_v3_small": (["--model", "mobilenet_v3_small", "--weights", "none"], (*NON_CAM, "auto"), "features"),
    "vit_tiny": (["--model", "timm:vit_tiny_patch16_224", "--weights", "none"], (*NON_CAM, "auto"), "blocks.11.norm1"),
}
CASES = [(model, method) for model, (_, methods, _) in MODELS.items() for method in methods]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def two_photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "kitchen").mkdir(parents=True)
    (folder / "kitchen" / "coffee.png").write_bytes((SAMPLES / "coffee.png").read_bytes())
    (folder / "chelsea.png").write_bytes((SAMPLES / "chelsea.png").read_bytes())
    return folder


def test_whole_process_run_with_plain_progress_and_summary(tmp_path, two_photos):
    out = tmp_path / "cams"
    proc = subprocess.run(
        [sys.executable, "-m", "cambatch", "run", str(two_photos), "--out", str(out), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 ok, 0 error(s) of 2 images" in proc.stderr
    assert "Traceback" not in proc.stderr and "\x1b[" not in proc.stderr  # no terminal: plain lines
    df = pd.read_parquet(out / "report")
    assert set(df.path) == {"kitchen/coffee.png", "chelsea.png"}
    assert (out / "overlays" / "kitchen" / "coffee.png" / "top1_espresso.jpg").is_file()


def test_version_and_help_do_not_need_torch():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cambatch.cli import main; sys.argv=['cambatch','--version'];\n"
            "try:\n main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.stdout.split() == ["cambatch", __version__, "False"]
    assert invoke("--help").exit_code == 0


def test_every_option_help_is_shown_as_declared_brackets_included(monkeypatch):
    """typer renders help as rich markup: an unescaped `[ray]` would vanish from `--help`."""
    import click
    import typer.main
    import typer.rich_utils

    from cambatch.config import option_fields, spec_of

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 4000)  # one line per option: its help unwrapped
    shown = " ".join(runner.invoke(app, ["run", "--help"], terminal_width=4000).output.split())
    for name, (_, f) in option_fields().items():
        assert " ".join(spec_of(f).help.split()) in shown, name
    assert "pip install 'cambatch[ray]'" in shown
    for command_name, command in typer.main.get_command(app).commands.items():
        shown = " ".join(runner.invoke(app, [command_name, "--help"], terminal_width=4000).output.split())
        for param in command.params:
            if isinstance(param, click.Option) and param.help:
                assert " ".join(click.unstyle(param.help).replace("\\[", "[").split()) in shown, param.name


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "does/not/exist", "--out", "{out}"], "input not found"),
        (["run", "{photos}", "--out", "{out}", "--model", "resnet5O"], "unknown model"),
        (["run", "{photos}", "--out", "{out}", "--topk", "0"], "--topk"),
        (
            ["run", "{photos}", "--out", "{out}", "--colormap", "rainbow"],
            "colormap (--colormap) must be one of jet, turbo",
        ),
        (["run", "{photos}", "--out", "{out}", "--classes", "unicorn"], "unknown class"),
        (["run", "{photos}", "--out", "{out}", "--model", "vgg11", "--weights", "none"], "head"),
        (["run", "{photos}", "--out", "{out}", "--weights", "{photos}/missing.pt"], "weights file not found"),
        (
            ["run", "{photos}", "--out", "{out}", "--model", "vit_b_16", "--weights", "none", "--image-size", "320"],
            "vit_b_16 cannot take --image-size 320 (AssertionError: Wrong image height!",
        ),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path, two_photos, args, message):
    args = [a.format(out=tmp_path / "out", photos=two_photos) for a in args]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cambatch: error:") and message in lines[0]


def test_fail_on_error_exits_1_only_when_an_image_failed(tmp_path, two_photos):
    assert (
        invoke("run", two_photos, "--out", tmp_path / "a", "--no-overlays", "--fail-on-error", "--workers", 0).exit_code
        == 0
    )
    (two_photos / "broken.jpg").write_bytes(b"not a jpeg")
    assert invoke("run", two_photos, "--out", tmp_path / "b", "--no-overlays", "--workers", 0).exit_code == 0
    failed = invoke("run", two_photos, "--out", tmp_path / "c", "--no-overlays", "--fail-on-error", "--workers", 0)
    assert failed.exit_code == 1 and "broken.jpg" in failed.output


def test_chosen_classes_instead_of_topk(tmp_path, two_photos):
    out = tmp_path / "out"
    result = invoke(
        "run", two_photos, "--out", out, "--classes", "espresso,Tiger_Cat,281,tabby", "--quiet", "--workers", 0
    )
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out / "report")
    assert len(df) == 6 and set(df.class_index) == {967, 282, 281}  # 281 and 'tabby' are one class
    coffee = df[df.path == "kitchen/coffee.png"].set_index("class_name")
    assert coffee.loc["espresso", "rank"] == 1 and coffee.loc["tabby", "rank"] > 100
    assert set(df.overlay_path) >= {
        "overlays/kitchen/coffee.png/c967_espresso.jpg",
        "overlays/chelsea.png/c281_tabby.jpg",
    }
    assert all((out / p).is_file() for p in df.overlay_path)


def test_overlay_side_is_capped_and_quiet_prints_only_the_summary(tmp_path, two_photos):
    out = tmp_path / "out"
    result = invoke(
        "run",
        two_photos,
        "--out",
        out,
        "--max-side",
        300,
        "--topk",
        1,
        "--quiet",
        "--workers",
        0,
        "--colormap",
        "viridis",
    )
    assert result.exit_code == 0
    assert result.output.startswith("cambatch: 2 ok, 0 error(s)")
    df = pd.read_parquet(out / "report").set_index("path")
    with Image.open(out / df.loc["kitchen/coffee.png", "overlay_path"]) as overlay:
        assert overlay.size == (300, 200)  # 600x400 photo, longest side capped
    assert tuple(df.loc["kitchen/coffee.png", ["width", "height"]]) == (600, 400)


def test_torchvision_model_with_random_weights(tmp_path, two_photos):
    out = tmp_path / "out"
    result = invoke(
        "run",
        two_photos,
        "--out",
        out,
        "--model",
        "resnet18",
        "--weights",
        "none",
        "--no-overlays",
        "--topk",
        2,
        "--workers",
        0,
    )
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out / "report")
    assert len(df) == 4 and set(df.model) == {"resnet18"} and df.overlay_path.isna().all()
    assert not (out / "overlays").exists()


# ---- the map methods from the command line ----


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea.png", "coffee.png"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    return folder


@pytest.mark.parametrize("model, method", CASES)
def test_every_method_runs_end_to_end(tmp_path, photos, model, method):
    options, _, layer = MODELS[model]
    out = tmp_path / "out"
    extra = ["--image-size", 64] if method == "scorecam" and model != "vit_tiny" else []
    inputs = photos / "chelsea.png" if method == "scorecam" else photos
    result = invoke(
        "run",
        inputs,
        "--out",
        out,
        "--method",
        method,
        *options,
        *extra,
        "--topk",
        2,
        "--max-side",
        160,
        "--workers",
        0,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    resolved = ("cam" if model in ("default", "resnet18") else "gradcam") if method == "auto" else method
    expected_layer = {"default": "forward_features", "resnet18": "layer4"}.get(model) if resolved == "cam" else layer
    assert f"method:   {resolved} on layer {expected_layer}" in result.output
    df = pd.read_parquet(out / "report")
    assert (
        len(df) == (2 if method == "scorecam" else 4) and (df.status == "ok").all() and set(df["method"]) == {resolved}
    )
    settings = read_settings(out / "report")
    assert (
        settings["method"] == resolved
        and settings["layer"] == expected_layer
        and settings["options"]["method"] == method
    )
    assert df.cam_max.notna().all() and (df.cam_max > 0).any()
    assert all((out / p).is_file() for p in df.overlay_path)
    assert df.masked_probability.isna().all()  # no --faithfulness


@pytest.mark.parametrize("model", ["mobilenet_v3_small", "vit_tiny"])
def test_cam_is_still_refused_where_the_head_is_not_gap_linear(tmp_path, photos, model):
    result = invoke("run", photos, "--out", tmp_path / "out", *MODELS[model][0], "--workers", 0)
    assert result.exit_code == 2
    expected = "CAM needs a global-average-pool -> linear head" if model == "mobilenet_v3_small" else "CAM needs a CNN"
    assert expected in result.output and result.output.count("\n") == 1


def test_a_timm_vit_runs_at_another_image_size_on_its_larger_patch_grid(tmp_path, photos):
    out = tmp_path / "out"
    vit = MODELS["vit_tiny"][0]
    result = invoke(
        "run", photos, "--out", out, *vit, "--image-size", 320, "--method", "gradcam", "--no-overlays", "--workers", 0
    )
    assert result.exit_code == 0, result.output
    df = cambatch.load_report(out, maps=True)
    assert len(df) == 6 and (df.status == "ok").all()
    assert (df.map_height == 20).all() and (df.map_width == 20).all()  # 320 / 16 patches a side, not 224's 14
    assert read_settings(out / "report")["input_size"] == 320


def test_faithfulness_columns_summary_and_manifest(tmp_path, photos):
    out = tmp_path / "out"
    result = invoke(
        "run",
        photos,
        "--out",
        out,
        "--method",
        "gradcampp",
        "--faithfulness",
        "--topk",
        3,
        "--no-overlays",
        "--workers",
        0,
    )
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out / "report")
    assert df.masked_probability.between(0, 1).all() and df.confidence_drop.between(0, 1).all()
    assert df.confidence_increase.dtype == bool
    assert (df.confidence_increase == (df.masked_probability > df.probability)).all()
    drop = ((df.probability - df.masked_probability).clip(lower=0) / df.probability).astype("float32")
    pd.testing.assert_series_equal(df.confidence_drop, drop, check_names=False, atol=1e-6, rtol=1e-5)
    line = next(line for line in result.output.splitlines() if "faithfulness over 6 maps" in line)
    assert f"average drop {100 * df.confidence_drop.mean():.1f}%" in line
    assert f"increase in confidence {100 * df.confidence_increase.mean():.1f}%" in line
    manifest = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert manifest["faithfulness"]["maps"] == 6 and manifest["method"] == "gradcampp"
    assert manifest["faithfulness"]["average_drop_pct"] == pytest.approx(100 * df.confidence_drop.mean(), abs=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--method", "gradcam", "--layer", "layer9", "--model", "resnet18", "--weights", "none"],
            "unknown layer 'layer9'; did you mean layer4, layer3, layer2? "
            "(layers with a spatial output, last first: layer4 [512, 7, 7]",
        ),
        (["--method", "gradcam", "--layer", "fc", "--model", "resnet18", "--weights", "none"], "no spatial grid"),
        (["--layer", "layer4", "--model", "resnet18", "--weights", "none"], "layer (--layer) is for the other methods"),
        (["--method", "gradcam++"], "method (--method) must be one of cam, gradcam"),
        (["--method", "scorecam", "--scorecam-batch", "0"], "scorecam_batch (--scorecam-batch) must be at least 1"),
    ],
)
def test_method_option_mistakes_exit_2_with_one_line(tmp_path, photos, args, message):
    result = invoke("run", photos, "--out", tmp_path / "out", *args, "--workers", 0)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cambatch: error:") and message in lines[0]


def test_layer_override_from_the_command_line(tmp_path, photos):
    out = tmp_path / "out"
    result = invoke(
        "run",
        photos,
        "--out",
        out,
        "--model",
        "resnet18",
        "--weights",
        "none",
        "--method",
        "layercam",
        "--layer",
        "layer3.1",
        "--no-overlays",
        "--topk",
        1,
        "--workers",
        0,
    )
    assert result.exit_code == 0, result.output
    assert read_settings(out / "report")["layer"] == "layer3.1"
    row = pd.read_parquet(out / "report").query("path == 'chelsea.png'").iloc[0]
    assert cambatch.load_map(out, "chelsea.png", row.class_index).shape == (14, 14)  # layer3's grid, not layer4's 7 x 7


def test_the_installed_command_runs_a_gradient_method(tmp_path, photos):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cambatch",
            "run",
            str(photos),
            "--out",
            str(out),
            "--method",
            "xgradcam",
            "--topk",
            "1",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 ok, 0 error(s) of 2 images" in proc.stderr and "method:   xgradcam on layer bn2" in proc.stderr
    assert set(pd.read_parquet(out / "report").method) == {"xgradcam"}
