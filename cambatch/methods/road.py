"""ROAD: RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022), as pytorch-grad-cam's `metrics/road.py` computes it, for every row of a batch at once.

For a map m (the raw map upsampled bilinearly to the input, `perturbation.input_maps`) and a
percentile q, MoRF (most relevant first) removes the pixels with m >= the q-th percentile of m
(linear interpolation, as `np.percentile`): the (100 - q) % most relevant; LeRF (least relevant
first) removes those with -m >= the q-th percentile of -m (pytorch-grad-cam ranks by 1 - m, the same
order). The removed pixels are filled by noisy linear imputation (`imputation.linear_imputation`,
noise 0.01 on the normalized input) and the class's probability p_q read again without retraining:

    road_morf = mean_q (p_q^MoRF - p),  road_lerf = mean_q (p_q^LeRF - p),  road_combined = (road_lerf - road_morf) / 2

over q in 10, 20, ..., 90 (pytorch-grad-cam's `ROADMostRelevantFirstAverage`,
`ROADLeastRelevantFirstAverage` and `ROADCombined` defaults), p being the row's `probability`.
A faithful map makes MoRF drop the probability (road_morf low) and LeRF keep it (road_lerf high).
A flat map has no order to remove pixels by: its columns are NaN. Cost: 18 forwards per row, plus
the imputations, in forwards of the batch's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..model.accel import Execution
from .base import ClassMaps
from .hooks import network_as_is
from .imputation import linear_imputation
from .perturbation import flat_rows, input_maps, probe

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # pytorch-grad-cam's ...Average and ROADCombined defaults
NOISE = 0.01  # the imputation noise of the paper and of pytorch-grad-cam's NoisyLinearImputer
NOISE_SEED = 0  # each batch draws its noise from a generator seeded with this: a batch's columns repeat exactly
# Imputations solved together, by device type. Every system of a chunk iterates until the slowest has
# converged, and on a CPU a small chunk's buffers stay in cache: 4 at a time solved twice as fast per
# image as 36 (2-core EPYC, one thread). A GPU wants work for its launches: 64 hold ~0.5 GB at 224 px.
SOLVE_CHUNK = {"cuda": 64}
CPU_SOLVE_CHUNK = 4


def percentiles(values: Tensor, qs: Sequence[float]) -> Tensor:
    """[..., len(qs)]: the qs-th percentiles (0..100) of each row of values [..., L], as `np.percentile`'s default
    ('linear') computes them for one q at a time: the index in float64, the interpolation in the values' dtype,
    from whichever end is nearer (so the thresholds, and the pixels they remove, match to the last bit).
    """
    n = values.shape[-1]
    virtual = [n * (q / 100) + (1 - q / 100) - 1 for q in qs]  # numpy's _compute_virtual_index(n, q, 1, 1)
    low = [min(max(math.floor(v), 0), n - 1) for v in virtual]
    gamma = [v - math.floor(v) for v in virtual]
    ordered = values.sort(-1).values
    a = ordered[..., low]
    b = ordered[..., [min(i + 1, n - 1) for i in low]]
    t, rest = (torch.tensor(x, dtype=values.dtype, device=values.device) for x in (gamma, [1 - g for g in gamma]))
    upper = torch.tensor([g >= 0.5 for g in gamma], device=values.device)
    return torch.where(upper, b - (b - a) * rest, a + (b - a) * t)


def removal_orders(cams: ClassMaps, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """What each row's pixels are removed by, [R, 2, H * W] (MoRF: the map at the input's resolution; LeRF: its
    negation), R = B * K rows, and the thresholds of its percentiles, [R, 2, len(PERCENTILES)].
    """
    maps = input_maps(cams.maps, size).flatten(0, 1).flatten(1)
    ranked = torch.stack([maps, -maps], 1)
    return ranked, percentiles(ranked, PERCENTILES)


def road_scores(
    network: nn.Module,
    images: Tensor,
    cams: ClassMaps,
    *,
    execution: Execution,
    activation: str,
    noise: float = NOISE,
) -> dict[str, Tensor]:
    """float32 [B, K] per image and class: `road_morf`, `road_lerf`, `road_combined` (see the module).

    `images` are the normalized inputs [B, 3, H, W] the maps were made from; `activation` is the run's.
    Job j is row j // 18 with MoRF (j // 9 even) or LeRF at percentile `PERCENTILES[j % 9]`.
    """
    b, k = cams.class_index.shape
    size = images.shape[-2:]
    ranked, thresholds = removal_orders(cams, size)
    q = len(PERCENTILES)
    generator = torch.Generator(device=images.device).manual_seed(NOISE_SEED)
    solve_chunk = SOLVE_CHUNK.get(images.device.type, CPU_SOLVE_CHUNK)

    def impute(jobs: Tensor) -> Tensor:
        row, order, at = jobs // (2 * q), jobs // q % 2, jobs % q
        known = (ranked[row, order] < thresholds[row, order, at, None]).view(-1, 1, *size)
        return linear_imputation(images[row // k], known, noise=noise, generator=generator)

    with network_as_is(network), torch.inference_mode():
        classes = cams.class_index.reshape(-1).repeat_interleave(2 * q)
        scores = probe(
            network,
            lambda jobs: torch.cat([impute(part) for part in jobs.split(solve_chunk)]),
            classes,
            chunk=b,
            execution=execution,
            activation=activation,
        )
    change = scores.view(b * k, 2, q).mean(2) - cams.probability.reshape(-1, 1).float()
    change[flat_rows(ranked[:, 0])] = float("nan")
    morf, lerf = change.view(b, k, 2).unbind(2)
    return {"road_morf": morf, "road_lerf": lerf, "road_combined": (lerf - morf) / 2}
