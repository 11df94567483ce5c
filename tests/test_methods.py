"""Map methods: the math they must satisfy, batching, hooks, layers, ViTs and faithfulness scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLES
from torch import nn

from cambatch.errors import UsageError
from cambatch.methods import METHODS, FaithfulnessTally, TokenGrid, build_method, faithfulness_scores, locate_layer
from cambatch.methods.normalize import unit_maps
from cambatch.methods.registry import method_class
from cambatch.model.build import CamModel, load_model
from cambatch.runner.engine import build_engine

ALL = tuple(METHODS)  # cam, gradcam, gradcampp, xgradcam, layercam, scorecam, eigencam
GRADIENT = ("gradcam", "gradcampp", "xgradcam", "layercam")


def sample_batch(model: CamModel, names=None) -> torch.Tensor:
    """The sample images as the pipeline feeds them (whole image resized, normalized), [B, 3, S, S]."""
    from cambatch.data.preprocess import ImageFiles, Preprocess, collate
    from cambatch.sources.discover import discover

    sources = [s for s in discover([SAMPLES]) if names is None or s.rel in names]
    files = ImageFiles(sources, Preprocess(image_size=model.input_size))
    pixels = collate([files[i] for i in range(len(sources))]).pixels.float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


class TinyNet(nn.Module):
    """A small GAP -> linear CNN (16 channels, 32 px) for what would be slow on a real network."""

    def __init__(self, classes: int = 5, negative_head: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)
        if negative_head:  # activations >= 0 and weights < 0: every CAM of every class is <= 0
            with torch.no_grad():
                self.fc.weight.copy_(-self.fc.weight.abs() - 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))


def tiny_model(seed: int = 0, negative_head: bool = False) -> CamModel:
    torch.manual_seed(seed)
    net = TinyNet(negative_head=negative_head).eval()
    return CamModel(
        "tiny", net, net.body, net.fc, (0.5,) * 3, (0.25,) * 3, 32, [f"c{i}" for i in range(5)], "none", None
    )


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return load_model("resnet18", "none")


@pytest.fixture(scope="module")
def resnet_images(resnet18):
    return sample_batch(resnet18)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return load_model("timm:vit_tiny_patch16_224", "none", require_cam_head=False)


# ---- the math ----


@pytest.mark.parametrize("which", ["default", "resnet18"])
def test_gradcam_is_relu_cam_up_to_a_positive_scale_on_a_gap_linear_model(which, default_model, resnet18):
    model = default_model if which == "default" else resnet18
    images = sample_batch(model, {"chelsea.png", "coffee.png", "rocket.jpg"})
    cam = build_method("cam", model)(images, 3)
    grad = build_method("gradcam", model)(images, 3)
    assert torch.equal(cam.class_index, grad.class_index)
    h, w = cam.maps.shape[-2:]
    # d logit_c / dA = w_c / (h w) at every position, so Grad-CAM = CAM / (h w), and so are their ReLUs.
    scale = cam.maps.abs().amax()
    torch.testing.assert_close(
        grad.maps.clamp(min=0) * (h * w), cam.maps.clamp(min=0), atol=1e-4 * float(scale), rtol=1e-4
    )
    ratio = cam.maps.clamp(min=0).sum((2, 3)) / grad.maps.clamp(min=0).sum((2, 3))
    assert torch.all(ratio > 0)
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(h * w)), rtol=1e-3, atol=0)


@pytest.mark.parametrize("method", ALL)
def test_all_negative_maps_give_zeros_never_nan(method):
    model = tiny_model(negative_head=True)
    engine = build_engine(model, torch.device("cpu"), topk=3, method=method, faithfulness=True)
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = engine(pixels)
    assert np.isfinite(out.maps.astype(np.float32)).all()
    assert all(np.isfinite(out.columns[name]).all() for name in ("masked_probability", "confidence_drop"))
    assert all(np.isfinite(out.columns[name]).all() for name in ("cam_max", "cam_mean", "cam_std"))  # always defined
    if method in ("cam", "gradcam", "xgradcam"):
        assert (out.maps <= 0).all() and (out.maps < 0).any()
    if method not in ("scorecam", "eigencam"):  # these two weigh channels positively / are class-agnostic
        assert (out.display == 0).all()
    negative = -torch.rand(2, 3, 7, 7) - 0.01
    assert torch.equal(unit_maps(negative), torch.zeros_like(negative))


def test_gradient_method_formulas_on_known_activations_and_gradients():
    """The four combinations, checked against their definitions written out one channel at a time."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 4, 3, 3, generator=g)
    grads = torch.randn(2, 3, 4, 3, 3, generator=g)
    methods = {name: method_class(name).__new__(method_class(name)) for name in GRADIENT}
    for b in range(2):
        for k in range(3):
            gk, ab = grads[b, k], a[b]
            expected = {
                "gradcam": sum(gk[c].mean() * ab[c] for c in range(4)),
                "xgradcam": sum((gk[c] * ab[c]).sum() / (ab[c].sum() + 1e-7) * ab[c] for c in range(4)),
                "layercam": sum(gk[c].clamp(min=0) * ab[c] for c in range(4)),
            }
            alpha = gk**2 / (2 * gk**2 + ab.sum((1, 2))[:, None, None] * gk**3 + 1e-6)
            alpha = torch.where(gk != 0, alpha, torch.zeros_like(alpha))
            expected["gradcampp"] = sum((gk[c].clamp(min=0) * alpha[c]).sum() * ab[c] for c in range(4))
            for name, method in methods.items():
                torch.testing.assert_close(method.combine(a, grads)[b, k], expected[name], msg=name)


# ---- batching: every image its own map ----


@pytest.mark.parametrize("method", ALL)
def test_a_mixed_batch_gives_each_image_its_own_map(method):
    model = tiny_model(seed=3)
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    images[3] = images[1]  # a repeated image gets the same maps
    explain = build_method(method, model, scorecam_batch=7)  # chunks that straddle images
    together = explain(images, 3)
    alone = [explain(images[i : i + 1], 3) for i in range(5)]
    for i, single in enumerate(alone):
        assert torch.equal(together.class_index[i], single.class_index[0])
        torch.testing.assert_close(together.maps[i], single.maps[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together.maps[3], together.maps[1])


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam", "eigencam"])
def test_real_images_in_one_batch_match_one_at_a_time_and_no_map_is_left_empty(method, resnet18, resnet_images):
    images = resnet_images[:4]
    explain = build_method(method, resnet18)
    together = explain(images, 3)
    assert together.maps.shape == (4, 3, 7, 7)
    assert (together.maps.flatten(2).abs().amax(2) > 0).all()  # the "short target list" bug leaves zero maps
    for i in (0, 3):
        torch.testing.assert_close(together.maps[i], explain(images[i : i + 1], 3).maps[0], atol=1e-4, rtol=1e-3)


def test_chosen_classes_are_explained_for_every_image(resnet18, resnet_images):
    classes = torch.tensor([5, 900])
    maps = build_method("gradcam", resnet18)(resnet_images[:3], 2, classes)
    assert maps.class_index.tolist() == [[5, 900]] * 3
    cams = build_method("cam", resnet18)(resnet_images[:3], 2, classes)
    torch.testing.assert_close(maps.rank, cams.rank)


# ---- hooks and the user's model ----


def _snapshot(net: nn.Module) -> dict:
    return {
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "state": {k: v.clone() for k, v in net.state_dict().items()},
        "grad_enabled": torch.is_grad_enabled(),
    }


def _assert_as_before(net: nn.Module, before: dict) -> None:
    for module in net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert all(p.grad is None for p in net.parameters())
    after = _snapshot(net)
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    assert after["grad_enabled"] == before["grad_enabled"]
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())


@pytest.mark.parametrize("method", ALL)
def test_hooks_are_removed_and_the_model_left_as_it_was_even_on_error(method):
    model = tiny_model(seed=5)
    model.network.train()  # a user's model in training mode stays in training mode
    model.network.body[0].weight.requires_grad_(False)  # and a frozen layer stays frozen
    before = _snapshot(model.network)
    explain = build_method(method, model)
    explain(torch.randn(3, 3, 32, 32), 2)
    _assert_as_before(model.network, before)
    with pytest.raises(RuntimeError):
        explain(torch.randn(3, 1, 32, 32), 2)  # wrong channel count: fails inside the forward pass
    _assert_as_before(model.network, before)


def test_a_failing_layer_search_leaves_no_hook():
    net = TinyNet()
    with pytest.raises(UsageError, match="dummy forward pass at 8x8 failed"):
        locate_layer(nn.Sequential(net, nn.Linear(3, 3)), 8)
    assert all(not m._forward_hooks for m in net.modules())


def test_gradient_methods_work_even_when_called_under_inference_mode(resnet18, resnet_images):
    explain = build_method("gradcam", resnet18)
    expected = explain(resnet_images[:2], 2).maps
    with torch.inference_mode():
        images = resnet_images[:2].clone()
        got = explain(images, 2).maps
    torch.testing.assert_close(got, expected)


# ---- target layers ----


def test_target_layers_found_automatically(default_model, resnet18, vit):
    torch.manual_seed(0)
    mobilenet = load_model("mobilenet_v3_small", "none", require_cam_head=False)
    assert build_method("gradcam", default_model).layer == "bn2"
    assert build_method("gradcam", resnet18).layer == "layer4"
    assert build_method("gradcam", mobilenet).layer == "features"
    vit_method = build_method("gradcam", vit)
    assert vit_method.layer == "blocks.11.norm1"
    assert vit_method.target.tokens == TokenGrid(prefix=1, height=14, width=14)
    assert build_method("cam", default_model).layer == "forward_features"
    assert build_method("cam", resnet18).layer == "layer4"


def test_layer_override_and_wrong_names(resnet18, resnet_images):
    explain = build_method("gradcam", resnet18, layer="layer3")
    assert explain(resnet_images[:1], 1).maps.shape == (1, 1, 14, 14)
    with pytest.raises(UsageError) as wrong:
        build_method("gradcam", resnet18, layer="layer5")
    message = str(wrong.value)
    assert "unknown layer 'layer5'" in message and "did you mean" in message and "layer4 [512, 7, 7]" in message
    with pytest.raises(UsageError, match=r"layer 'fc' outputs shape \(1, 1000\): no spatial grid"):
        build_method("gradcam", resnet18, layer="fc")
    with pytest.raises(UsageError, match="is for the other methods"):
        build_method("cam", resnet18, layer="layer4")


def test_token_grid_drops_prefix_tokens_and_keeps_row_major_patch_order():
    grid = TokenGrid(prefix=2, height=2, width=3)
    tokens = torch.arange(1 * 8 * 4, dtype=torch.float32).reshape(1, 8, 4)
    out = grid(tokens)
    assert out.shape == (1, 4, 2, 3)
    assert torch.equal(out[0, :, 1, 2], tokens[0, 2 + 1 * 3 + 2])  # patch (row 1, col 2)


def test_vit_gradient_methods_give_patch_grid_maps(vit):
    images = sample_batch(vit, {"chelsea.png", "astronaut.png"})
    for method in GRADIENT:
        maps = build_method(method, vit)(images, 2).maps
        assert maps.shape == (2, 2, 14, 14) and torch.isfinite(maps).all()
        assert (maps.flatten(2).abs().amax(2) > 0).all(), method  # after the last attention they would be 0


# ---- cam refusal, auto ----


def test_cam_refusal_stays_and_auto_falls_back_to_gradcam(resnet18, vit):
    torch.manual_seed(0)
    with pytest.raises(
        UsageError, match="CAM needs a global-average-pool -> linear head, but its head is Linear -> Hardswish"
    ):
        load_model("mobilenet_v3_small", "none")
    mobilenet = load_model("mobilenet_v3_small", "none", require_cam_head=False)
    assert mobilenet.head is None and len(mobilenet.class_names) == 1000
    with pytest.raises(UsageError, match="CAM needs a global-average-pool -> linear head"):
        build_method("cam", mobilenet)
    with pytest.raises(UsageError, match="features are not a spatial map"):
        build_method("cam", vit)
    assert build_method("auto", mobilenet).name == "gradcam"
    assert build_method("auto", vit).name == "gradcam"
    assert build_method("auto", resnet18).name == "cam"
    assert build_method("auto", resnet18, layer="layer3").name == "gradcam"
    with pytest.raises(KeyError, match="gradcam\\+\\+"):  # RunConfig refuses it with the choices (test_config)
        build_method("gradcam++", resnet18)


# ---- faithfulness ----


def test_faithfulness_scores_follow_their_definition():
    model = tiny_model(seed=7)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    cams = build_method("gradcam", model)(images, 2)
    columns = faithfulness_scores(model.network, images, cams)
    scores = torch.stack(
        [columns["masked_probability"], columns["confidence_drop"], columns["confidence_increase"].float()], 2
    )
    assert scores.shape == (3, 2, 3)
    for b in range(3):
        for k in range(2):
            m = cams.maps[b, k].clamp(min=0)
            m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else torch.zeros_like(m)
            mask = F.interpolate(m[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0]
            with torch.no_grad():
                p_masked = model.network(images[b : b + 1] * mask).softmax(1)[0, cams.class_index[b, k]]
            p = cams.probability[b, k]
            expected = [p_masked, max(0.0, float(p - p_masked)) / float(p), float(p_masked > p)]
            torch.testing.assert_close(scores[b, k], torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=1e-4)


def test_faithfulness_tally_averages():
    tally = FaithfulnessTally()
    scores = {
        "masked_probability": np.array([[0.2, 0.3]], np.float32),
        "confidence_drop": np.array([[0.5, 0.0]], np.float32),
        "confidence_increase": np.array([[False, True]]),
    }
    tally.add(scores, np.array([[1, 2]]))
    tally.add(None, np.array([[1]]))
    summary = tally.summary()
    assert summary["maps"] == 2
    assert summary["average_drop_pct"] == pytest.approx(25.0) and summary[
        "increase_in_confidence_pct"
    ] == pytest.approx(50.0)
    assert summary["top1_average_drop_pct"] == pytest.approx(50.0) and summary["top1_increase_in_confidence_pct"] == 0.0
    assert FaithfulnessTally().summary() is None
