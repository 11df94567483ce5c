"""`cambatch.methods.deletion`: RISE's deletion and insertion, against a direct implementation of the
published procedure (Petsiuk et al., BMVC 2018; `CausalMetric.single_run` of github.com/eclique/RISE,
`evaluation.py`), on the same model, images and maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from methods_support import cpu_execution
from trust_support import boxed_maps, by_kind, sensitive_model

from cambatch.methods.base import select_classes
from cambatch.methods.deletion import STEPS, auc, blurred, deletion_insertion_scores, rise_kernel
from cambatch.methods.perturbation import input_maps

gaussian_filter = pytest.importorskip("scipy.ndimage").gaussian_filter
ORACLE_BOUND = 1e-4


def gkern(klen: int, nsig: float) -> torch.Tensor:
    """RISE's `gkern`: the Gaussian blur kernel of its insertion substrate, [3, 3, klen, klen]."""
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    for c in range(3):
        kern[c, c] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_scores(network, image, explanation, c, mode, step):
    """RISE's `single_run` for class c (softmax) instead of the top one: the probability after each step."""
    hw = image.shape[-1] * image.shape[-2]
    n_steps = (hw + step - 1) // step
    substrate = F.conv2d(image, gkern(11, 5), padding=11 // 2) if mode == "ins" else torch.zeros_like(image)
    start, finish = (image.clone(), substrate) if mode == "del" else (substrate, image.clone())
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
    for i in range(n_steps + 1):
        with torch.no_grad():
            scores[i] = network(start).softmax(1)[0, c]
        if i < n_steps:
            coords = salient_order[:, step * i : step * (i + 1)]
            start.numpy().reshape(1, 3, hw)[0, :, coords] = finish.numpy().reshape(1, 3, hw)[0, :, coords]
    return scores


def rise_auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def test_deletion_and_insertion_equal_rise():
    model = sensitive_model()
    network = model.network.eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        selection = select_classes(network(images), 2, activation="softmax")
    cams = selection.with_maps(torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(12)), images)
    ours = deletion_insertion_scores(network, images, cams, execution=cpu_execution(), activation="softmax")
    maps = input_maps(cams.maps, (32, 32)).numpy()
    for b in range(2):
        for k in range(2):
            c = int(cams.class_index[b, k])
            for name, mode in (("deletion_auc", "del"), ("insertion_auc", "ins")):
                curve = rise_scores(network, images[b : b + 1].clone(), maps[b, k], c, mode, 32 * 32 // STEPS)
                assert abs(float(ours[name][b, k]) - rise_auc(curve)) <= ORACLE_BOUND, (name, b, k)


def test_kernel_and_blur_are_rises():
    assert torch.equal(rise_kernel(), gkern(11, 5)[0, 0])
    images = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(blurred(images), F.conv2d(images, gkern(11, 5), padding=5))


def test_auc_is_the_trapezoid_rule():
    curves = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.5, 0.0]])
    torch.testing.assert_close(auc(curves), torch.tensor([1.0, 0.5, 0.5]))


def test_a_flat_map_has_no_scores():
    model = sensitive_model()
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        selection = select_classes(model.network.eval()(images), 2, activation="softmax")
    maps = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(15))
    maps[0, 1] = 3.0
    scores = deletion_insertion_scores(
        model.network, images, selection.with_maps(maps, images), execution=cpu_execution(), activation="softmax"
    )
    for name in ("deletion_auc", "insertion_auc"):
        assert not scores[name][0, 0].isnan() and scores[name][0, 1].isnan()


def test_a_map_of_the_object_beats_a_random_map_which_beats_its_inverse(default_model):
    images, cams = boxed_maps(default_model)
    scores = deletion_insertion_scores(
        default_model.network, images, cams, execution=cpu_execution(), activation="softmax"
    )
    insertion = by_kind(scores["insertion_auc"])
    assert (insertion["box"] > insertion["random"]).all() and (insertion["random"] > insertion["inverted"]).all()
