"""`cambatch.runner.engine`: uint8 batches normalized on the device, maps, statistics, one copy to the host."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from methods_support import cams_of, engine_for, normalized_batch, tiny_model
from PIL import Image

from cambatch.errors import UsageError
from cambatch.methods.deletion import deletion_insertion_scores
from cambatch.methods.road import road_scores
from cambatch.methods.statistics import map_statistics
from cambatch.model.catalog import RUNTIME_PREFERENCE
from cambatch.report.schema import FAITHFULNESS_NAMES, STAT_NAMES, TRUST_NAMES
from cambatch.runner.engine import resolve_device


def test_engine_normalizes_uint8_on_the_device_like_the_reference(default_model):
    names = ["coffee.png", "camera.png"]
    size = default_model.input_size
    pixels = torch.stack(
        [
            torch.from_numpy(
                np.array(Image.open(SAMPLES / n).convert("RGB").resize((size, size), Image.BILINEAR))
            ).permute(2, 0, 1)
            for n in names
        ]
    )
    result = engine_for(default_model, topk=2)(pixels)
    with torch.inference_mode():
        reference = cams_of(default_model, normalized_batch(default_model, names), topk=2)
    np.testing.assert_array_equal(result.class_index, reference.class_index.numpy())
    np.testing.assert_allclose(result.maps, reference.maps.numpy(), atol=2e-2, rtol=1e-2)
    assert set(STAT_NAMES) <= set(result.columns) and result.columns["cam_max"].shape == (2, 2)
    assert result.display.dtype == np.uint8


def pixels(count: int = 3, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (count, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_sigmoid_engine_predicts_the_classes_at_or_above_the_threshold(method):
    model = tiny_model(seed=1)
    engine = engine_for(model, method=method, topk=2, activation="sigmoid", threshold=0.5)
    result = engine(pixels())
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits = model.network((pixels().float() / 255 - mean) / std)
    np.testing.assert_array_equal(result.predicted, (logits.sigmoid() >= 0.5).numpy())
    np.testing.assert_allclose(result.columns["probability"], 1 / (1 + np.exp(-result.columns["logit"])), rtol=1e-5)
    assert engine_for(model, topk=2)(pixels()).predicted is None  # softmax: no set


def test_batch_result_holds_report_columns_raw_maps_and_display_maps():
    model = tiny_model(seed=1)
    result = engine_for(model, topk=2)(pixels())
    assert set(result.columns) == {"class_index", "rank", "probability", "logit", *STAT_NAMES}
    assert all(value.shape == (3, 2) and isinstance(value, np.ndarray) for value in result.columns.values())
    assert result.maps.shape == (3, 2, 16, 16) and result.maps.dtype == np.float16
    assert result.display.shape == (3, 2, 16, 16) and result.display.dtype == np.uint8
    np.testing.assert_array_equal(result.class_index, result.columns["class_index"])
    assert result.rank.tolist() == [[1, 2]] * 3
    # The statistics are those of the raw maps, before they were stored as float16.
    images = (pixels().float() - 0.5 * 255) / (0.25 * 255)
    with torch.inference_mode():
        maps = cams_of(model, images, 2).maps
    expected = map_statistics(maps.reshape(6, 16, 16))["cam_max"].reshape(3, 2).numpy()
    np.testing.assert_allclose(result.columns["cam_max"], expected, rtol=1e-5, atol=1e-6)


def test_without_overlays_no_display_maps_and_chosen_classes_for_every_image():
    engine = engine_for(tiny_model(seed=1), topk=3, classes=[4, 0], overlays=False)
    result = engine(pixels())
    assert result.display is None
    assert result.class_index.tolist() == [[4, 0]] * 3 and result.maps.shape[1] == 2


def test_faithfulness_adds_its_columns_and_feeds_the_tally():
    engine = engine_for(tiny_model(seed=1), topk=2, faithfulness=True)
    engine(pixels(3))
    result = engine(pixels(2, seed=1))
    assert set(FAITHFULNESS_NAMES) <= set(result.columns) and result.columns["confidence_increase"].dtype == bool
    assert engine.tally.summary()["maps"] == 10 and engine.tally.top1_maps == 5
    plain = engine_for(tiny_model(seed=1), topk=2)
    plain(pixels())
    assert plain.tally.summary() is None and not set(FAITHFULNESS_NAMES) & set(plain(pixels()).columns)


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_trust_options_add_the_columns_their_functions_compute(method):
    model = tiny_model(seed=1)
    engine = engine_for(model, method=method, topk=2, sanity=True, road=True, deletion_insertion=True)
    result = engine(pixels())
    images = engine.normalize(pixels())
    cams = engine.method(images, 2)
    options = {"execution": engine.execution, "activation": "softmax"}
    expected = engine.sanity(images, cams)
    expected |= road_scores(model.network, images, cams, **options)
    expected |= deletion_insertion_scores(model.network, images, cams, **options)
    assert set(expected) == set(TRUST_NAMES)
    for name, values in expected.items():
        assert result.columns[name].shape == (3, 2) and result.columns[name].dtype == np.float32
        np.testing.assert_allclose(result.columns[name], values.detach().numpy(), atol=1e-6, err_msg=name)
    assert not set(TRUST_NAMES) & set(engine_for(model, topk=2)(pixels()).columns)


@pytest.mark.parametrize(
    "runtime",
    [
        pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} missing"))
        for name in RUNTIME_PREFERENCE
    ],
)
def test_a_converted_runtime_runs_the_trust_checks_passes_and_gives_torchs_columns(runtime, tmp_path, monkeypatch):
    """--runtime runs the forwards without gradient: the perturbed inputs of ROAD and RISE, and --sanity's
    passes of cam on the re-initialised copy (a conversion of its own: other weights)."""
    monkeypatch.setenv("CAMBATCH_CACHE", str(tmp_path))
    model = tiny_model(seed=1)
    options = {"topk": 2, "sanity": True, "road": True, "deletion_insertion": True}
    on_torch = engine_for(model, runtime="torch", **options)(pixels())
    engine = engine_for(model, runtime=runtime, **options)
    converted = engine(pixels())
    assert set(engine.execution.passes) == {engine.execution.runtime.label}  # torch ran no pass without gradient
    for name in TRUST_NAMES:
        np.testing.assert_allclose(converted.columns[name], on_torch.columns[name], atol=1e-4, err_msg=name)


@pytest.mark.parametrize("method", ["cam", "gradcam", "eigencam"])
def test_embeddings_are_the_pooled_target_layer_and_for_cam_the_heads_input(method):
    model = tiny_model(seed=1)
    result = engine_for(model, method=method, topk=2, embeddings=True)(pixels())
    images = (pixels().float() - 0.5 * 255) / (0.25 * 255)
    with torch.inference_mode():
        pooled = model.features(images).mean((2, 3))  # tiny_model's body feeds its GAP -> linear head
        logits = model.network(images)
    assert result.embeddings.dtype == np.float16 and result.embeddings.shape == tuple(pooled.shape)
    np.testing.assert_allclose(result.embeddings, pooled.numpy(), rtol=2e-3, atol=2e-3)
    if method == "cam":  # the head's input: the head turns it back into the logits
        with torch.inference_mode():
            head = model.head(torch.from_numpy(result.embeddings.astype(np.float32)))
        np.testing.assert_allclose(
            head.gather(1, torch.from_numpy(result.class_index)), result.columns["logit"], atol=2e-2
        )
        np.testing.assert_allclose(head.numpy(), logits.numpy(), atol=2e-2)
    assert result.image(1).embeddings.shape == (1, pooled.shape[1])
    assert engine_for(model, method=method, topk=2)(pixels()).embeddings is None  # only when asked


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="device cuda:1 \\(--device\\): no CUDA device is available here"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun: one GPU per local rank
    assert resolve_device("cuda") == torch.device("cuda:3") and resolve_device("auto") == torch.device("cuda:3")
    assert resolve_device("cuda:1") == torch.device("cuda:1")  # named explicitly: kept
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
