"""`cambatch.methods.road`: ROAD, against pytorch-grad-cam's `ROADMostRelevantFirstAverage`,
`ROADLeastRelevantFirstAverage` and `ROADCombined` on the same model, images and maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from methods_support import bind, cpu_execution
from trust_support import boxed_maps, by_kind, sensitive_model

from cambatch.methods.base import ClassMaps
from cambatch.methods.perturbation import input_maps
from cambatch.methods.road import PERCENTILES, percentiles, road_scores

road = pytest.importorskip("pytorch_grad_cam.metrics.road")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget  # noqa: E402

ORACLE_BOUND = 1e-3  # imputation noise off: the same pixels removed, the same system, solved to 1e-4
NOISY_BOUND = 2e-3  # noise on (0.01, drawn differently on each side): the largest difference measured here was 2.5e-4
SIZE = 40  # TinyNet takes any size: 40 px inputs give 20 x 20 maps, and pytorch-grad-cam's sparse solves are quick


def scores_of(model, images, cams, noise=0.0):
    return road_scores(model.network, images, cams, execution=cpu_execution(), activation="softmax", noise=noise)


def references(model, images, cams):
    """pytorch-grad-cam's three scores [B, K], each class of each image as its target (in one call per class)."""
    maps = input_maps(cams.maps, images.shape[-2:]).numpy()
    metrics = {
        "road_morf": road.ROADMostRelevantFirstAverage(),
        "road_lerf": road.ROADLeastRelevantFirstAverage(),
        "road_combined": road.ROADCombined(),
    }
    found = {name: np.zeros(cams.class_index.shape) for name in metrics}
    for k in range(cams.class_index.shape[1]):
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in cams.class_index[:, k]]
        for name, metric in metrics.items():
            found[name][:, k] = metric(images, maps[:, k], targets, model.network.eval())
    return found


@pytest.fixture(scope="module")
def case():
    model = sensitive_model()
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(8))
    return model, images, bind("cam", model)(images, 2)


def test_road_equals_pytorch_grad_cam_without_noise(case, monkeypatch):
    model, images, cams = case
    monkeypatch.setattr(road.NoisyLinearImputer.__init__, "__defaults__", (0.0, road.neighbors_weights))
    ours, theirs = scores_of(model, images, cams), references(model, images, cams)
    for name, expected in theirs.items():
        np.testing.assert_allclose(ours[name].numpy(), expected, atol=ORACLE_BOUND, rtol=0, err_msg=name)


def test_road_with_noise_stays_within_the_stated_bound(case):
    model, images, cams = case
    torch.manual_seed(0)  # pytorch-grad-cam draws its noise from torch's global generator
    ours, theirs = scores_of(model, images, cams, noise=0.01), references(model, images, cams)
    for name, expected in theirs.items():
        np.testing.assert_allclose(ours[name].numpy(), expected, atol=NOISY_BOUND, rtol=0, err_msg=name)


def test_percentiles_match_numpy_to_the_last_bit():
    """As pytorch-grad-cam asks: `np.percentile(mask, q)` of a float32 map, one q at a time."""
    values = torch.randn(4, 3, 1000, generator=torch.Generator().manual_seed(9)) * 5
    values[0, 0, :500] = 1.0  # ties
    ours = percentiles(values, PERCENTILES).numpy()
    expected = [[[np.percentile(row, q) for q in PERCENTILES] for row in image] for image in values.numpy()]
    assert np.array_equal(ours, np.array(expected, dtype=np.float32))


def test_combined_is_half_the_difference_and_flat_maps_give_nan(case):
    model, images, cams = case
    flat = ClassMaps(**{**cams.__dict__, "maps": cams.maps.clone()})
    flat.maps[1, 0] = 2.0
    scores = scores_of(model, images, flat)
    halved = (scores["road_lerf"] - scores["road_morf"]) / 2
    torch.testing.assert_close(scores["road_combined"], halved, equal_nan=True)
    assert all(scores[name][1, 0].isnan() for name in scores) and not scores["road_morf"][0].isnan().any()


def test_a_map_of_the_object_beats_a_random_map_which_beats_its_inverse(default_model):
    images, cams = boxed_maps(default_model)
    combined = by_kind(scores_of(default_model, images, cams, noise=0.01)["road_combined"])
    assert (combined["box"] > combined["random"]).all() and (combined["random"] > combined["inverted"]).all()
