"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for CNNs", CVPRW 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.accel import Execution
from .base import CamMethod, ClassMaps, weighted_maps
from .hooks import TargetLayer


class ScoreCAM(CamMethod):
    """Score-CAM (Wang et al., CVPRW 2020), as torchcam computes it.

    Each channel of the target layer, min-max normalized to [0, 1] and upsampled bilinearly to the
    input size, masks the image; the channel's weight for class c is the softmax over channels of
    the class-c logits of the masked images. That is one forward pass per channel and image, run
    `batch_size` masked images at a time with all K classes read off each pass. Channels that are
    constant on an image mask it to zero: those all give the score of the blank input, computed
    once per batch, so only channels that vary are forwarded (exactly the same result, often far fewer passes).
    """

    name = "scorecam"
    passes = "1 forward + 1 forward per varying channel and image, in batches"

    compile_refusal = None  # the tap pass runs eagerly; the masked passes, nearly all the work, compile

    def __init__(
        self,
        network: torch.nn.Module,
        layer: str | TargetLayer | None = None,
        input_size: int = 224,
        *,
        batch_size: int,
        execution: Execution,
        activation: str,
    ):
        """As `CamMethod`; `batch_size`: masked images per forward pass."""
        super().__init__(network, layer, input_size, execution=execution, activation=activation)
        self.batch_size = batch_size

    @torch.inference_mode()
    def _explain(self, images: Tensor, topk: int, classes: Tensor | None, extra: Tensor | None) -> ClassMaps:
        selection, activations = self._tapped_forward(images, topk, classes, extra)
        class_index = selection.class_index
        b, c = activations.shape[:2]
        low = activations.amin((2, 3))
        span = activations.amax((2, 3)) - low  # [B, C]
        blank = self.execution.forward(self.network, torch.zeros_like(images[:1])).float()[
            0
        ]  # scores of the all-zero input
        scores = blank[class_index][:, :, None].repeat(1, 1, c)  # [B, K, C]
        pairs = (span > 0).nonzero()  # (image, channel) pairs worth a forward pass
        for start in range(0, pairs.shape[0], self.batch_size):
            image_ids, channel_ids = pairs[start : start + self.batch_size].unbind(1)
            masks = (activations[image_ids, channel_ids] - low[image_ids, channel_ids, None, None]) / span[
                image_ids, channel_ids, None, None
            ]
            masks = F.interpolate(masks[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
            out = self.execution.forward(self.network, images[image_ids] * masks.to(images.dtype)).float()
            scores[image_ids, :, channel_ids] = out.gather(1, class_index[image_ids])
        maps = weighted_maps(scores.softmax(2), activations)
        return selection.with_maps(maps, activations)

    def settings(self) -> dict:
        return {**super().settings(), "scorecam_batch": self.batch_size}
