"""Eigen-CAM (Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import CamMethod, ClassMaps


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
    def _explain(self, images: Tensor, topk: int, classes: Tensor | None, extra: Tensor | None) -> ClassMaps:
        selection, activations = self._tapped_forward(images, topk, classes, extra)
        class_index = selection.class_index
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
        return selection.with_maps(maps, activations)
