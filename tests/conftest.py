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


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """Run the default model over sample_images once (maps saved too)."""
    from cambatch.config import RunConfig
    from cambatch.runner.pipeline import run

    out = tmp_path_factory.mktemp("sample_run")
    result = run(RunConfig.create(inputs=[SAMPLES], out=out, workers=0))
    return result, pd.read_parquet(out / "report")


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
