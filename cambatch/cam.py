"""Stage 3b: Class Activation Maps (Zhou et al., CVPR 2016) for many classes of many images at once.

For a GAP + linear head, logit_c = b_c + w_c . mean_hw(F), so the map M_c = sum_k w_ck F_k
satisfies mean_hw(M_c) + b_c = logit_c exactly: the map is the logit spread over space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import CamModel


@dataclass
class ClassMaps:
    """Maps and scores of K classes for each of B images (all tensors on the model's device)."""

    class_index: torch.Tensor  # int64 [B, K]
    rank: torch.Tensor  # int64 [B, K]; 1 = the image's top prediction
    probability: torch.Tensor  # float32 [B, K], softmax over all classes
    logit: torch.Tensor  # float32 [B, K]
    maps: torch.Tensor  # float32 [B, K, h, w], raw (signed, not normalized)


def class_activation_maps(model: CamModel, images: torch.Tensor, topk: int, classes: torch.Tensor | None = None) -> ClassMaps:
    """One forward pass, then the maps of the top-k classes (or of `classes`) in one einsum.

    `images` are normalized model inputs [B, 3, S, S]; `classes` an int64 [K] tensor of class
    indices to explain instead of each image's top-k.
    """
    feature_map = model.features(images)
    logits = model.head(feature_map.mean((2, 3)))
    class_index, rank, probability, logit = select_classes(logits, topk, classes)
    weights = model.head.weight[class_index].float()  # [B, K, C]
    maps = torch.einsum("bkc,bchw->bkhw", weights, feature_map.float())
    return ClassMaps(class_index, rank, probability, logit, maps)


def select_classes(
    logits: torch.Tensor, topk: int, classes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classes to explain in each image, from logits [B, N]: (class_index, rank, probability, logit).

    Each image's top-k classes, or `classes` (int64 [K]) for every image with their ranks among all
    N classes. Every method picks its classes here, so all of them explain the same ones.
    """
    logits = logits.detach().float()
    if classes is None:
        logit, class_index = logits.topk(min(topk, logits.shape[1]), dim=1)
        rank = torch.arange(1, class_index.shape[1] + 1, device=logits.device).expand_as(class_index)
    else:
        class_index = classes.to(logits.device).expand(logits.shape[0], -1)
        logit = logits.gather(1, class_index)
        rank = (logits[:, None, :] > logit[:, :, None]).sum(2) + 1
    probability = logits.softmax(1).gather(1, class_index)
    return class_index, rank, probability, logit
