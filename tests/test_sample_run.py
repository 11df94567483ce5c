"""The real default model on the real sample images: predictions, the report contract, overlays."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import SAMPLES
from PIL import Image

from cambatch.report.parts import read_settings

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}

# The column contract analysts rely on, with Arrow types.
CONTRACT = {
    "path": pa.string(),
    "input_root": pa.string(),
    "width": pa.int32(),
    "height": pa.int32(),
    "rank": pa.int16(),
    "class_index": pa.int32(),
    "class_name": pa.string(),
    "probability": pa.float32(),
    "logit": pa.float32(),
    "cam_max": pa.float32(),
    "cam_mean": pa.float32(),
    "cam_std": pa.float32(),
    "peak_x": pa.float32(),
    "peak_y": pa.float32(),
    "centroid_x": pa.float32(),
    "centroid_y": pa.float32(),
    "active_area": pa.float32(),
    "bbox_x0": pa.float32(),
    "bbox_y0": pa.float32(),
    "bbox_x1": pa.float32(),
    "bbox_y1": pa.float32(),
    "border_energy": pa.float32(),
    "entropy": pa.float32(),
    "overlay_path": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "model": pa.string(),
    "method": pa.string(),
    "run_id": pa.string(),
}


def top1(df, path):
    rows = df[(df.path == path) & (df["rank"] == 1)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_known_top1_predictions(sample_run):
    _, df = sample_run
    assert top1(df, "coffee.png").class_name == "espresso"
    assert top1(df, "chelsea.png").class_name in CAT_CLASSES
    assert top1(df, "camera.png").class_name == "tripod"


def test_one_row_per_image_and_class(sample_run):
    result, df = sample_run
    images = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in {".png", ".jpg"})
    assert result.ok == len(images) and result.errors == 0
    assert sorted(df.path.unique()) == images
    assert len(df) == 3 * len(images)
    for _, group in df.groupby("path"):
        assert list(group.sort_values("rank")["rank"]) == [1, 2, 3]
        probs = group.sort_values("rank").probability.to_numpy()
        assert np.all(np.diff(probs) <= 0)  # ranks follow probability
    assert (df.status == "ok").all() and df.error.isna().all()
    assert set(df.model) == {"efficientnet_lite0"} and set(df.method) == {"cam"}
    assert set(df.run_id) == {result.run_id}
    assert set(df.input_root) == {str(SAMPLES)}


def test_column_contract_and_types(sample_run):
    result, _ = sample_run
    schema = pq.read_schema(next(result.report.glob("*.parquet")))
    for name, arrow_type in CONTRACT.items():
        assert schema.field(name).type == arrow_type, name


def test_statistics_are_in_range(sample_run):
    _, df = sample_run
    for col in [
        "peak_x",
        "peak_y",
        "centroid_x",
        "centroid_y",
        "active_area",
        "border_energy",
        "entropy",
        "bbox_x0",
        "bbox_y0",
        "bbox_x1",
        "bbox_y1",
    ]:
        assert df[col].between(0, 1).all(), col
    assert (df.bbox_x0 < df.bbox_x1).all() and (df.bbox_y0 < df.bbox_y1).all()
    assert (df.cam_max >= df.cam_mean).all()
    assert np.allclose(df.probability.groupby(df.path).sum().le(1.0 + 1e-6), True)


def test_cam_mean_plus_bias_is_logit_in_report(sample_run, default_model):
    _, df = sample_run
    bias = default_model.head.bias.detach().numpy()[df.class_index.to_numpy()]
    np.testing.assert_allclose(df.cam_mean + bias, df.logit, atol=2e-3, rtol=1e-4)


def test_overlays_exist_at_photo_size(sample_run):
    result, df = sample_run
    for row in df.itertuples():
        path = result.out / row.overlay_path
        assert path.is_file()
        with Image.open(path) as overlay:
            assert overlay.size == (row.width, row.height)  # all samples are under the 1024 cap
        stem = row.path.rsplit(".", 1)[0]
        assert re.fullmatch(rf"overlays/{stem}/top{row.rank}_[a-z0-9_]+\.jpg", row.overlay_path)
    coffee = df[(df.path == "coffee.png") & (df["rank"] == 1)].iloc[0]
    assert coffee.overlay_path == "overlays/coffee/top1_espresso.jpg"


def test_heat_sits_on_the_object(sample_run):
    """The cat fills chelsea.png's middle; the espresso cup sits in coffee.png's upper middle."""
    _, df = sample_run
    cat = top1(df, "chelsea.png")
    assert 0.2 < cat.centroid_x < 0.8 and 0.2 < cat.centroid_y < 0.8
    cup = top1(df, "coffee.png")
    assert 0.25 < cup.peak_x < 0.75 and cup.peak_y < 0.6
    assert cup.bbox_x0 > 0.05 and cup.bbox_x1 < 0.95  # the box holds the cup, not the whole table


def test_kept_maps_are_raw_and_match_the_report(sample_run, default_model):
    result, df = sample_run
    for row in df[df.path == "coffee.png"].itertuples():
        assert (row.map_height, row.map_width) == (7, 7) and row.map.dtype == np.float16 and row.map.shape == (49,)
        cam = row.map.astype(np.float32)
        bias = float(default_model.head.bias.detach()[row.class_index])
        assert abs(float(cam.mean()) + bias - row.logit) < 0.02
        assert abs(float(cam.max()) - row.cam_max) < 0.02


def test_parquet_metadata_records_the_run(sample_run):
    result, _ = sample_run
    settings = read_settings(result.report)
    assert settings["model"] == "efficientnet_lite0"
    assert settings["method"] == "cam" and settings["topk"] == 3
    assert settings["input_size"] == 224 and settings["mean"] == [0.5, 0.5, 0.5]
    assert len(settings["class_names"]) == 1000 and settings["class_names"][967] == "espresso"
    assert settings["run_id"] == result.run_id and settings["torch_version"] and settings["cambatch_version"]
