"""The device side of a run: normalize, maps, statistics; one copy back to the host per batch."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..config import RunConfig
from ..errors import UsageError
from ..methods.base import CamMethod, ClassMaps
from ..methods.deletion import deletion_insertion_scores
from ..methods.faithfulness import FaithfulnessTally, faithfulness_scores
from ..methods.normalize import display_maps
from ..methods.registry import build_method
from ..methods.road import road_scores
from ..methods.sanity import SanityCheck
from ..methods.statistics import map_statistics
from ..model.accel import Execution, prepare_network
from ..model.build import CamModel
from ..model.catalog import MULTI_LABEL
from ..model.runtime import Notify, resolve_runtime, to_stderr


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
        raise UsageError(f"device {name} (--device): no CUDA device is available here; use cpu or auto")
    return device


@dataclass
class BatchResult:
    """Everything the writers need about one batch's images, on the host.

    `columns` holds the per-class report values by column name (`cambatch.report.schema`), each
    an array [B, K]; adding a per-class column means computing it here under its schema name.
    """

    columns: dict[str, np.ndarray]
    maps: np.ndarray  # float16 [B, K, h, w]: raw maps, kept in the report
    display: np.ndarray | None  # uint8 [B, K, h, w], ReLU'd and min-max normalized, for overlays
    kept: np.ndarray | None = None  # bool [B, K]: the columns that become rows (`methods.base.select_classes`)
    predicted: np.ndarray | None = None  # bool [B, N], multi-label runs: the classes at or above the threshold
    embeddings: np.ndarray | None = None  # float16 [B, C], `--embeddings`: each image's pooled features

    def image(self, i: int) -> BatchResult:
        """Image `i`'s kept columns, as a one-image result ([1, K'] arrays)."""
        cols = np.flatnonzero(self.kept[i]) if self.kept is not None else slice(None)
        return BatchResult(
            {name: value[i : i + 1, cols] for name, value in self.columns.items()},
            self.maps[i : i + 1, cols],
            self.display[i : i + 1, cols] if self.display is not None else None,
            predicted=self.predicted[i : i + 1] if self.predicted is not None else None,
            embeddings=self.embeddings[i : i + 1] if self.embeddings is not None else None,
        )

    @property
    def class_index(self) -> np.ndarray:
        return self.columns["class_index"]

    @property
    def rank(self) -> np.ndarray:
        return self.columns["rank"]


class CamEngine:
    """Runs batches of uint8 images through `method` (bound to `model` on its device).

    `faithfulness` adds the masked-input scores; `sanity`, `road` and `deletion_insertion` the columns of
    `methods.sanity`, `methods.road` and `methods.deletion`; `want_display` the uint8 maps overlays are drawn
    from; `embeddings` each image's pooled features (`ClassMaps.pooled`, as float16); `threshold`, for a
    multi-label method (`activation` sigmoid), picks each image's predicted classes.
    """

    def __init__(
        self,
        model: CamModel,
        method: CamMethod,
        *,
        topk: int,
        classes: list[int] | None,
        want_display: bool,
        faithfulness: bool,
        sanity: bool,
        road: bool,
        deletion_insertion: bool,
        embeddings: bool,
        threshold: float,
    ):  # noqa: D107
        self.model = model
        self.threshold = threshold
        self.method = method
        self.execution: Execution = method.execution
        self.device = next(model.network.parameters()).device
        self.topk = topk
        self.classes = torch.tensor(classes, dtype=torch.int64, device=self.device) if classes else None
        self.want_display = want_display
        self.faithfulness = faithfulness
        self.sanity = SanityCheck(method) if sanity else None  # holds the re-initialised copy of the model
        self.road = road
        self.deletion_insertion = deletion_insertion
        self.embeddings = embeddings
        self.tally = FaithfulnessTally()  # running averages of the faithfulness scores, for the run's summary
        # Normalizing uint8 on the device: (x / 255 - mean) / std == (x - 255 mean) / (255 std).
        self._shift = torch.tensor(model.mean, device=self.device).view(1, 3, 1, 1) * 255
        self._scale = torch.tensor(model.std, device=self.device).view(1, 3, 1, 1) * 255

    def set_threads(self, count: int) -> None:
        """The forward's thread count, from the run's thread plan (`tuning`): the runtime's when it runs the
        method's passes, torch then keeping one thread for what is left to it (normalizing, maps, statistics:
        about 1.5 ms an image), else torch's.

        Why one: torch's OpenMP threads wait for each other at every operator, and those short operators
        collapsed under load (2-thread torch statistics beside a 2-thread OpenVINO forward ran 3 img/s against
        15 with one torch thread, on 2 cores at load 15; docs/performance-runtime.md).
        """
        runtime = self.execution.runtime
        if runtime is not None:
            runtime.threads = count
        torch.set_num_threads(1 if runtime is not None and not self.method.needs_gradient else count)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] to the model's input on the device, with the model's mean and std."""
        with torch.no_grad():  # not inference mode: the gradient methods backpropagate from these images' logits
            # In place: one new tensor, not three. Each fresh one costs its pages' first touch, 6.8 against
            # 0.26 ms a batch of 8 at 224 px on a CPU (the same values: the same operations in the same order).
            return pixels.to(self.device, non_blocking=True).float().sub_(self._shift).div_(self._scale)

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> BatchResult:
        """The batch's maps and columns; `labels` (int64 [B], -1 for none) are explained too (`--explain-label`)."""
        images = self.normalize(pixels)
        cams = self.method(images, self.topk, self.classes, labels)
        checks = self.sanity(images, cams) if self.sanity else {}  # outside inference mode: a gradient method
        with torch.inference_mode():
            b, k, h, w = cams.maps.shape
            columns = {
                "class_index": cams.class_index,
                "rank": cams.rank,
                "probability": cams.probability,
                "logit": cams.logit,
            }
            columns |= {
                name: value.reshape(b, k) for name, value in map_statistics(cams.maps.reshape(b * k, h, w)).items()
            }
            if self.faithfulness:
                columns |= faithfulness_scores(
                    self.model.network, images, cams, execution=self.execution, activation=self.method.activation
                )
            columns |= checks | self._perturbation_scores(images, cams)
            display = display_maps(cams.maps) if self.want_display else None
            maps = cams.maps.half()
            predicted = cams.scores >= self.threshold if self.method.activation == MULTI_LABEL else None
            embeddings = cams.pooled.half() if self.embeddings else None
        host = {name: value.cpu().numpy() for name, value in columns.items()}
        result = BatchResult(
            host,
            maps.cpu().numpy(),
            display.cpu().numpy() if display is not None else None,
            kept=cams.kept.cpu().numpy() if cams.kept is not None else None,
            predicted=predicted.cpu().numpy() if predicted is not None else None,
            embeddings=embeddings.cpu().numpy() if embeddings is not None else None,
        )
        self.tally.add(host if self.faithfulness else None, result.rank, result.kept)
        return result

    def _perturbation_scores(self, images: torch.Tensor, cams: ClassMaps) -> dict[str, torch.Tensor]:
        """The columns of `--road` and `--deletion-insertion` asked for."""
        scores = {}
        options = {"execution": self.execution, "activation": self.method.activation}
        if self.road:
            scores |= road_scores(self.model.network, images, cams, **options)
        if self.deletion_insertion:
            scores |= deletion_insertion_scores(self.model.network, images, cams, **options)
        return scores


def build_engine(
    model: CamModel,
    device: torch.device,
    config: RunConfig,
    *,
    classes: list[int] | None,
    notify: Notify = to_stderr,
) -> CamEngine:
    """`model` moved to `device` (channels_last), the method `config` names built for its precision,
    compilation and runtime, and an engine explaining `classes` (indices; None: the top-k). `notify`
    gets the runtime's lines (a conversion under way).
    """
    maps, speed, net = config.maps, config.speed, config.network
    model.to(device)
    prepare_network(model.network, device)
    runtime, torch_reason = resolve_runtime(
        speed.runtime,
        device_type=device.type,
        precision=speed.precision,
        compile=speed.compile,
        weights=model.weights,
        notify=notify,
    )
    execution = Execution(
        device_type=device.type,
        precision=speed.precision,
        compile=speed.compile,
        runtime=runtime,
        torch_reason=torch_reason,
    )
    bound = build_method(
        maps.method,
        model,
        layer=maps.layer,
        scorecam_batch=maps.scorecam_batch,
        execution=execution,
        activation=net.activation,
    )
    return CamEngine(
        model,
        bound,
        topk=maps.topk,
        classes=classes,
        want_display=config.output.overlays,
        faithfulness=maps.faithfulness,
        sanity=maps.sanity,
        road=maps.road,
        deletion_insertion=maps.deletion_insertion,
        embeddings=maps.embeddings,
        threshold=net.threshold,
    )
