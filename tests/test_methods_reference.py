"""Numerical agreement with the reference libraries: torchcam and pytorch-grad-cam (test-only dependencies).

On the sample images, with the default model and a random-init torchvision resnet18, every map
of the top-2 classes must correlate with the reference's at Pearson r >= 0.999 once both are
normalized the same way. pytorch-grad-cam returns maps ReLU'd, min-max scaled and resized to the
input with OpenCV's bilinear; ours are raw at the layer's resolution, so they are ReLU'd and
upsampled bilinearly (half-pixel centres, as OpenCV) before comparing.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from methods_support import bind
from test_methods import sample_batch, tiny_model

from cambatch.model.build import load_model

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
torchcam_methods = pytest.importorskip("torchcam.methods")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction  # noqa: E402

R_MIN = 0.999
TOPK = 2
REFERENCE = {
    "gradcam": pytorch_grad_cam.GradCAM,
    "gradcampp": pytorch_grad_cam.GradCAMPlusPlus,
    "xgradcam": pytorch_grad_cam.XGradCAM,
    "layercam": pytorch_grad_cam.LayerCAM,
}
# model -> (target layer, linear layer) as the references are told them
LAYERS = {"default": ("bn2", "classifier"), "resnet18": ("layer4", "fc")}


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of each pair of maps [N, ...] -> [N]."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def as_grad_cam_does(maps: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(maps.clamp(min=0)[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


@pytest.fixture(scope="module", params=["default", "resnet18"])
def case(request, default_model):
    if request.param == "default":
        return request.param, default_model, sample_batch(default_model)
    return request.param, request.getfixturevalue("resnet18"), request.getfixturevalue("resnet_images")


def test_cam_equals_torchcam_cam(case):
    which, model, images = case
    ours = bind("cam", model)(images, TOPK)
    layer, fc = LAYERS[which]
    with torchcam_methods.CAM(model.network, layer, fc) as extractor:
        with torch.inference_mode():
            model.network(images)
        for k in range(TOPK):
            reference = extractor(class_idx=ours.class_index[:, k].tolist())[0]  # min-max normalized, not ReLU'd
            mine = ours.maps[:, k]
            low = mine.amin((1, 2), keepdim=True)
            mine = (mine - low) / (mine.amax((1, 2), keepdim=True) - low)
            r = pearson(mine, reference)
            assert r.min() >= R_MIN, (which, k, r)


@pytest.mark.parametrize("method", REFERENCE)
def test_gradient_methods_equal_pytorch_grad_cam(case, method):
    which, model, images = case
    explain = bind(method, model)
    assert explain.layer == LAYERS[which][0]  # found automatically: the layer the references are given
    ours = explain(images, TOPK)
    target = dict(model.network.named_modules())[explain.layer]
    with REFERENCE[method](model.network, [target]) as reference:
        for k in range(TOPK):
            theirs = torch.from_numpy(
                reference(images, [ClassifierOutputTarget(int(c)) for c in ours.class_index[:, k]])
            )
            mine = as_grad_cam_does(ours.maps[:, k], images.shape[-1])
            assert (mine.flatten(1).amax(1) > 0).all()  # a non-empty map for every image: r is meaningful
            r = pearson(mine, theirs)
            assert r.min() >= R_MIN, (which, method, k, r)


def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:  # pytorch-grad-cam's ViT tutorial
    return tokens[:, 1:, :].reshape(tokens.size(0), 14, 14, tokens.size(2)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def vit_case(vit):
    return vit, sample_batch(vit, {"chelsea.png", "coffee.png", "rocket.jpg"})


def test_vit_gradcam_equals_pytorch_grad_cam_with_its_reshape_transform(vit_case):
    vit, images = vit_case
    explain = bind("gradcam", vit)
    ours = explain(images, 1)
    target = vit.network.blocks[-1].norm1
    with pytorch_grad_cam.GradCAM(vit.network, [target], reshape_transform=reshape_transform) as reference:
        theirs = torch.from_numpy(reference(images, [ClassifierOutputTarget(int(c)) for c in ours.class_index[:, 0]]))
    mine = as_grad_cam_does(ours.maps[:, 0], 224)
    empty = mine.flatten(1).amax(1) == 0  # random init: a map can be all negative, so empty after ReLU
    assert torch.all(theirs[empty] == 0)  # ... and then theirs is empty too
    assert (~empty).sum() >= 2
    r = pearson(mine[~empty], theirs[~empty])
    assert r.min() >= R_MIN, r


def test_scorecam_equals_torchcam_scorecam():
    model = tiny_model(seed=11)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ours = bind("scorecam", model, scorecam_batch=10)(images, TOPK)
    with torchcam_methods.ScoreCAM(model.network, "body", batch_size=10, input_shape=(3, 32, 32)) as extractor:
        with torch.inference_mode():
            model.network(images)
        for k in range(TOPK):
            reference = extractor(class_idx=ours.class_index[:, k].tolist())[0]  # ReLU'd, min-max normalized
            mine = ours.maps[:, k].clamp(min=0)
            r = pearson(mine, reference)
            assert r.min() >= R_MIN, (k, r)


def test_eigencam_is_pytorch_grad_cams_sign_corrected_projection(case):
    which, model, images = case
    explain = bind("eigencam", model)
    ours = explain(images[:4], TOPK)
    captured = {}
    hook = explain.target.module.register_forward_hook(lambda m, i, o: captured.update(a=o.detach()))
    try:
        with torch.inference_mode():
            model.network(images[:4])
    finally:
        hook.remove()
    theirs = torch.from_numpy(get_2d_projection_with_sign_correction(captured["a"].numpy()))
    r = pearson(ours.maps[:, 0], theirs)
    assert r.min() >= R_MIN, r  # the same component, and the same sign
    assert torch.equal(ours.maps[:, 0], ours.maps[:, 1])  # class-agnostic


@pytest.mark.parametrize("size", [8, 32])  # 4x4 = 16 positions <= 16 channels, and 16x16 = 256 > 16
def test_eigencam_both_gram_forms_equal_pytorch_grad_cams_svd(size):
    model = tiny_model(seed=13)
    images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(6))
    ours = bind("eigencam", model, layer="body")(images, 1).maps[:, 0]
    with torch.inference_mode():
        activations = model.network.body(images)
    theirs = torch.from_numpy(get_2d_projection_with_sign_correction(activations.numpy()))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3)


def test_vit_eigencam_equals_the_sign_corrected_projection_of_the_patch_tokens(vit_case):
    vit, images = vit_case
    explain = bind("eigencam", vit)
    ours = explain(images, 1).maps[:, 0]
    captured = {}
    hook = explain.target.module.register_forward_hook(lambda m, i, o: captured.update(a=o.detach()))
    try:
        with torch.inference_mode():
            vit.network(images)
    finally:
        hook.remove()
    theirs = torch.from_numpy(get_2d_projection_with_sign_correction(reshape_transform(captured["a"]).numpy()))
    r = pearson(ours, theirs)
    assert r.min() >= R_MIN, r  # a LayerNorm output: summing channels could not have fixed the sign


def swin_reshape_transform(tensor: torch.Tensor, height: int = 7, width: int = 7) -> torch.Tensor:
    """pytorch-grad-cam's documented Swin reshape (its `swinT_example.py`), word for word."""
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(2))
    result = result.transpose(2, 3).transpose(1, 2)
    return result


SWIN, CONVNEXT = "timm:swin_tiny_patch4_window7_224", "timm:convnext_atto"


@functools.cache
def timm_case(name: str):
    """Swin (channels-last maps, token sequences in its blocks) or ConvNeXt (pool -> LayerNorm -> linear head),
    random init, and two sample images: built once for the module.
    """
    torch.manual_seed(0)
    model = load_model(name, "none", require_cam_head=False)
    return name, model, sample_batch(model, {"chelsea.png", "coffee.png"})


@pytest.fixture(params=[SWIN, CONVNEXT])
def channels_last_case(request):
    return timm_case(request.param)


def _compare_with_pytorch_grad_cam(model, images, method, layer, target, reshape=None) -> None:
    explain = bind(method, model, layer=layer)
    ours = explain(images, 1)
    with REFERENCE[method](model.network, [target], reshape_transform=reshape) as reference:
        theirs = torch.from_numpy(reference(images, [ClassifierOutputTarget(int(c)) for c in ours.class_index[:, 0]]))
    mine = as_grad_cam_does(ours.maps[:, 0], images.shape[-1])
    empty = mine.flatten(1).amax(1) == 0  # random init: a map can be all negative, so empty after ReLU
    assert torch.all(theirs[empty] == 0)
    assert (~empty).sum() >= 1
    r = pearson(mine[~empty], theirs[~empty])
    assert r.min() >= R_MIN, (method, layer, r)


@pytest.mark.parametrize("method", REFERENCE)
def test_swin_and_convnext_gradient_methods_equal_pytorch_grad_cam(channels_last_case, method):
    name, model, images = channels_last_case
    explain = bind(method, model)
    if "swin" in name:  # its final norm is [B, 7, 7, 768]: read as channels-last, never transposed
        assert (explain.layer, explain.target.layout) == ("norm", "channels_last")
        reshape = lambda t: t.permute(0, 3, 1, 2)  # noqa: E731 - what the layout means, spelled out
    else:
        assert (explain.layer, explain.target.layout) == ("norm_pre", "channels_first")
        reshape = None
    _compare_with_pytorch_grad_cam(model, images, method, None, explain.target.module, reshape)


def test_swin_gradcam_on_block_tokens_equals_pytorch_grad_cam_with_its_documented_reshape():
    _, model, images = timm_case(SWIN)
    target = model.network.layers[-1].blocks[-1].norm2  # the target layer pytorch-grad-cam's Swin example uses
    explain = bind("gradcam", model, layer="layers.3.blocks.1.norm2")
    assert explain.target.layout == "tokens" and explain.target.module is target
    _compare_with_pytorch_grad_cam(model, images, "gradcam", "layers.3.blocks.1.norm2", target, swin_reshape_transform)


def test_auto_picks_cam_for_swin_and_gradcam_for_convnext(channels_last_case):
    name, model, images = channels_last_case
    explain = bind("auto", model)
    maps = explain(images, 2)
    assert maps.maps.shape == (2, 2, 7, 7) and torch.isfinite(maps.maps).all()
    if "swin" in name:  # pool -> linear after a per-token norm: CAM's identity holds on the channels-last map
        assert explain.name == "cam"
        with torch.inference_mode():
            logits = model.network(images)
            mean_plus_bias = maps.maps.mean((2, 3)) + model.head.bias[maps.class_index]
        torch.testing.assert_close(mean_plus_bias, logits.gather(1, maps.class_index), atol=1e-4, rtol=1e-4)
    else:
        assert explain.name == "gradcam" and "LayerNorm2d" in model.cam_refusal and "does not hold" in model.cam_refusal
