"""Exact CAM math, batched: the spatial mean of a map plus its bias is the model's own logit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from PIL import Image

from cambatch.methods.cam import class_activation_maps
from cambatch.methods.normalize import display_maps
from cambatch.methods.statistics import largest_component_box, map_statistics
from cambatch.model.build import load_model
from cambatch.report.schema import STAT_NAMES
from cambatch.runner.engine import build_engine


def normalized_batch(model, names):
    size = model.input_size
    arrays = [np.asarray(Image.open(SAMPLES / n).convert("RGB").resize((size, size), Image.BILINEAR)) for n in names]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def test_map_mean_plus_bias_equals_the_networks_logit(default_model):
    x = normalized_batch(default_model, ["coffee.png", "chelsea.png", "rocket.jpg"])
    own_logits = default_model.network(x)  # the model's own forward, not our split
    cams = class_activation_maps(default_model, x, topk=5)
    assert cams.maps.shape == (3, 5, 7, 7)
    bias = default_model.head.bias[cams.class_index]
    torch.testing.assert_close(
        cams.maps.mean((2, 3)) + bias, own_logits.gather(1, cams.class_index), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(cams.logit, own_logits.gather(1, cams.class_index), atol=1e-4, rtol=1e-4)
    assert torch.equal(cams.class_index, own_logits.topk(5).indices)
    torch.testing.assert_close(cams.probability, own_logits.softmax(1).gather(1, cams.class_index))


@torch.inference_mode()
def test_each_image_gets_its_own_maps_in_a_mixed_batch(default_model):
    batch = normalized_batch(default_model, ["coffee.png", "chelsea.png"])
    together = class_activation_maps(default_model, batch, topk=3).maps
    alone = class_activation_maps(default_model, batch[1:], topk=3).maps
    torch.testing.assert_close(together[1:], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(together[0], together[1])


@torch.inference_mode()
def test_explicit_classes_report_their_rank(default_model):
    x = normalized_batch(default_model, ["coffee.png"])
    logits = default_model.network(x)[0]
    espresso, last = 967, int(logits.argmin())
    cams = class_activation_maps(default_model, x, topk=3, classes=torch.tensor([last, espresso]))
    assert cams.class_index.tolist() == [[last, espresso]]
    assert cams.rank.tolist() == [[1000, 1]]


def test_resnet18_random_init_identity():
    model = load_model("resnet18", weights="none")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        cams = class_activation_maps(model, x, topk=4)
        own = model.network(x).gather(1, cams.class_index)
        bias = model.head.bias[cams.class_index]
    torch.testing.assert_close(cams.maps.mean((2, 3)) + bias, own, atol=1e-4, rtol=1e-4)


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
    result = build_engine(default_model, torch.device("cpu"), topk=2)(pixels)
    with torch.inference_mode():
        reference = class_activation_maps(default_model, normalized_batch(default_model, names), topk=2)
    np.testing.assert_array_equal(result.class_index, reference.class_index.numpy())
    np.testing.assert_allclose(result.maps, reference.maps.numpy(), atol=2e-2, rtol=1e-2)
    assert set(STAT_NAMES) <= set(result.columns) and result.columns["cam_max"].shape == (2, 2)
    assert result.display.dtype == np.uint8


def test_box_is_the_largest_component():
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 4:8, 4:8] = True  # small blob
    mask[0, 30:50, 10:40] = True  # large blob
    torch.testing.assert_close(largest_component_box(mask), torch.tensor([[10 / 64, 30 / 64, 40 / 64, 50 / 64]]))


def test_box_follows_a_winding_component():
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, ::2, :] = True  # rows joined alternately at the right and left ends: one snake
    mask[0, 1::4, -1] = True
    mask[0, 3::4, 0] = True
    torch.testing.assert_close(largest_component_box(mask), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_all_negative_map_gives_nulls_and_zeros_never_nan_overlays():
    maps = torch.full((1, 7, 7), -3.0)
    stats = {name: float(value[0]) for name, value in map_statistics(maps).items()}
    assert stats["cam_max"] == -3.0 and stats["active_area"] == 0.0
    for undefined in ["centroid_x", "bbox_x0", "border_energy", "entropy"]:
        assert np.isnan(stats[undefined])
    assert display_maps(maps).eq(0).all()


def test_statistics_of_a_centred_blob():
    maps = torch.zeros(1, 8, 8)
    maps[0, 3:5, 3:5] = 1.0
    stats = {name: float(value[0]) for name, value in map_statistics(maps).items()}
    assert stats["centroid_x"] == pytest.approx(0.5) and stats["centroid_y"] == pytest.approx(0.5)
    assert stats["bbox_x0"] < 0.5 < stats["bbox_x1"] and stats["border_energy"] == pytest.approx(0.0, abs=1e-6)
    assert stats["entropy"] == pytest.approx(np.log(4) / np.log(64))
    assert stats["cam_mean"] == pytest.approx(4 / 64)
