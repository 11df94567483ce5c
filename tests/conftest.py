"""Shared fixtures: one real run of the default model over sample_images, reused by many tests, and the
random-init models several methods' tests share."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_images"
PHOTOS = sorted(p for p in SAMPLES.iterdir() if p.suffix in {".png", ".jpg"})


def make_folder(folder: Path, count: int, side: int = 160) -> list[str]:
    """`count` small JPEGs made from the sample photos (distinct names, varied content)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        photo = Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB")
        photo = photo.rotate(15 * (i // len(PHOTOS))).resize((side, int(side * 0.75)))
        name = f"img_{i:03d}.jpg"
        photo.save(folder / name, quality=90)
        names.append(name)
    return names


def cat_on_the_left(path: Path, orientation: int) -> None:
    """A landscape JPEG (stored pixels) with the cat in its left half and plain grey on the right, and an
    EXIF `orientation` (6: displayed turned 90 degrees clockwise, the cat on top).
    """
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((300, 200))
    stored = Image.new("RGB", (600, 200), (128, 128, 128))
    stored.paste(cat, (0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif)


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """Run the default model over sample_images once (maps saved too)."""
    from cambatch.config import RunConfig
    from cambatch.runner.pipeline import run

    out = tmp_path_factory.mktemp("sample_run")
    result = run(RunConfig.create(inputs=[SAMPLES], out=out, workers=0))
    return result, pd.read_parquet(out / "report")


@pytest.fixture(scope="session")
def planted_slice(tmp_path_factory):
    """(OUT, {path: kind}) of a run over photos with a planted error slice (`bias_support`): labels from the
    folders, embeddings kept, ground-truth boxes around the discs."""
    from bias_support import slice_run

    return slice_run(tmp_path_factory.mktemp("planted_slice"), boxes=True)


@pytest.fixture(scope="session")
def default_model():
    from cambatch.model.build import load_model

    return load_model()


@pytest.fixture(scope="session")
def resnet18():
    """A random-init torchvision resnet18 (seeded: the same weights in every session)."""
    import torch

    from cambatch.model.build import load_model

    torch.manual_seed(0)
    return load_model("resnet18", "none")


@pytest.fixture(scope="session")
def resnet_images(resnet18):
    from methods_support import sample_batch

    return sample_batch(resnet18)


@pytest.fixture(scope="session")
def vit():
    """A random-init timm ViT-tiny (seeded), loaded for the methods other than cam."""
    import torch

    from cambatch.model.build import load_model

    torch.manual_seed(0)
    return load_model("timm:vit_tiny_patch16_224", "none", require_cam_head=False)


# A local S3 server (moto, on 127.0.0.1) for the tests of URL inputs and OUT URLs: fake keys, and never ~/.aws,
# a profile or the EC2 metadata service.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def aws_env(monkeypatch, endpoint: str, credentials: bool = True) -> None:
    """Point botocore at `endpoint`, with fake keys or none."""
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for name, value in FAKE_CREDENTIALS.items():
        if credentials or name == "AWS_DEFAULT_REGION":
            monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches filesystems by their arguments, not the environment


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint of a moto S3 server on 127.0.0.1, started for the session and stopped after it."""
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """(name, s3fs filesystem) of a fresh, empty bucket on the local server."""
    import s3fs

    aws_env(monkeypatch, s3_server)
    fs = s3fs.S3FileSystem()
    name = f"bucket-{len(fs.ls(''))}"
    fs.mkdir(name)
    yield name, fs
    s3fs.S3FileSystem.clear_instance_cache()
