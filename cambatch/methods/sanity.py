"""Sanity checks of the maps (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018), as Quantus 0.6
computes them (`quantus/metrics/randomisation/mprt.py`, `random_logit.py`), for every row of a batch at once.

- `sanity_rank_corr`: the model parameter randomisation test. The map of each row is made again, for
  the same image and class, by a copy of the model whose parameters are re-initialised: Quantus's
  `get_random_layer_generator` (`helpers/model/pytorch_model.py`), run to its end in its default
  top-down order, calls `reset_parameters()` on every module that has one (torch's convolutions,
  linear layers, batch/layer/group norms, embeddings: on the default EfficientNet-Lite0 and on a
  ResNet every parameter; a timm ViT keeps its position embedding and class token, which belong to
  no such module), last module first, seeding torch's CPU generator with seed + 1 before each, on
  the CPU in contiguous memory, so the weights do not depend on the device. The column is the
  Spearman rank correlation of the two maps' absolute values (MPRT's defaults: `abs=True`,
  normalised, `correlation_spearman`; a scaling does not move ranks), ties ranked by their mean.
  Near 1: the map barely depends on what the model learnt (Adebayo et al.: Guided Backprop; Grad-CAM
  passes). One copy of the model per run, one more pass of the method per batch.
- `class_sensitivity`: Quantus's RandomLogit. The map of another class of the same image (drawn per
  class from a generator seeded with `SEED`: uniform over the other classes, the same for a class
  in every batch) against the row's, by SSIM as Quantus computes it: each map divided by its
  largest absolute value (RandomLogit's default `normalise_by_max`, no `abs`), flattened row-major,
  then scikit-image's `structural_similarity` on the two 1-D vectors (window 7, sample covariance,
  K1 0.01, K2 0.03, data range max - min of both), averaged over the windows that fit. Near 1: the
  map ignores the class (Eigen-CAM's, by design). One more pass of the method per batch.

Both compare the maps at the input's resolution (`perturbation.input_maps`), as Quantus compares
attributions shaped like the input.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.accel import prepare_network
from .base import CamMethod, ClassMaps
from .perturbation import input_maps

SEED = 42  # Quantus's default seed of MPRT and RandomLogit
SSIM_WINDOW = 7  # scikit-image's default win_size
SSIM_K1, SSIM_K2 = 0.01, 0.03  # scikit-image's defaults


def randomise(network: nn.Module, seed: int = SEED) -> None:
    """Re-initialise `network` in place as Quantus's top-down cascade leaves it at its last layer (see the
    module), then put it back on its device with channels_last weights, as the run prepares networks.
    """
    device = next(network.parameters()).device
    network.to(device="cpu", memory_format=torch.contiguous_format)  # the CPU generator fills in memory order
    modules = [module for _, module in network.named_modules() if hasattr(module, "reset_parameters")]
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        for module in reversed(modules):
            torch.default_generator.manual_seed(seed + 1)
            module.reset_parameters()
    prepare_network(network, device)


def randomised_copy(method: CamMethod, seed: int = SEED) -> CamMethod:
    """A copy of `method` bound to a re-initialised copy of its network (same layer, same `Execution`)."""
    twin = copy.deepcopy(method, memo={id(method.execution): method.execution})
    randomise(twin.network, seed)
    return twin


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..L of each row of [R, L], ties given their mean rank (as `scipy.stats.rankdata`)."""
    ordered, order = values.sort(-1)
    low = torch.searchsorted(ordered, ordered, side="left")
    high = torch.searchsorted(ordered, ordered, side="right")
    return torch.empty_like(values).scatter_(-1, order, (low + high + 1).to(values.dtype) / 2)


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """[R]: the Spearman rank correlation of each pair of rows of a and b [R, L] (NaN where a row is flat)."""
    ra, rb = average_ranks(a.float()), average_ranks(b.float())
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))


def normalise_by_max(values: Tensor) -> Tensor:
    """Each row of [R, L] divided by its largest absolute value (an all-zero row stays zero), as Quantus."""
    peak = values.abs().amax(-1, keepdim=True)
    return torch.where(peak > 0, values / peak.clamp(min=torch.finfo(values.dtype).tiny), values)


def flat_ssim(a: Tensor, b: Tensor) -> Tensor:
    """[R]: scikit-image's `structural_similarity` of each pair of 1-D rows of a and b [R, L] (see the module)."""
    a, b = a.float(), b.float()
    moments = F.avg_pool1d(torch.stack([a, b, a * a, b * b, a * b], 1), SSIM_WINDOW, stride=1)
    ux, uy, uxx, uyy, uxy = moments.unbind(1)  # over each window that fits: scikit-image's cropped mean
    unbiased = SSIM_WINDOW / (SSIM_WINDOW - 1)
    vx, vy, vxy = unbiased * (uxx - ux * ux), unbiased * (uyy - uy * uy), unbiased * (uxy - ux * uy)
    both = torch.cat([a, b], -1)
    data_range = both.amax(-1, keepdim=True) - both.amin(-1, keepdim=True)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return index.mean(-1)


def other_classes(class_index: Tensor, classes: int, seed: int = SEED) -> Tensor:
    """For each class of `class_index` (int64, any shape), another of the model's `classes`: uniform over the
    others, drawn once per class from a generator seeded with `seed`, so a class meets the same one in every batch.
    """
    offsets = torch.randint(1, classes, (classes,), generator=torch.Generator().manual_seed(seed))
    return (class_index + offsets.to(class_index.device)[class_index]) % classes


class SanityCheck:
    """`sanity_rank_corr` and `class_sensitivity` (see the module) of the maps `method` makes."""

    def __init__(self, method: CamMethod, *, seed: int = SEED):
        """Builds the re-initialised copy of `method`'s network (once: it is as large as the model)."""
        self.method = method
        self.seed = seed
        self.randomised = randomised_copy(method, seed)

    def __call__(self, images: Tensor, cams: ClassMaps) -> dict[str, Tensor]:
        """float32 [B, K] per image and class, for the maps `cams` that `method` made of `images`."""
        k = cams.class_index.shape[1]
        original = self._flat(cams.maps, images)
        randomised = self._flat(self.randomised(images, k, cams.class_index).maps, images)
        columns = {"sanity_rank_corr": rank_correlation(original.abs(), randomised.abs())}
        classes = cams.scores.shape[1]
        if classes > 1:
            other = self._flat(self.method(images, k, other_classes(cams.class_index, classes, self.seed)).maps, images)
            columns["class_sensitivity"] = flat_ssim(normalise_by_max(original), normalise_by_max(other))
        else:  # a one-class model has no other class to compare with
            columns["class_sensitivity"] = torch.full_like(columns["sanity_rank_corr"], float("nan"))
        return {name: value.view(-1, k) for name, value in columns.items()}

    @staticmethod
    def _flat(maps: Tensor, images: Tensor) -> Tensor:
        """Maps [B, K, h, w] at the input's resolution, one row each: [B * K, H * W]."""
        return input_maps(maps, images.shape[-2:]).flatten(0, 1).flatten(1)
