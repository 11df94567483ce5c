"""`cambatch.methods.faithfulness`: Average Drop and Increase in Confidence, per map and over a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from methods_support import bind, faithfulness_of, tiny_model

from cambatch.methods import FaithfulnessTally


def test_faithfulness_scores_follow_their_definition():
    model = tiny_model(seed=7)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    cams = bind("gradcam", model)(images, 2)
    columns = faithfulness_of(model.network, images, cams)
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


def test_faithfulness_leaves_the_network_as_it_was():
    model = tiny_model(seed=7)
    model.network.train()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    cams = bind("cam", model)(images, 2)
    faithfulness_of(model.network, images, cams)
    assert all(m.training for m in model.network.modules())


def test_a_tally_without_top1_rows_has_no_top1_figures():
    tally = FaithfulnessTally()
    scores = {
        "masked_probability": np.array([[0.1]], np.float32),
        "confidence_drop": np.array([[0.4]], np.float32),
        "confidence_increase": np.array([[True]]),
    }
    tally.add(scores, np.array([[7]]))  # --classes: an explained class at rank 7
    tally.add(scores, np.empty((0, 1)))  # an empty batch changes nothing
    summary = tally.summary()
    assert summary["maps"] == 1 and summary["mean_masked_probability"] == pytest.approx(0.1)
    assert "top1_average_drop_pct" not in summary
