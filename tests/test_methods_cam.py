"""Exact CAM math, batched: the spatial mean of a map plus its bias is the model's own logit."""

from __future__ import annotations

import pytest
import torch
from methods_support import cams_of, cpu_execution, normalized_batch, tiny_model

from cambatch.errors import UsageError
from cambatch.methods.cam import CAM
from cambatch.model.build import CamModel


@torch.inference_mode()
def test_map_mean_plus_bias_equals_the_networks_logit(default_model):
    x = normalized_batch(default_model, ["coffee.png", "chelsea.png", "rocket.jpg"])
    own_logits = default_model.network(x)  # the model's own forward, not our split
    cams = cams_of(default_model, x, topk=5)
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
    together = cams_of(default_model, batch, topk=3).maps
    alone = cams_of(default_model, batch[1:], topk=3).maps
    torch.testing.assert_close(together[1:], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(together[0], together[1])


def test_resnet18_random_init_identity(resnet18):
    model = resnet18
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        cams = cams_of(model, x, topk=4)
        own = model.network(x).gather(1, cams.class_index)
        bias = model.head.bias[cams.class_index]
    torch.testing.assert_close(cams.maps.mean((2, 3)) + bias, own, atol=1e-4, rtol=1e-4)


def test_cam_maps_are_the_head_rows_times_the_feature_map():
    model = tiny_model(seed=2)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cams = CAM(model, execution=cpu_execution(), activation="softmax")(images, 2)
    with torch.no_grad():
        features = model.features(images)
        for b in range(2):
            for k in range(2):
                c = int(cams.class_index[b, k])
                expected = (model.head.weight[c][:, None, None] * features[b]).sum(0)
                torch.testing.assert_close(cams.maps[b, k], expected)


def test_cam_refuses_a_model_without_a_gap_linear_head():
    model = tiny_model()
    refused = CamModel(
        name="odd",
        network=model.network,
        features=None,
        head=None,
        mean=model.mean,
        std=model.std,
        input_size=32,
        class_names=model.class_names,
        weights="none",
        weights_sha256=None,
        cam_refusal="odd: CAM needs a global-average-pool -> linear head, but its head is Linear -> ReLU",
    )
    with pytest.raises(UsageError, match="but its head is Linear -> ReLU"):
        CAM(refused, execution=cpu_execution(), activation="softmax")


def test_cam_names_the_models_feature_layer_and_may_be_compiled(resnet18):
    method = CAM(
        resnet18, execution=cpu_execution(compile=True), activation="softmax"
    )  # one forward, no hook: compile applies
    assert method.layer == "layer4" and method.settings() == {"method": "cam", "layer": "layer4"}
