"""Shared fixtures: one real run of the default model over sample_images, reused by many tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_images"


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
