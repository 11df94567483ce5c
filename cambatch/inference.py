"""The device side of a run: normalize, forward, maps, statistics; one copy back to the host."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cam import class_activation_maps
from .errors import UsageError
from .models import CamModel
from .render import display_maps
from .stats import map_statistics


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    return device


@dataclass
class BatchResult:
    """Everything the writers need about one batch's images, on the host."""

    class_index: np.ndarray  # int64 [B, K]
    rank: np.ndarray  # int64 [B, K]
    probability: np.ndarray  # float32 [B, K]
    logit: np.ndarray  # float32 [B, K]
    stats: np.ndarray  # float32 [B, K, len(STAT_COLUMNS)]
    display: np.ndarray | None  # uint8 [B, K, h, w], ReLU'd and min-max normalized, for overlays
    raw_maps: np.ndarray | None  # float16 [B, K, h, w], for --save-maps


class CamEngine:
    """Runs batches of uint8 images through a `CamModel` on `device`."""

    def __init__(self, model: CamModel, device: torch.device, topk: int, classes: list[int] | None = None,
                 want_display: bool = True, want_raw: bool = False):  # fmt: skip
        self.model = model.to(device)
        self.device = device
        self.topk = topk
        self.classes = torch.tensor(classes, dtype=torch.int64, device=device) if classes else None
        self.want_display = want_display
        self.want_raw = want_raw
        # Normalizing uint8 on the device: (x / 255 - mean) / std == (x - 255 mean) / (255 std).
        self._shift = torch.tensor(model.mean, device=device).view(1, 3, 1, 1) * 255
        self._scale = torch.tensor(model.std, device=device).view(1, 3, 1, 1) * 255

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> BatchResult:
        images = (pixels.to(self.device, non_blocking=True).float() - self._shift) / self._scale
        cams = class_activation_maps(self.model, images, self.topk, self.classes)
        b, k, h, w = cams.maps.shape
        stats = map_statistics(cams.maps.reshape(b * k, h, w)).reshape(b, k, -1)
        display = display_maps(cams.maps) if self.want_display else None
        raw = cams.maps.half() if self.want_raw else None
        host = [t.cpu().numpy() if t is not None else None for t in (cams.class_index, cams.rank, cams.probability, cams.logit, stats, display, raw)]
        return BatchResult(*host)
