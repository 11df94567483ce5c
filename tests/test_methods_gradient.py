"""The gradient methods: Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM: their formulas, batching and ViTs."""

from __future__ import annotations

import pytest
import torch
from methods_support import bind, sample_batch

from cambatch.methods.registry import method_class

GRADIENT = ("gradcam", "gradcampp", "xgradcam", "layercam")


@pytest.mark.parametrize("which", ["default", "resnet18"])
def test_gradcam_is_relu_cam_up_to_a_positive_scale_on_a_gap_linear_model(which, default_model, resnet18):
    model = default_model if which == "default" else resnet18
    images = sample_batch(model, {"chelsea.png", "coffee.png", "rocket.jpg"})
    cam = bind("cam", model)(images, 3)
    grad = bind("gradcam", model)(images, 3)
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


def test_gradient_methods_work_even_when_called_under_inference_mode(resnet18, resnet_images):
    explain = bind("gradcam", resnet18)
    expected = explain(resnet_images[:2], 2).maps
    with torch.inference_mode():
        images = resnet_images[:2].clone()
        got = explain(images, 2).maps
    torch.testing.assert_close(got, expected)


def test_vit_gradient_methods_give_patch_grid_maps(vit):
    images = sample_batch(vit, {"chelsea.png", "astronaut.png"})
    for method in GRADIENT:
        maps = bind(method, vit)(images, 2).maps
        assert maps.shape == (2, 2, 14, 14) and torch.isfinite(maps).all()
        assert (maps.flatten(2).abs().amax(2) > 0).all(), method  # after the last attention they would be 0
