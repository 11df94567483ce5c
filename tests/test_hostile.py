"""A messy, hostile corpus (generated here): every good image gets its rows, every bad one exactly
one readable error row, and the run neither crashes, hangs nor eats memory. Plus unsafe checkpoints."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from conftest import SAMPLES
from PIL import Image
from typer.testing import CliRunner

from cambatch.cli import app

GOOD = {
    "cmyk.jpg",
    "gray16.png",
    "grayscale.png",
    "rgba.png",
    "palette.gif",
    "animated.gif",
    "orient3.jpg",
    "orient6.jpg",
    "orient8.jpg",
    "tiny8.png",
    "wide4000x40.png",
    "unicode café 猫.jpg",
    "name with  spaces.JPEG",
    "UPPER.PNG",
    "sub/deeper/nested.webp",
}
PEAK_MEMORY_WRAPPER = """
import re, sys
from cambatch.cli import main
sys.argv = ["cambatch", *sys.argv[1:]]
try:
    main()
finally:
    status = open("/proc/self/status").read()
    print("VmHWM_kB=" + re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
"""
BAD = {
    "truncated.jpg": "truncated",
    "zero.jpg": "empty file",
    "text.jpg": "not a readable image",
    "bomb.png": "decompression-bomb",
}


def png_bomb(side: int) -> bytes:
    """A black 1-bit PNG of side x side pixels in a few hundred kilobytes, streamed (never held
    whole): decoding it would need side^2 bytes as grayscale, three times that as RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def build_corpus(root: Path) -> None:
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((200, 133))
    cat.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.asarray(cat.convert("L"), dtype=np.uint16) * 257).save(root / "gray16.png")
    cat.convert("L").save(root / "grayscale.png")
    cat.convert("RGBA").save(root / "rgba.png")
    cat.convert("P").save(root / "palette.gif")
    frames = [cat, cat.rotate(180)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        cat.save(root / f"orient{orientation}.jpg", exif=exif)
    cat.resize((8, 8)).save(root / "tiny8.png")
    cat.resize((4000, 40)).save(root / "wide4000x40.png")
    cat.save(root / "unicode café 猫.jpg")
    cat.save(root / "name with  spaces.JPEG", format="JPEG")
    cat.save(root / "UPPER.PNG", format="PNG")
    (root / "sub" / "deeper").mkdir(parents=True)
    cat.save(root / "sub" / "deeper" / "nested.webp")
    data = (SAMPLES / "rocket.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("just some text pretending to be a photo\n")
    (root / "bomb.png").write_bytes(png_bomb(40000))
    (root / "notes.md").write_text("not an image: skipped")
    os.symlink(root, root / "sub" / "loop")  # a symlink loop back to the top


def test_hostile_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    build_corpus(corpus)
    out = corpus / "cams"  # --out inside the input
    # Decode in the process itself (--workers 0) and report its own peak memory (VmHWM) at exit.
    command = [
        sys.executable,
        "-c",
        PEAK_MEMORY_WRAPPER,
        "run",
        str(corpus),
        "--out",
        str(out),
        "--topk",
        "2",
        "--workers",
        "0",
        "--batch-size",
        "4",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    peak_mb = int(first.stderr.rsplit("VmHWM_kB=", 1)[1].split()[0]) / 1024
    assert peak_mb < 1800, f"peak RSS {peak_mb:.0f} MB: something decoded the bomb"

    df = pd.read_parquet(out / "report")
    ok, errors = df[df.status == "ok"], df[df.status == "error"]
    assert set(ok.path) == GOOD and (ok.groupby("path").size() == 2).all()
    assert set(errors.path) == set(BAD) and len(errors) == len(BAD)
    for path, reason in BAD.items():
        assert reason in errors.set_index("path").loc[path, "error"]
    for overlay in ok.overlay_path:
        assert (out / overlay).is_file()

    sizes = ok.groupby("path")[["width", "height"]].first()
    assert tuple(sizes.loc["orient6.jpg"]) == (133, 200) and tuple(sizes.loc["orient8.jpg"]) == (133, 200)
    assert tuple(sizes.loc["orient3.jpg"]) == (200, 133) and tuple(sizes.loc["wide4000x40.png"]) == (4000, 40)
    with Image.open(out / ok[ok.path == "wide4000x40.png"].overlay_path.iloc[0]) as wide:
        assert wide.size == (1024, 10)

    # A rerun reads nothing back from its own output folder and finds everything done.
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and f"{len(GOOD) + len(BAD)} already done" in second.stderr
    assert len(pd.read_parquet(out / "report")) == len(df)


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
