"""The sample run against the golden outputs, and the maps the report keeps.

`tests/golden/` was first written by `tests/golden_support.py` from `cambatch run sample_images`
as made by commit be3e84d (before the package restructure). Issue 10 regenerated it on purpose,
for two changes and nothing else: overlays moved to one folder per image with its extension
(`overlays/coffee.png/...`, was `overlays/coffee/...`), and the JPEG photos' model input no longer
depends on the overlay size (the reduced-scale JPEG decode is fixed by the input size). Checked
then: the PNG rows and overlays equal be3e84d's exactly (0.0 difference), and the JPEG rows
equal what be3e84d computed with `--no-overlays`, exactly (probability moved by up to 8.67e-3 on
hubble_deep_field.jpg / rocket.jpg against be3e84d's overlay run). Every column, and every
overlay, must come out the same as the golden run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SAMPLES
from golden_support import GOLDEN, overlay_prints, thumbs
from methods_support import cams_of, engine_for

import cambatch
from cambatch.data.inputs import Preprocess
from cambatch.data.preprocess import ImageFiles, collate
from cambatch.sources.discover import discover

KEY = ["path", "rank"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`cambatch run sample_images` with every default, as the golden run was made (the thread count
    follows the worker count, and float32 sums follow the thread count), on torch: the golden rows are
    torch's, and tests/test_model_runtime.py holds the other runtimes to torch's rows (within float
    rounding, which moves astronaut.png's near-tied top-1 peak by one cell of the 64 x 64 grid)."""
    return cambatch.run(SAMPLES, tmp_path_factory.mktemp("golden_run"), progress=False, runtime="torch")


def test_report_rows_equal_the_golden_run(default_run):
    result = default_run
    golden = pd.read_parquet(GOLDEN / "sample_images_report.parquet").sort_values(KEY).reset_index(drop=True)
    now = pd.read_parquet(result.out / "report").sort_values(KEY).reset_index(drop=True)
    assert len(now) == len(golden) == 21
    for column in golden.columns:
        old, new = golden[column], now[column]
        assert (old.isna() == new.isna()).all(), column
        if pd.api.types.is_float_dtype(old):
            # float32 sums round differently across CPU kernels (an Intel and an AMD EPYC machine
            # differ by ~7e-7 relative in the logits); a real change moves values by far more.
            np.testing.assert_allclose(new.to_numpy(float), old.to_numpy(float), rtol=1e-5, atol=1e-5, err_msg=column)
        else:
            assert old[old.notna()].tolist() == new[new.notna()].tolist(), column


def test_overlays_equal_the_golden_run(default_run):
    result = default_run
    golden = pd.read_parquet(GOLDEN / "sample_images_overlays.parquet")
    now = overlay_prints(result.out)
    assert now["overlay"].tolist() == golden["overlay"].tolist()
    assert (now[["width", "height"]].to_numpy() == golden[["width", "height"]].to_numpy()).all()
    # Thumbnails of the decoded JPEGs: equal up to a JPEG codec's rounding, far from any other map.
    difference = np.abs(thumbs(now) - thumbs(golden))
    assert difference.max() <= 2 and difference.mean() < 0.1


def test_load_map_reads_the_map_the_run_computed_from_the_report_alone(sample_run, default_model):
    result, raw = sample_run
    sources = discover([SAMPLES])
    prep = Preprocess(image_size=default_model.input_size, overlays=True, max_side=1024)  # the run's defaults
    files = ImageFiles(sources, prep)
    batch = collate([files[i] for i in range(len(sources))])
    computed = engine_for(default_model, topk=3, overlays=False)(batch.pixels)
    for i, sample in enumerate(batch.samples):
        path = sources[sample.index].rel
        for k, class_index in enumerate(computed.class_index[i]):
            kept = cambatch.load_map(result.out, path, int(class_index))
            assert kept.shape == (7, 7) and kept.dtype == np.float32
            expected = computed.maps[i, k].astype(np.float32)  # float16, as the report stores them
            np.testing.assert_allclose(kept, expected, rtol=2e-3, atol=2e-3 * float(np.abs(expected).max()))
    # ... and those maps are CAM's: the model's own logit is the map's mean plus the bias.
    with torch.inference_mode():
        normalized = (batch.pixels.float() / 255 - 0.5) / 0.5  # EfficientNet-Lite0's mean and std
        cams = cams_of(default_model, normalized, 3)
    row = raw[(raw.path == sources[batch.samples[0].index].rel) & (raw["rank"] == 1)].iloc[0]
    kept = cambatch.load_map(result.out, row.path, row.class_index)
    bias = float(default_model.head.bias.detach()[row.class_index])
    assert kept.mean() + bias == pytest.approx(float(cams.logit[0, 0]), abs=2e-2)
