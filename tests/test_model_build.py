"""`cambatch.model.build`: a classifier built, its weights loaded, and split into features and a linear head
(or refused with the reason)."""

from __future__ import annotations

import hashlib

import pytest
import torch
from methods_support import TinyNet
from torch import nn

from cambatch.errors import UsageError
from cambatch.model.build import IMAGENET_CLASSES, _check_cam_head, _split, load_model


@pytest.fixture(scope="module")
def resnet18_state(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18-3.pt"
    torch.save(load_model("resnet18", "none", num_classes=3).network.state_dict(), path)
    return path


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UsageError, match="unknown model 'resnet5O'; did you mean resnet50"):
        load_model("resnet5O", "none")
    with pytest.raises(UsageError, match="unknown timm model 'vit_tiny_patch16_22'; did you mean vit_tiny_patch16_224"):
        load_model("timm:vit_tiny_patch16_22", "none")


def test_the_split_satisfies_the_cam_identity(resnet18):
    assert resnet18.feature_layer == "layer4" and resnet18.head is resnet18.network.fc
    assert resnet18.weights == "none" and resnet18.weights_sha256 is None and resnet18.cam_refusal is None
    assert resnet18.input_size == 224 and len(resnet18.class_names) == 1000 and resnet18.class_names[0] == "tench"
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pooled = resnet18.head(resnet18.features(images).mean((2, 3)))
        torch.testing.assert_close(pooled, resnet18.network(images), atol=1e-4, rtol=1e-4)


def test_the_default_model_uses_forward_features(default_model):
    assert default_model.feature_layer == "forward_features" and default_model.weights == "pretrained"
    assert default_model.mean == (0.5, 0.5, 0.5) and default_model.class_names[967] == "espresso"


def test_the_imagenet_class_names_are_torchvisions():
    from torchvision.models import ResNet50_Weights

    names = IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()
    assert names == ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


def test_a_weights_file_is_loaded_and_fingerprinted(resnet18_state, tmp_path):
    model = load_model("resnet18", str(resnet18_state), num_classes=3)
    assert model.weights == str(resnet18_state)
    assert model.weights_sha256 == hashlib.sha256(resnet18_state.read_bytes()).hexdigest()
    saved = torch.load(resnet18_state, weights_only=True)
    assert torch.equal(model.network.fc.weight, saved["fc.weight"])
    assert model.class_names == ["class_0", "class_1", "class_2"]
    names = tmp_path / "names.txt"
    names.write_text("cat\n\ndog\nbird\n")  # blank lines skipped
    assert load_model("resnet18", str(resnet18_state), num_classes=3, class_names_file=names).class_names == [
        "cat",
        "dog",
        "bird",
    ]


def test_weights_that_do_not_fit_and_wrong_class_names_are_refused(resnet18_state, tmp_path):
    with pytest.raises(
        UsageError, match=r"does not fit resnet18: .*\(its classifier has 3 classes: add --num-classes 3\)$"
    ):
        load_model("resnet18", str(resnet18_state))  # 1000 classes expected, the file has 3
    assert load_model("resnet18", str(resnet18_state), num_classes=3).head.out_features == 3  # as it says
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    with pytest.raises(UsageError, match="names.txt has 2 names but the model has 3 classes"):
        load_model("resnet18", str(resnet18_state), num_classes=3, class_names_file=names)
    with pytest.raises(UsageError, match="the embedded weights have 1000 classes"):
        load_model(num_classes=10)


def test_image_size_sets_the_input_and_a_1x1_feature_map_is_refused():
    torch.manual_seed(0)
    assert load_model("resnet18", "none", image_size=96).input_size == 96
    with pytest.raises(UsageError, match="feature map is 1x1 at input size 32; .*raise --image-size"):
        load_model("resnet18", "none", image_size=32)
    refused = load_model("resnet18", "none", image_size=32, require_cam_head=False)  # fine for the other methods
    assert refused.head is None and refused.features is None and "1x1" in refused.cam_refusal
    assert len(refused.class_names) == 1000  # counted from one forward pass


def test_a_head_that_is_not_linear_in_the_pooled_features_is_refused():
    class MaxPooled(TinyNet):
        def __init__(self):
            super().__init__()
            self.pool = nn.AdaptiveMaxPool2d(1)

    features, head = _split("maxpooled", MaxPooled().eval())
    with pytest.raises(UsageError, match="maxpooled: its logits are not a linear function of the pooled feature map"):
        _check_cam_head("maxpooled", MaxPooled().eval(), features, head, 32)
    net = TinyNet().eval()
    features, head = _split("tiny", net)
    assert head is net.fc and list(features) == [net.body]  # the body without the pooling and the head
    _check_cam_head("tiny", net, features, head, 32)  # an average pool: accepted


def test_a_head_with_more_than_a_linear_layer_is_refused():
    net = TinyNet()
    net.fc = nn.Sequential(nn.Dropout(), nn.Linear(16, 5))
    assert _split("ok", net)[1] is net.fc[1]  # dropout before the linear layer is fine
    net.fc = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5))
    with pytest.raises(UsageError, match="but its head is Linear -> ReLU -> Linear; pick a model with such a head"):
        _split("mlp", net)


def test_cam_on_a_model_without_a_cam_head_suggests_method_auto():
    torch.manual_seed(0)
    with pytest.raises(UsageError, match="features are not a spatial map.*; --method auto picks a gradient method"):
        load_model("timm:vit_tiny_patch16_224", "none")


def test_a_timm_model_takes_mean_std_size_and_interpolation_from_its_own_config():
    from timm.data import resolve_data_config

    vit = load_model("timm:vit_tiny_patch16_224", "none", require_cam_head=False)
    assert (vit.mean, vit.std, vit.input_size, vit.interpolation) == ((0.5,) * 3, (0.5,) * 3, 224, "bicubic")
    config = resolve_data_config(model=vit.network)
    assert (vit.mean, vit.std, vit.interpolation) == (config["mean"], config["std"], config["interpolation"])
    convnext = load_model("timm:convnext_atto", "none", require_cam_head=False)
    assert (convnext.mean, convnext.interpolation) == ((0.485, 0.456, 0.406), "bicubic")


def test_torchvision_weights_and_the_default_model_keep_their_own_interpolation(default_model, resnet18):
    assert load_model("efficientnet_b0", "none").interpolation == "bicubic"  # its weights' transforms say so
    assert resnet18.interpolation == "bilinear"
    # the embedded Lite0 weights were evaluated bilinear, whatever timm's tf_efficientnet_lite0 config says
    assert (default_model.interpolation, default_model.input_size) == ("bilinear", 224)


def test_another_image_size_builds_a_timm_vit_with_dynamic_image_sizes():
    from cambatch.methods.layers import token_grid
    from cambatch.model.grids import TokenGrid

    assert not load_model("timm:vit_tiny_patch16_224", "none", require_cam_head=False).network.dynamic_img_size
    vit = load_model("timm:vit_tiny_patch16_224", "none", image_size=320, require_cam_head=False)
    assert vit.input_size == 320 and vit.network.dynamic_img_size
    assert token_grid(vit.network, 320) == TokenGrid(prefix=1, height=20, width=20)  # 320 / 16 patches a side
    assert vit.interpolation == "bicubic" and vit.mean == (0.5,) * 3  # the config still applies


def test_a_model_that_cannot_take_the_image_size_is_refused_with_the_reason():
    with pytest.raises(
        UsageError,
        match=r"vit_b_16 cannot take --image-size 320 \(AssertionError: Wrong image height! Expected 224 but got "
        r"320!\); its own input size is 224",
    ):
        load_model("vit_b_16", "none", image_size=320, require_cam_head=False)
