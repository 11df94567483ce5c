"""`cambatch.model.lite0`: the default network in plain torch.nn, held to timm's `tf_efficientnet_lite0`
(the oracle) module for module: keys, logits, feature maps and a timm checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from conftest import PHOTOS
from methods_support import normalized_batch

from cambatch.model.build import load_model
from cambatch.model.lite0 import EfficientNetLite0


@pytest.fixture(scope="module")
def pair(default_model):
    """timm's module and ours, both holding the embedded weights."""
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    reference.load_state_dict(default_model.network.state_dict())
    return reference, default_model.network


def photos(model, size: int) -> torch.Tensor:
    """The sample photos resized to `size` and normalized as the default model's inputs."""
    return normalized_batch(dataclasses.replace(model, input_size=size), [p.name for p in PHOTOS])


def test_its_state_dict_is_timms_key_for_key():
    ours, theirs = EfficientNetLite0().state_dict(), timm.create_model("tf_efficientnet_lite0").state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


@pytest.mark.parametrize("size", [224, 255])  # 255: an odd side, where 'same' padding puts the odd pixel last
def test_it_gives_timms_features_and_logits_on_the_sample_photos(pair, default_model, size):
    reference, ours = pair
    x = photos(default_model, size)
    with torch.inference_mode():
        torch.testing.assert_close(ours.forward_features(x), reference.forward_features(x), rtol=0, atol=1e-5)
        logits = ours(x)
        torch.testing.assert_close(logits, reference(x), rtol=0, atol=1e-5)
    if size == 224:  # and the photos are what they show (ImageNet: 285 Egyptian cat, 504 coffee mug)
        top1 = dict(zip((p.stem for p in PHOTOS), logits.argmax(1).tolist(), strict=True))
        assert top1["chelsea"] in {281, 282, 285} and top1["coffee"] in {504, 967, 968}


def test_a_timm_checkpoint_loads_as_the_default_models_weights(default_model, tmp_path):
    torch.manual_seed(3)
    fine_tuned = timm.create_model("tf_efficientnet_lite0", num_classes=5).eval()
    torch.save(fine_tuned.state_dict(), tmp_path / "lite0-5.pt")
    model = load_model("efficientnet_lite0", str(tmp_path / "lite0-5.pt"), num_classes=5)
    x = photos(default_model, 224)[:2]
    with torch.inference_mode():
        torch.testing.assert_close(model.network(x), fine_tuned(x), rtol=0, atol=1e-5)
    assert model.feature_layer == "forward_features" and model.head is model.network.classifier


def test_random_weights_follow_timms_init_scheme():
    """`--weights none`: TensorFlow's init, as timm's module draws it (the same spread, not the same draws)."""
    torch.manual_seed(0)
    ours = EfficientNetLite0()
    torch.manual_seed(0)
    theirs = timm.create_model("tf_efficientnet_lite0")
    for name in ("conv_stem.weight", "blocks.5.3.conv_dw.weight", "conv_head.weight", "classifier.weight"):
        a, b = ours.state_dict()[name], theirs.state_dict()[name]
        assert abs(a.std() / b.std() - 1) < 0.15, name
    assert torch.equal(ours.bn2.weight, torch.ones(1280)) and torch.equal(ours.classifier.bias, torch.zeros(1000))
