"""The command line: options, exit codes and one-line messages."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import SAMPLES
from PIL import Image
from typer.testing import CliRunner

from cambatch import __version__
from cambatch.cli import app

runner = CliRunner()


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
    assert (out / "overlays" / "kitchen" / "coffee" / "top1_espresso.jpg").is_file()


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
    assert set(df.overlay_path) >= {"overlays/kitchen/coffee/espresso.jpg", "overlays/chelsea/tabby.jpg"}
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


def test_models_lists_the_default_and_torchvision_names():
    result = invoke("models")
    assert result.exit_code == 0
    assert "efficientnet_lite0" in result.output and "resnet50" in result.output and "timm:NAME" in result.output
