"""`cambatch.methods.base`: what every method shares: the classes it explains, batching, its settings."""

from __future__ import annotations

import pytest
import torch
from methods_support import bind, cams_of, cpu_execution, normalized_batch, tiny_model

from cambatch.errors import UsageError
from cambatch.methods import METHODS
from cambatch.methods.base import select_classes, weighted_maps

ALL = tuple(METHODS)  # cam, gradcam, gradcampp, xgradcam, layercam, scorecam, eigencam


@torch.inference_mode()
def test_explicit_classes_report_their_rank(default_model):
    x = normalized_batch(default_model, ["coffee.png"])
    logits = default_model.network(x)[0]
    espresso, last = 967, int(logits.argmin())
    cams = cams_of(default_model, x, topk=3, classes=torch.tensor([last, espresso]))
    assert cams.class_index.tolist() == [[last, espresso]]
    assert cams.rank.tolist() == [[1000, 1]]


@pytest.mark.parametrize("method", ALL)
def test_a_mixed_batch_gives_each_image_its_own_map(method):
    model = tiny_model(seed=3)
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    images[3] = images[1]  # a repeated image gets the same maps
    explain = bind(method, model, scorecam_batch=7)  # chunks that straddle images
    together = explain(images, 3)
    alone = [explain(images[i : i + 1], 3) for i in range(5)]
    for i, single in enumerate(alone):
        assert torch.equal(together.class_index[i], single.class_index[0])
        torch.testing.assert_close(together.maps[i], single.maps[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together.maps[3], together.maps[1])


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam", "eigencam"])
def test_real_images_in_one_batch_match_one_at_a_time_and_no_map_is_left_empty(method, resnet18, resnet_images):
    images = resnet_images[:4]
    explain = bind(method, resnet18)
    together = explain(images, 3)
    assert together.maps.shape == (4, 3, 7, 7)
    assert (together.maps.flatten(2).abs().amax(2) > 0).all()  # the "short target list" bug leaves zero maps
    for i in (0, 3):
        torch.testing.assert_close(together.maps[i], explain(images[i : i + 1], 3).maps[0], atol=1e-4, rtol=1e-3)


def test_chosen_classes_are_explained_for_every_image(resnet18, resnet_images):
    classes = torch.tensor([5, 900])
    maps = bind("gradcam", resnet18)(resnet_images[:3], 2, classes)
    assert maps.class_index.tolist() == [[5, 900]] * 3
    cams = bind("cam", resnet18)(resnet_images[:3], 2, classes)
    torch.testing.assert_close(maps.rank, cams.rank)


def test_select_classes_top_k():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, -1.0, 4.0, 0.0]])
    class_index, rank, probability, logit, scores, kept = select_classes(logits, 2, activation="softmax")
    assert kept is None
    assert class_index.tolist() == [[1, 3], [0, 2]] and rank.tolist() == [[1, 2], [1, 2]]
    assert logit.tolist() == [[3.0, 2.0], [5.0, 4.0]]
    torch.testing.assert_close(probability, logits.softmax(1).gather(1, class_index))
    torch.testing.assert_close(scores, logits.softmax(1))
    assert select_classes(logits, 10, activation="softmax")[0].shape == (2, 4)  # k beyond the classes: all of them


def test_select_classes_chosen_ones_get_their_rank_among_all_classes():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, -1.0, 4.0, 0.0]])
    class_index, rank, probability, logit, _, _ = select_classes(logits, 1, torch.tensor([2, 1]), activation="softmax")
    assert class_index.tolist() == [[2, 1], [2, 1]]  # the same classes for every image, in the order asked
    assert rank.tolist() == [[3, 1], [2, 4]]
    assert logit.tolist() == [[1.0, 3.0], [4.0, -1.0]]
    torch.testing.assert_close(probability, logits.softmax(1).gather(1, class_index))


def test_select_classes_extra_class_keeps_its_true_rank_and_stand_ins_are_not_kept():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, -1.0, 4.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    # image 0: class 0 is ranked 4th; image 1: class 2 is already in its top-2; image 2: no label
    class_index, rank, probability, logit, _, kept = select_classes(
        logits, 2, extra=torch.tensor([0, 2, -1]), activation="softmax"
    )
    assert class_index.tolist() == [[1, 3, 0], [0, 2, 0], [3, 2, 3]]
    assert rank.tolist() == [[1, 2, 4], [1, 2, 1], [1, 2, 1]]
    assert kept.tolist() == [[True, True, True], [True, True, False], [True, True, False]]
    assert logit[0].tolist() == [3.0, 2.0, 0.0]
    torch.testing.assert_close(probability, logits.softmax(1).gather(1, class_index))
    chosen = select_classes(logits, 1, torch.tensor([2]), extra=torch.tensor([1, 2, -1]), activation="softmax")
    assert chosen[0].tolist() == [[2, 1], [2, 2], [2, 2]] and chosen[1][0].tolist() == [3, 1]
    assert chosen.kept.tolist() == [[True, True], [True, False], [True, False]]


def test_select_classes_with_sigmoid_ranks_by_logit_and_scores_each_class_alone():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, -1.0, 4.0, 0.0]])
    softmax, sigmoid = select_classes(logits, 2, activation="softmax"), select_classes(logits, 2, activation="sigmoid")
    assert torch.equal(sigmoid.class_index, softmax.class_index) and torch.equal(sigmoid.rank, softmax.rank)
    torch.testing.assert_close(sigmoid.probability, sigmoid.logit.sigmoid())
    torch.testing.assert_close(sigmoid.scores, logits.sigmoid())
    assert (sigmoid.scores.sum(1) - 1).abs().min() > 0.5  # not a distribution over the classes


def test_weighted_maps_sum_channels_by_their_weights():
    g = torch.Generator().manual_seed(0)
    weights, activations = torch.randn(2, 3, 4, generator=g), torch.randn(2, 4, 5, 6, generator=g)
    maps = weighted_maps(weights.half(), activations)
    assert maps.shape == (2, 3, 5, 6) and maps.dtype == torch.float32
    expected = sum(weights.half().float()[1, 2, c] * activations[1, c] for c in range(4))
    torch.testing.assert_close(maps[1, 2], expected)


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam", "eigencam"])
def test_methods_that_hook_every_pass_refuse_compile(method):
    with pytest.raises(UsageError, match=f"compile \\(--compile\\) does not apply to {method}"):
        bind(method, tiny_model(), execution=cpu_execution(compile=True))


def test_settings_say_how_the_maps_were_made():
    model = tiny_model()
    assert bind("gradcam", model).settings() == {"method": "gradcam", "layer": "body"}
    assert bind("scorecam", model, scorecam_batch=5).settings() == {
        "method": "scorecam",
        "layer": "body",
        "scorecam_batch": 5,
    }
    assert repr(bind("layercam", model, layer="body.1")) == "LayerCAM(layer='body.1')"
