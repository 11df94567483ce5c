"""`cambatch.methods.sanity`: the model parameter randomisation test and RandomLogit, against Quantus 0.6.

Quantus is not a dev dependency (it pulls opencv-python, which clashes with the opencv-python-headless
cambatch installs): the tests that call it are skipped without it (`pip install --no-deps
quantus==0.6.0 scikit-image cachetools` runs them). The others check the same formulas against scipy
and a direct port of scikit-image's SSIM, and the randomisation against Quantus's loop written out.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from methods_support import bind, cpu_execution, sample_batch, tiny_model
from scipy.stats import spearmanr

from cambatch.methods.cam import CAM
from cambatch.methods.gradient import GradCAM
from cambatch.methods.perturbation import input_maps
from cambatch.methods.sanity import (
    SanityCheck,
    average_ranks,
    flat_ssim,
    normalise_by_max,
    other_classes,
    randomise,
    rank_correlation,
)

ORACLE_BOUND = 1e-3


def quantus_randomised(network: torch.nn.Module, seed: int = 42) -> torch.nn.Module:
    """Quantus's `get_random_layer_generator(order="top_down", seed)` (helpers/model/pytorch_model.py) run to
    its last layer, written out: a deep copy, every module with `reset_parameters` reset, last first, each
    after `torch.manual_seed(seed + 1)`.
    """
    twin = copy.deepcopy(network)
    modules = [m for _, m in twin.named_modules() if hasattr(m, "reset_parameters")]
    for module in modules[::-1]:
        torch.manual_seed(seed + 1)
        module.reset_parameters()
    return twin


def ssim_1d(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image's `structural_similarity(a, b, win_size=7, data_range=max - min of both)` for 1-D float
    arrays, written out (skimage/metrics/_structural_similarity.py: uniform filter, sample covariance, the
    mean over the positions whose window fits), as Quantus's `ssim` calls it.
    """
    a, b, win = a.astype(np.float64), b.astype(np.float64), 7
    data_range = np.concatenate([a, b]).max() - np.concatenate([a, b]).min()

    def mean(x):
        return np.convolve(x, np.ones(win) / win, mode="valid")

    ux, uy = mean(a), mean(b)
    cov = win / (win - 1)
    vx, vy, vxy = cov * (mean(a * a) - ux * ux), cov * (mean(b * b) - uy * uy), cov * (mean(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return float(np.mean((2 * ux * uy + c1) * (2 * vxy + c2) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))))


def test_randomise_leaves_the_weights_quantus_leaves():
    for model in (tiny_model(seed=5), _resnet_like()):
        ours = copy.deepcopy(model.network)
        randomise(ours)
        theirs = quantus_randomised(model.network)
        for (name, mine), expected in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(mine, expected), name
        assert not torch.equal(ours.state_dict()["fc.weight"], model.network.state_dict()["fc.weight"])


def _resnet_like():
    """A network with batch norms (whose `reset_parameters` also resets the running statistics)."""
    import torchvision

    torch.manual_seed(0)
    return dataclasses.replace(tiny_model(), network=torchvision.models.resnet18(num_classes=5).eval())


def test_randomise_leaves_the_callers_random_stream_and_the_original_alone():
    model = tiny_model(seed=6)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    SanityCheck(bind("cam", model))
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(v, before[k]) for k, v in model.network.state_dict().items())


def test_rank_correlation_is_spearmans_with_ties():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 300, generator=g), torch.randn(4, 300, generator=g)
    a[0, :100] = 0.0  # ties, ranked by their mean as scipy does
    b[1] = a[1] * 3 + 1  # a monotone copy: 1
    ours = rank_correlation(a, b)
    expected = [spearmanr(x, y)[0] for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)
    assert ours[1] == pytest.approx(1.0)
    assert torch.equal(average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]])), torch.tensor([[3.5, 1.0, 3.5, 2.0]]))


def test_flat_ssim_is_scikit_images_on_the_flattened_maps():
    g = torch.Generator().manual_seed(2)
    a = normalise_by_max(torch.randn(3, 500, generator=g))
    b = normalise_by_max(a + 0.3 * torch.randn(3, 500, generator=g))
    ours = flat_ssim(a, b)
    expected = [ssim_1d(x, y) for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5)
    assert flat_ssim(a, a).numpy() == pytest.approx(1.0)


def test_other_classes_are_seeded_uniform_and_never_the_class():
    classes = torch.arange(1000).repeat(2, 1)
    other = other_classes(classes, 1000)
    assert (other != classes).all() and torch.equal(other[0], other[1])  # a class meets the same one every batch
    assert torch.equal(other_classes(classes[:1, 500:], 1000), other[:1, 500:])
    assert torch.equal(other_classes(torch.arange(10), 10, seed=1), other_classes(torch.arange(10), 10, seed=1))
    drawn = torch.stack([other_classes(torch.tensor(0), 5, seed=seed) for seed in range(2000)])
    assert torch.equal(torch.unique(drawn), torch.tensor([1, 2, 3, 4]))
    assert (torch.bincount(drawn)[1:] - 500).abs().max() < 100  # about 500 of each of the 4 others


def test_eigencam_is_blind_to_the_class_and_cam_is_not(default_model):
    images = sample_batch(default_model, ["chelsea.png", "coffee.png"])
    eigen = SanityCheck(bind("eigencam", default_model))
    cam = SanityCheck(bind("cam", default_model))
    eigen_scores = eigen(images, eigen.method(images, 2))
    cam_scores = cam(images, cam.method(images, 2))
    assert (eigen_scores["class_sensitivity"] > 0.999).all()  # one map for every class: SSIM 1
    assert cam_scores["class_sensitivity"].mean() < 0.5


def test_cam_and_gradcam_at_the_last_block_rank_alike(default_model):
    images = sample_batch(default_model, ["chelsea.png", "coffee.png", "rocket.jpg"])
    cam = bind("cam", default_model)(images, 3)
    gradcam = bind("gradcam", default_model, layer="bn2")(images, 3)
    size = images.shape[-2:]
    rows = [input_maps(m.maps, size).flatten(0, 1).flatten(1) for m in (cam, gradcam)]
    assert (rank_correlation(*rows) >= 0.999).all()


# ---- Quantus itself -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantus():
    return pytest.importorskip("quantus")


def explainer(maps_of):
    """A Quantus `explain_func`: the maps `maps_of(network, images, classes)` gives, at the input's resolution."""

    def explain(model, inputs, targets, **_):
        images = torch.as_tensor(inputs)
        classes = torch.as_tensor(targets).long()[:, None]
        return input_maps(maps_of(model, images, classes), images.shape[-2:]).numpy()

    return explain


def cam_of(model):
    def maps_of(network, images, classes):
        rebound = dataclasses.replace(model, network=network, features=network.body, head=network.fc)
        return CAM(rebound, execution=cpu_execution(), activation="softmax")(images, 1, classes).maps

    return maps_of


def gradcam_of(model, layer):
    def maps_of(network, images, classes):
        method = GradCAM(network, layer, model.input_size, execution=cpu_execution(), activation="softmax")
        return method(images, 1, classes).maps

    return maps_of


def oracle_case(name, default_model):
    if name == "tiny cam":
        model = tiny_model(seed=4)
        return model, bind("cam", model), cam_of(model), torch.randn(3, 3, 32, 32)
    return default_model, bind("gradcam", default_model), gradcam_of(default_model, "bn2"), None


@pytest.mark.parametrize("name", ["tiny cam", "default gradcam"])
def test_sanity_rank_corr_equals_quantus_mprt(name, quantus, default_model):
    model, method, maps_of, images = oracle_case(name, default_model)
    images = sample_batch(model, ["chelsea.png", "coffee.png"]) if images is None else images
    cams = method(images, 2)
    ours = SanityCheck(method)(images, cams)["sanity_rank_corr"].flatten()
    metric = quantus.MPRT(skip_layers=True, return_last_correlation=True, disable_warnings=True)
    theirs = metric(
        model=model.network,
        x_batch=images.repeat_interleave(2, 0).numpy(),
        y_batch=cams.class_index.flatten().numpy(),
        a_batch=input_maps(cams.maps, images.shape[-2:]).flatten(0, 1)[:, None].numpy(),
        explain_func=explainer(maps_of),
        channel_first=True,
        batch_size=len(cams.class_index.flatten()),
    )
    np.testing.assert_allclose(ours.numpy(), theirs, atol=ORACLE_BOUND)


def quantus_seed_for(label: int, other: int, classes: int) -> int:
    """A seed with which Quantus's RandomLogit (one sample a call) draws `other` for `label` (its draw: after
    `np.random.seed(seed)`, index `randint(0, classes - 1)` among the classes other than the label).
    """
    for seed in range(100_000):
        np.random.seed(seed)
        index = int(np.random.randint(0, classes - 1, 1)[0])
        if index + (index >= label) == other:
            return seed
    raise AssertionError(f"no seed draws class {other}")


@pytest.mark.parametrize("name", ["tiny cam", "default gradcam"])
def test_class_sensitivity_equals_quantus_random_logit(name, quantus, default_model):
    model, method, maps_of, images = oracle_case(name, default_model)
    images = sample_batch(model, ["chelsea.png", "coffee.png"]) if images is None else images
    cams = method(images, 2)
    ours = SanityCheck(method)(images, cams)["class_sensitivity"]
    classes = cams.scores.shape[1]
    asked = []
    explain = explainer(maps_of)

    def recording(model, inputs, targets, **kwargs):
        asked.append(int(targets[0]))
        return explain(model, inputs, targets, **kwargs)

    maps = input_maps(cams.maps, images.shape[-2:])
    for (b, k), label in np.ndenumerate(cams.class_index.numpy()):
        other = int(other_classes(cams.class_index[b, k], classes))
        seed = quantus_seed_for(label, other, classes)
        metric = quantus.RandomLogit(num_classes=classes, seed=seed, disable_warnings=True)
        theirs = metric(
            model=model.network,
            x_batch=images[b : b + 1].numpy(),
            y_batch=np.array([label]),
            a_batch=maps[b : b + 1, k : k + 1].numpy(),
            explain_func=recording,
            channel_first=True,
            batch_size=1,
        )
        assert asked[-1] == other  # Quantus explained the same other class
        assert abs(float(ours[b, k]) - float(theirs[0])) <= ORACLE_BOUND, (b, k)
