"""`cambatch.model.checkpoints`: weights read without running pickled code, the usual wrappers unwrapped,
whole models and TorchScript only when trusted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SAMPLES
from PIL import Image
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.errors import UsageError
from cambatch.model.checkpoints import read_checkpoint, sha256_of, unwrap_state_dict


class _WritesAFile:
    """Unpickling this creates a file: what a malicious checkpoint could do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(1)}, "payload": _WritesAFile(marker)}, evil)
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(SAMPLES / "coffee.png"),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "resnet18",
            "--weights",
            str(evil),
        ],
    )
    assert result.exit_code == 2
    assert "refusing to unpickle" in result.output and "--trust-checkpoint" in result.output
    assert not marker.exists()


def test_trusted_whole_model_and_torchscript_checkpoints(tmp_path):
    import torchvision

    network = torchvision.models.resnet18(num_classes=5).eval()
    torch.save(network, tmp_path / "whole.pt")
    torch.jit.script(network).save(str(tmp_path / "scripted.pt"))
    torch.save({"model": network.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    image = str(SAMPLES / "coffee.png")
    for name, extra in [
        ("whole.pt", ["--trust-checkpoint"]),
        ("scripted.pt", ["--trust-checkpoint"]),
        ("wrapped.pt", []),
    ]:
        out = tmp_path / f"out_{name}"
        result = CliRunner().invoke(
            app,
            [
                "run",
                image,
                "--out",
                str(out),
                "--model",
                "resnet18",
                "--weights",
                str(tmp_path / name),
                "--num-classes",
                "5",
                "--no-overlays",
                "--workers",
                "0",
                *extra,
            ],
        )
        assert result.exit_code == 0, (name, result.output)
        df = pd.read_parquet(out / "report")
        assert len(df) == 3 and set(df.class_name) <= {f"class_{i}" for i in range(5)}
        with torch.inference_mode():
            expected = network(_input(image)).topk(3).indices[0].tolist()
        assert df.sort_values("rank").class_index.tolist() == expected, name
    settings = json.loads(next((tmp_path / "out_wrapped.pt" / "runs").glob("*.json")).read_text())
    assert len(settings["weights_sha256"]) == 64
    refused = CliRunner().invoke(
        app,
        [
            "run",
            image,
            "--out",
            str(tmp_path / "o"),
            "--model",
            "resnet18",
            "--weights",
            str(tmp_path / "whole.pt"),
            "--num-classes",
            "5",
        ],
    )
    assert refused.exit_code == 2 and "refusing to unpickle" in refused.output


def _input(path: str) -> torch.Tensor:
    pixels = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(((pixels - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]


def test_a_refused_checkpoint_is_refused_by_the_reader_itself(tmp_path):
    marker = tmp_path / "pwned.txt"
    torch.save({"w": torch.zeros(1), "payload": _WritesAFile(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UsageError, match="refusing to unpickle .*pass --trust-checkpoint if you own this file"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    "saved",
    [
        {"fc.weight": torch.ones(2)},
        {"module.fc.weight": torch.ones(2)},  # DataParallel's prefix
        {"state_dict": {"fc.weight": torch.ones(2)}, "epoch": 7},
        {"checkpoint": 1, "model": {"module.fc.weight": torch.ones(2)}},
        {"net": {"weights": {"fc.weight": torch.ones(2)}}},  # nested twice
    ],
)
def test_the_usual_wrappers_are_unwrapped(tmp_path, saved):
    torch.save(saved, tmp_path / "w.pt")
    state = read_checkpoint(tmp_path / "w.pt")
    assert list(state) == ["fc.weight"] and torch.equal(state["fc.weight"], torch.ones(2))


def test_no_state_dict_missing_and_unreadable_files_are_refused(tmp_path):
    with pytest.raises(UsageError, match="holds no state_dict"):
        unwrap_state_dict({"epoch": 3, "lr": 0.1}, Path("x.pt"))
    with pytest.raises(UsageError, match="holds no state_dict"):
        unwrap_state_dict([torch.zeros(1)], Path("x.pt"))
    with pytest.raises(UsageError, match="weights file not found"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save({"fc.weight": torch.ones(1000)}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])  # a checkpoint cut short
    with pytest.raises(UsageError, match="cannot read weights file .*cut.pt"):
        read_checkpoint(tmp_path / "cut.pt")


@pytest.mark.parametrize("trust", [False, True])
def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is_not(tmp_path, trust):
    (tmp_path / "junk.pt").write_text("this is junk\n")  # torch's own words: "174812789", "pop from empty list"
    with pytest.raises(UsageError) as refused:
        read_checkpoint(tmp_path / "junk.pt", trust)
    assert str(refused.value) == (
        f"cannot read weights file {tmp_path / 'junk.pt'}: it is not a PyTorch checkpoint (torch.save), "
        "a .safetensors file or a torch.export .pt2 archive"
    )


def test_safetensors_files_are_read(tmp_path):
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.arange(3.0)}, str(tmp_path / "w.safetensors"))
    state = read_checkpoint(tmp_path / "w.safetensors")
    assert torch.equal(state["fc.weight"], torch.arange(3.0))


def test_trusted_files_may_hold_any_python_object(tmp_path):
    torch.save(
        {"model": {"fc.weight": torch.ones(1)}, "config": {"lr": 0.1, "name": "x"}, "note": "hi"}, tmp_path / "t.pt"
    )
    assert list(read_checkpoint(tmp_path / "t.pt", trust=True)) == ["fc.weight"]
    module = torch.nn.Linear(2, 2)
    torch.save(module, tmp_path / "m.pt")
    assert isinstance(read_checkpoint(tmp_path / "m.pt", trust=True), torch.nn.Linear)


def test_sha256_of_a_file(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert sha256_of(tmp_path / "f") == hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def exported_resnet18(tmp_path_factory):
    """A random-init resnet18 saved twice: as a plain state_dict and as a `torch.export` archive."""
    import torchvision

    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    network = torchvision.models.resnet18().eval()
    torch.save(network.state_dict(), folder / "resnet18.pt")
    program = torch.export.export(network, (torch.randn(1, 3, 224, 224),))
    torch.export.save(program, folder / "resnet18.pt2")
    return network, folder


def test_a_torch_export_archive_gives_the_state_dict_without_unpickling(exported_resnet18, monkeypatch):
    network, folder = exported_resnet18

    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(torch.export, "load", no_unpickling)
    weights = read_checkpoint(folder / "resnet18.pt2")
    expected = network.state_dict()
    assert set(weights) == set(expected)  # parameters, then buffers (num_batches_tracked too): the same names
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    monkeypatch.undo()
    trusted = read_checkpoint(folder / "resnet18.pt2", trust=True)  # torch.export.load, for files one owns
    assert all(torch.equal(trusted[name], expected[name]) for name in expected)


def test_a_torch_whose_private_archive_reader_moved_is_named_as_the_cause(exported_resnet18, monkeypatch):
    """`_pt2_weights` is the one user of torch's private reader: when it moves, the message says so."""
    from torch.export.pt2_archive import _package

    _, folder = exported_resnet18
    monkeypatch.delattr(_package, "_build_file_map")
    with pytest.raises(UsageError, match=r"changed its torch.export archive reader .*--trust-checkpoint"):
        read_checkpoint(folder / "resnet18.pt2")


def test_a_pt2_run_matches_the_state_dict_run_exactly(exported_resnet18, tmp_path):
    from cambatch.config import RunConfig
    from cambatch.runner.pipeline import run

    _, folder = exported_resnet18
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ["coffee.png", "chelsea.png"]:
        (photos / name).write_bytes((SAMPLES / name).read_bytes())
    reports = []
    for weights in ["resnet18.pt", "resnet18.pt2"]:
        out = tmp_path / weights
        options = dict(model="resnet18", weights=str(folder / weights), workers=0, overlays=False, topk=3)
        assert run(RunConfig.create(inputs=[photos], out=out, **options)).ok == 2
        reports.append(pd.read_parquet(out / "report").sort_values(["path", "rank"]).reset_index(drop=True))
    state_dict_run, export_run = reports
    for column in ["class_index", "probability", "logit", "cam_max", "border_energy"]:
        assert state_dict_run[column].equals(export_run[column]), column
    assert all(np.array_equal(a, b) for a, b in zip(state_dict_run["map"], export_run["map"], strict=True))


def test_a_pt2_for_another_architecture_or_damaged_is_refused(exported_resnet18, tmp_path):
    from cambatch.model.build import load_model

    _, folder = exported_resnet18
    with pytest.raises(UsageError, match="resnet18.pt2 does not fit resnet34"):
        load_model("resnet34", str(folder / "resnet18.pt2"))
    damaged = tmp_path / "damaged.pt2"
    damaged.write_bytes((folder / "resnet18.pt2").read_bytes()[:5000])
    with pytest.raises(UsageError, match="cannot read the torch.export archive .*damaged.pt2"):
        read_checkpoint(damaged)
