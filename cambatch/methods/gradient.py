"""Gradient methods: Grad-CAM, Grad-CAM++, XGrad-CAM and LayerCAM, for all top-k classes of a batch at once.

One forward pass, then one backward pass per rank k (never one per image): the score of the
rank-k class of every image is summed over the batch and differentiated once. In eval mode the
images of a batch do not interact, so the gradient of that sum with respect to image b's
activations is the gradient of image b's own score. The backward passes start at the logits and
stop at the target layer (see `hooks.ActivationTap`), so they are short. With `--precision`, the
forward and backward passes run under autocast; A and G are combined in float32.

Notation: A [B, C, h, w] the target layer's activations, G [B, K, C, h, w] the gradients of the
K class scores (logits, before softmax) with respect to A. The formulas are pytorch-grad-cam's,
which the tests check these against.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from ..errors import UsageError
from .base import CamMethod, ClassMaps, select_classes, weighted_maps
from .hooks import forward_with_tap


class GradientMethod(CamMethod):
    """The forward and backward passes shared by the gradient methods; subclasses combine A and G."""

    passes = "1 forward + k backward (from the logits to the target layer only)"
    needs_gradient = True

    def _explain(self, images: Tensor, topk: int, classes: Tensor | None, extra: Tensor | None) -> ClassMaps:
        with torch.inference_mode(False), self.execution.autocast():
            logits, leaf = forward_with_tap(self.network, images, self.target, grad_from_here=True)
            selection = select_classes(logits, topk, classes, extra, activation=self.activation)
            if not logits.requires_grad:
                raise UsageError(f"the logits do not depend on layer {self.layer!r}; pick another --layer")
            scores = logits.gather(1, selection.class_index)  # [B, K], still in the graph
            k = scores.shape[1]
            grads = [torch.autograd.grad(scores[:, r].sum(), leaf, retain_graph=r < k - 1)[0] for r in range(k)]
        with torch.no_grad():
            activations = self.target.to_grid(leaf.detach()).float()
            gradients = torch.stack([self.target.to_grid(g) for g in grads], 1).float()
            maps = self.combine(activations, gradients)
        return selection.with_maps(maps, activations)

    @abstractmethod
    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Maps [B, K, h, w] from A [B, C, h, w] and G [B, K, C, h, w]."""


class GradCAM(GradientMethod):
    """Grad-CAM (Selvaraju et al., ICCV 2017): channel weights are the spatially averaged gradients.

    On a GAP -> linear head the gradient of a logit is w_c / (h w) everywhere, so Grad-CAM is CAM / (h w).
    """

    name = "gradcam"

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return weighted_maps(gradients.mean((3, 4)), activations)


class GradCAMpp(GradientMethod):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018), eq. 19 with the exponential's derivatives
    approximated by powers of the gradient, as pytorch-grad-cam does.
    """

    name = "gradcampp"
    eps = 1e-6

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        total = activations.sum((2, 3))[:, None, :, None, None]  # [B, 1, C, 1, 1]
        alpha = g2 / (2 * g2 + total * g3 + self.eps)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        weights = (gradients.clamp(min=0) * alpha).sum((3, 4))
        return weighted_maps(weights, activations)


class XGradCAM(GradientMethod):
    """XGrad-CAM (Fu et al., BMVC 2020): gradients weighted by the normalized activations."""

    name = "xgradcam"
    eps = 1e-7

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        total = activations.sum((2, 3))[:, None, :]  # [B, 1, C]
        weights = torch.einsum("bkchw,bchw->bkc", gradients, activations) / (total + self.eps)
        return weighted_maps(weights, activations)


class LayerCAM(GradientMethod):
    """LayerCAM (Jiang et al., TIP 2021): each position weighted by its own positive gradient."""

    name = "layercam"

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return torch.einsum("bkchw,bchw->bkhw", gradients.clamp(min=0), activations)
