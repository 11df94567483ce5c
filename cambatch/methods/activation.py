"""Methods that need no gradient: CAM (exact, for GAP -> linear heads), Score-CAM and Eigen-CAM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cam import ClassMaps, class_activation_maps, select_classes
from ..errors import UsageError
from ..models import CamModel, _ForwardFeatures
from .base import CamMethod, weighted_maps
from .hooks import forward_with_tap
from .layers import TargetLayer


class CAM(CamMethod):
    """Class Activation Maps (Zhou et al., CVPR 2016), exactly: see `cambatch.cam`.

    Bound to a `CamModel` whose head `load_model` has proven to be GAP -> linear; the layer is
    the one that feeds that pooling, and cannot be chosen.
    """

    name = "cam"
    passes = "1 forward"

    def __init__(self, model: CamModel):  # noqa: D107 - no layer search: the model's split fixes it
        if model.head is None or model.features is None:
            raise UsageError(model.cam_refusal or f"{model.name}: CAM needs a global-average-pool -> linear head")
        self.model = model
        self.network = model.network
        self.target = None
        self._layer = _features_name(model)

    @property
    def layer(self) -> str:
        return self._layer

    @torch.inference_mode()
    def _explain(self, images: Tensor, topk: int, classes: Tensor | None) -> ClassMaps:
        return class_activation_maps(self.model, images, topk, classes)


def _features_name(model: CamModel) -> str:
    """A name for the layer whose output CAM weighs: a module path where there is one."""
    features = model.features
    if isinstance(features, _ForwardFeatures):
        return "forward_features"
    names = {id(module): name for name, module in model.network.named_modules() if name}
    if id(features) in names:
        return names[id(features)]
    parts = list(features) if isinstance(features, torch.nn.Sequential) else []
    if len(parts) == 2 and id(parts[0]) in names and isinstance(parts[1], torch.nn.ReLU):  # DenseNet
        return names[id(parts[0])] + " + relu"
    last = next((names[id(m)] for m in reversed(parts) if id(m) in names), None)
    return last or type(features).__name__


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

    def __init__(self, network: torch.nn.Module, layer: str | TargetLayer | None = None, input_size: int = 224, batch_size: int = 32):
        if batch_size < 1:
            raise UsageError("--scorecam-batch must be at least 1")
        super().__init__(network, layer, input_size)
        self.batch_size = batch_size

    @torch.inference_mode()
    def _explain(self, images: Tensor, topk: int, classes: Tensor | None) -> ClassMaps:
        logits, raw = forward_with_tap(self.network, images, self.target)
        class_index, rank, probability, logit = select_classes(logits, topk, classes)
        activations = self.target.to_grid(raw).float()
        b, c = activations.shape[:2]
        low = activations.amin((2, 3))
        span = activations.amax((2, 3)) - low  # [B, C]
        blank = self.network(torch.zeros_like(images[:1])).float()[0]  # scores of the all-zero input
        scores = blank[class_index][:, :, None].repeat(1, 1, c)  # [B, K, C]
        pairs = (span > 0).nonzero()  # (image, channel) pairs worth a forward pass
        for start in range(0, pairs.shape[0], self.batch_size):
            image_ids, channel_ids = pairs[start : start + self.batch_size].unbind(1)
            masks = (activations[image_ids, channel_ids] - low[image_ids, channel_ids, None, None]) / span[image_ids, channel_ids, None, None]
            masks = F.interpolate(masks[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
            out = self.network(images[image_ids] * masks.to(images.dtype)).float()
            scores[image_ids, :, channel_ids] = out.gather(1, class_index[image_ids])
        maps = weighted_maps(scores.softmax(2), activations)
        return ClassMaps(class_index, rank, probability, logit, maps)

    def settings(self) -> dict:
        return {**super().settings(), "scorecam_batch": self.batch_size}


class EigenCAM(CamMethod):
    """Eigen-CAM (Muhammad and Yeasin, IJCNN 2020): the first principal component of the activations.

    Class-agnostic: each image gets one map, repeated for its K classes. The positions' channel
    vectors are centred and projected on their first principal axis, as pytorch-grad-cam's SVD
    does; here the axis comes from one batched eigendecomposition of the smaller Gram matrix
    (positions x positions, or channels x channels), several times faster than a batched SVD.
    The math leaves the sign open (pytorch-grad-cam's EigenCAM leaves it to chance, which can turn
    a map into its ReLU'd-away negative); it is fixed as Seg-Eigen-CAM does (Chung and Ying, 2025,
    eq. 13; pytorch-grad-cam's `get_2d_projection_with_sign_correction`): the value of largest
    magnitude is made positive. (Agreeing with the summed activations would not do: a LayerNorm
    output, a ViT's usual target, sums to about zero over channels.)
    """

    name = "eigencam"
    passes = "1 forward + 1 batched eigendecomposition"
    class_specific = False

    @torch.inference_mode()
    def _explain(self, images: Tensor, topk: int, classes: Tensor | None) -> ClassMaps:
        logits, raw = forward_with_tap(self.network, images, self.target)
        class_index, rank, probability, logit = select_classes(logits, topk, classes)
        activations = self.target.to_grid(raw).float()
        b, _, h, w = activations.shape
        points = activations.flatten(2).transpose(1, 2).double()  # [B, h*w, C]
        points = points - points.mean(1, keepdim=True)
        if points.shape[1] <= points.shape[2]:  # X X^T = U S^2 U^T: projection X v1 = u1 s1
            values, vectors = torch.linalg.eigh(points @ points.transpose(1, 2))  # ascending
            projection = vectors[:, :, -1] * values[:, -1:].clamp(min=0).sqrt()
        else:  # X^T X = V S^2 V^T: projection X v1
            projection = (points @ torch.linalg.eigh(points.transpose(1, 2) @ points)[1][:, :, -1:])[:, :, 0]
        flip = projection.amin(1).abs() > projection.amax(1).abs()
        projection = torch.where(flip[:, None], -projection, projection).float()  # [B, h*w]
        maps = projection.reshape(b, 1, h, w).expand(b, class_index.shape[1], h, w).contiguous()
        return ClassMaps(class_index, rank, probability, logit, maps)
