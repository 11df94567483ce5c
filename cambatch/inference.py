"""The device side of a run: normalize, forward, maps, statistics; one copy back to the host."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UsageError
from .methods import FaithfulnessTally, build_method, faithfulness_scores
from .models import CamModel
from .render import display_maps
from .stats import map_statistics


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, else mps, else cpu. Under torchrun, `LOCAL_RANK` picks the GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
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
    faithfulness: np.ndarray | None = None  # float32 [B, K, 3] (methods.FAITHFULNESS_COLUMNS), for --faithfulness


class CamEngine:
    """Runs batches of uint8 images through a `CamModel` on `device`, mapping them with `method`
    (a `cambatch.methods` name or `auto`; `self.method` is the method object, resolved and bound)."""

    def __init__(self, model: CamModel, device: torch.device, topk: int, classes: list[int] | None = None,
                 want_display: bool = True, want_raw: bool = False, method: str = "cam", layer: str | None = None,
                 scorecam_batch: int | None = None, faithfulness: bool = False):  # fmt: skip
        self.model = model.to(device)
        self.method = build_method(method, model, layer, scorecam_batch)
        self.faithfulness = faithfulness
        self.tally = FaithfulnessTally()  # running averages of the faithfulness scores, for the run's summary
        self.device = device
        self.topk = topk
        self.classes = torch.tensor(classes, dtype=torch.int64, device=device) if classes else None
        self.want_display = want_display
        self.want_raw = want_raw
        # Normalizing uint8 on the device: (x / 255 - mean) / std == (x - 255 mean) / (255 std).
        self._shift = torch.tensor(model.mean, device=device).view(1, 3, 1, 1) * 255
        self._scale = torch.tensor(model.std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, pixels: torch.Tensor) -> BatchResult:
        with torch.no_grad():  # not inference mode: the gradient methods backpropagate from these images' logits
            images = (pixels.to(self.device, non_blocking=True).float() - self._shift) / self._scale
        cams = self.method(images, self.topk, self.classes)
        with torch.inference_mode():
            b, k, h, w = cams.maps.shape
            stats = map_statistics(cams.maps.reshape(b * k, h, w)).reshape(b, k, -1)
            display = display_maps(cams.maps) if self.want_display else None
            raw = cams.maps.half() if self.want_raw else None
            faithful = faithfulness_scores(self.model.network, images, cams) if self.faithfulness else None
        host = [t.cpu().numpy() if t is not None else None for t in (cams.class_index, cams.rank, cams.probability, cams.logit, stats, display, raw, faithful)]
        result = BatchResult(*host)
        self.tally.add(result.faithfulness, result.rank)
        return result
