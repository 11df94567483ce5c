"""Run-level metrics: the reference protocol's PxAP test values (clovaai/wsolevaluation `MaskEvaluatorTest`:
a constant map scores the positive share of the pixels) and box sweeps computed by hand."""

import numpy as np
import pytest

from cambatch.evaluation.protocol import pxap, sweep_boxes, threshold_grid

GRID = threshold_grid(100)


def mask_with(positives: int, negatives: int) -> np.ndarray:
    mask = np.zeros(positives + negatives, bool)
    mask[:positives] = True
    return mask.reshape(1, 1, -1)


# (foreground, background) pixel counts of the reference's three OpenImages test masks at 224 x 224.
REFERENCE_MASKS = [(43031, 7145), (833, 49342), (347, 13909)]


@pytest.mark.parametrize(("positives", "negatives"), REFERENCE_MASKS)
@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_map_pxap_is_the_positive_share(positives, negatives, value):
    mask = mask_with(positives, negatives)
    score = pxap(np.full(mask.shape, value), mask, GRID)
    assert 100 * score == pytest.approx(100 * positives / (positives + negatives), abs=0.1)


@pytest.mark.parametrize("ignore_score", [0.0, 1.0])
def test_perfect_map_pxap_is_one_whatever_the_ignored_pixels_score(ignore_score):
    mask = mask_with(500, 1500)
    ignore = np.zeros_like(mask)
    ignore[..., 1000:1200] = True
    scores = mask.astype(float)
    scores[ignore] = ignore_score
    assert pxap(scores, mask, GRID, ignore) == 1.0


def test_pxap_without_positive_pixels_is_refused():
    with pytest.raises(ValueError):
        pxap(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool), GRID)


def block(size, x0, y0, x1, y1, value=1.0, into=None):
    """A map with `value` on pixels x0..x1, y0..y1 (inclusive)."""
    out = np.zeros((size, size)) if into is None else into
    out[y0 : y1 + 1, x0 : x1 + 1] = value
    return out


def test_sweep_by_hand_largest_and_all_regions_and_the_best_threshold():
    s = 40
    # Image 0: core 10..19 (1.0) in a halo 5..29 (0.5); the box is the core from t = 0.5 on.
    halo = block(s, 5, 5, 29, 29, 0.5)
    m0 = block(s, 10, 10, 19, 19, 1.0, into=halo)
    # Image 1: a big decoy region (rows 0..9) and the true object, a small block, apart from it.
    m1 = block(s, 0, 0, 39, 9, 1.0)
    m1 = block(s, 30, 30, 35, 35, 1.0, into=m1)
    gt = np.array([[[10, 10, 18, 18]], [[30, 30, 35, 35]]])
    sweep = sweep_boxes(np.stack([m0, m1]), gt, np.ones((2, 1), bool), GRID)
    # Image 0, below 0.5: box 5..30 (x1 = last + 1): IoU = 81 / 26^2; from 0.5: box 10..20: IoU = 81 / 121.
    assert sweep.largest[0, 49] == pytest.approx(81 / 26**2)
    assert sweep.largest[0, 50] == pytest.approx(81 / 121)
    # Image 1: the largest region is the decoy (IoU 0); all regions find the block: box 30..36 vs 30..35.
    assert (sweep.largest[1] == 0).all()
    assert sweep.all_regions[1] == pytest.approx(np.full(100, 36 / 49))
    acc, best = sweep.max_box_acc()
    assert (acc, best) == (0.5, 0.5)
    # V2, all regions: image 0 reaches 0.3 and 0.5 from t = 0.5 (81/121 = 0.669 < 0.7), image 1 up to 0.7.
    assert sweep.max_box_acc_v2() == pytest.approx(np.mean([1.0, 1.0, 0.5]))
    assert sweep.index_of(0.2) == 20
