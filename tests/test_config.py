"""Run options are declared once (cambatch.config): the CLI and `cambatch.run` derive from them."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from conftest import SAMPLES
from typer.testing import CliRunner

from cambatch.cli import app, config_options
from cambatch.config import GROUPS, RunConfig, default_of, flag, option_fields, spec_of
from cambatch.errors import UsageError


def run_parameters() -> dict[str, object]:
    """The `cambatch run` command's click parameters by name."""
    command = typer.main.get_command(app).commands["run"]
    return {param.name: param for param in command.params}


def test_every_option_is_a_cli_option_with_the_same_default():
    params = run_parameters()
    for name, (_, f) in option_fields().items():
        spec = spec_of(f)
        cli_name = (spec.negated_flag or flag(name)).lstrip("-").replace("-", "_")
        assert cli_name in params, name
        cli_default = params[cli_name].default
        assert (not cli_default if spec.negated_flag else cli_default) == default_of(f), name
        assert (spec.negated_flag or flag(name)) in params[cli_name].opts
    # ... and the command has nothing else but the inputs, --out and its own presentation flags.
    own = {"inputs", "out", "quiet", "fail_on_error", "debug"}
    derived = {
        (spec_of(f).negated_flag or flag(n)).lstrip("-").replace("-", "_") for n, (_, f) in option_fields().items()
    }
    assert set(params) == own | derived


def test_cli_values_map_back_to_the_config_options():
    params = run_parameters()
    defaults = {name: param.default for name, param in params.items()}
    options = config_options(defaults)
    config = RunConfig.create([SAMPLES], "out", **options)
    assert config == RunConfig.create([SAMPLES], "out")  # the CLI's defaults are the config's defaults
    assert config_options({**defaults, "no_overlays": True})["overlays"] is False


def test_create_puts_flat_options_in_their_groups_and_normalizes_values(tmp_path):
    config = RunConfig.create(
        "photos", tmp_path, topk=5, classes="tabby, tiger cat,", overlays=False, from_list="val.csv"
    )
    assert config.inputs == (Path("photos"),) and config.out == tmp_path
    assert config.maps.topk == 5 and config.maps.classes == ("tabby", "tiger cat") and not config.output.overlays
    assert config.source.from_list == Path("val.csv")
    assert RunConfig.create([], "o", from_list="l.txt", classes=["a", 3]).maps.classes == ("a", "3")
    assert RunConfig.create(None, "o", from_list="l.txt").inputs == ()  # the CLI passes None without INPUTs
    again = RunConfig.create(config.inputs, config.out, **config.options())
    assert again == config  # `options()` (what reports and manifests record) rebuilds the same config
    with pytest.raises(TypeError, match="unknown option.*top_k.*topk"):
        RunConfig.create("photos", tmp_path, top_k=5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"topk": 0}, r"topk \(--topk\) must be at least 1, not 0"),
        ({"alpha": 1.5}, r"alpha \(--alpha\) must be at most 1"),
        ({"method": "gradcam++"}, r"method \(--method\) must be one of cam, gradcam, .*auto, not 'gradcam\+\+'"),
        ({"precision": "fp64"}, r"precision \(--precision\) must be one of fp32, fp16, bf16"),
        ({"colormap": "rainbow"}, r"colormap \(--colormap\) must be one of jet, turbo, viridis, inferno"),
        ({"gpu_decode": "always"}, r"gpu_decode \(--gpu-decode\) must be one of auto, on, off"),
        ({"device": "tpu"}, r"device \(--device\) takes auto, cpu, cuda, cuda:N or mps, not 'tpu'"),
        ({"shard": "2of8"}, r"shard \(--shard\) takes I/N"),
        ({"workers": -1}, r"workers \(--workers\) must be at least 0"),
        ({"image_size": 16}, r"image_size \(--image-size\) must be at least 32"),
        ({"scorecam_batch": 0}, r"scorecam_batch \(--scorecam-batch\) must be at least 1"),
        ({"max_side": -1}, r"max_side \(--max-side\) must be at least 0"),
        ({"images_per_part": 0}, r"images_per_part \(--images-per-part\) must be at least 1"),
    ],
)
def test_a_bad_setting_is_refused_with_one_message_naming_both_spellings(options, message):
    with pytest.raises(UsageError, match=message):
        RunConfig.create("photos", "out", **options)


def test_inputs_or_a_list_are_required():
    with pytest.raises(UsageError, match="give at least one input folder or image, or a list of images"):
        RunConfig.create([], "out")


def test_groups_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        GROUPS["maps"]("cam")  # type: ignore[misc]
    config = RunConfig.create("photos", "out")
    with pytest.raises(AttributeError):
        config.maps.topk = 5  # type: ignore[misc]
    assert all(spec_of(f).help for cls in GROUPS.values() for f in fields(cls))  # every option says what it does


def test_run_from_a_list_alone_as_the_audit_jobs_page_shows(tmp_path):
    """`cambatch run --from-list val.csv --out cams`: no INPUT at all (the CLI once passed None and crashed)."""
    shutil.copy(SAMPLES / "coffee.png", tmp_path / "coffee.png")
    (tmp_path / "val.csv").write_text("path,label\ncoffee.png,espresso\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["run", "--from-list", str(tmp_path / "val.csv"), "--out", str(tmp_path / "cams"), "--topk", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "1 ok, 0 error(s) of 1 images" in result.output
