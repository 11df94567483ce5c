"""Faithfulness of maps: "Average Drop" and "Increase in Confidence" (Chattopadhyay et al., WACV 2018).

For each image and explained class c with probability p, the normalized input is multiplied by
the class's map (ReLU'd, min-max scaled to [0, 1], upsampled bilinearly to the input size, the
way the overlay shows it) and run through the network again:

- `masked_probability`: p_masked, the probability of c for the masked input (as `probability`: softmax or sigmoid);
- `confidence_drop`: max(0, p - p_masked) / p; its mean is the paper's Average Drop (lower is better);
- `confidence_increase`: p_masked > p; its mean is the Increase in Confidence (higher is better).

One extra forward pass of the whole batch per rank k. torchcam reports the same two measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.accel import Execution
from .base import ClassMaps, probabilities
from .hooks import network_as_is
from .normalize import unit_maps


def faithfulness_scores(
    network: nn.Module,
    images: Tensor,
    cams: ClassMaps,
    *,
    execution: Execution,
    activation: str,
) -> dict[str, Tensor]:
    """[B, K] per image and class: `masked_probability`, `confidence_drop` (float32), `confidence_increase` (bool).

    `activation` is the run's (softmax or sigmoid): the masked probability is computed as `probability` was.
    """
    with network_as_is(network), torch.inference_mode():
        masks = unit_maps(cams.maps)  # [B, K, h, w]; all-negative or flat maps mask everything out
        masked = []
        for k in range(masks.shape[1]):  # one forward per rank, each over the whole batch
            mask = F.interpolate(masks[:, k : k + 1], size=images.shape[-2:], mode="bilinear", align_corners=False)
            scores = probabilities(execution.forward(network, images * mask.to(images.dtype)), activation)
            masked.append(scores.gather(1, cams.class_index[:, k : k + 1])[:, 0])
        masked_probability = torch.stack(masked, 1)
        p = cams.probability.float()
        increase = masked_probability > p
        return {
            "masked_probability": masked_probability,
            "confidence_drop": confidence_drop(p, masked_probability),
            "confidence_increase": increase,
        }


def confidence_drop(p: Tensor, changed: Tensor) -> Tensor:
    """max(0, p - p_changed) / p: the share of a class's probability lost when the input changed (0 when it rose)."""
    return (p - changed).clamp(min=0) / p.clamp(min=torch.finfo(torch.float32).tiny)


_ORDER = ("masked_probability", "confidence_drop", "confidence_increase")  # the tally's sums, in this order


@dataclass
class FaithfulnessTally:
    """Running averages over a run, for its final summary."""

    maps: int = 0
    top1_maps: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros(3))
    top1_sums: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def add(self, scores: dict[str, np.ndarray] | None, rank: np.ndarray, kept: np.ndarray | None = None) -> None:
        """Add a batch: `faithfulness_scores` on the host ([B, K] arrays), `rank` [B, K], `kept` [B, K] the
        columns that are rows (None: all).
        """
        if scores is None or rank.size == 0:
            return
        keep = np.ones(rank.size, bool) if kept is None else kept.reshape(-1)
        flat = np.stack([scores[name] for name in _ORDER], -1).reshape(-1, 3).astype(np.float64)[keep]
        top1 = flat[rank.reshape(-1)[keep] == 1]
        self.maps += flat.shape[0]
        self.top1_maps += top1.shape[0]
        self.sums += flat.sum(0)
        self.top1_sums += top1.sum(0)

    def merge(self, other: FaithfulnessTally) -> None:
        """Add another tally's maps (a Ray actor's batch) to this one."""
        self.maps += other.maps
        self.top1_maps += other.top1_maps
        self.sums += other.sums
        self.top1_sums += other.top1_sums

    def summary(self) -> dict[str, float | int] | None:
        """Averages in percent (None when nothing was scored)."""
        if not self.maps:
            return None
        mean = self.sums / self.maps
        result: dict[str, float | int] = {
            "maps": self.maps,
            "average_drop_pct": 100 * float(mean[1]),
            "increase_in_confidence_pct": 100 * float(mean[2]),
            "mean_masked_probability": float(mean[0]),
        }
        if self.top1_maps:
            top1 = self.top1_sums / self.top1_maps
            result.update(
                top1_average_drop_pct=100 * float(top1[1]), top1_increase_in_confidence_pct=100 * float(top1[2])
            )
        return result
