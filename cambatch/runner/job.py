"""A run as its engines take it: the `Job` (what is left to do, and everything that turns an image into
overlays and rows), the `Stages` built from a config before the first batch, and the run's result.

`cambatch.runner.pipeline` plans a `Job`; an engine (`plain_engine`, `ray_engine`) executes it, one
batch at a time through `cambatch.runner.batches`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..annotations.match import GroundTruth
from ..config import RunConfig
from ..data.gpu_decode import use_gpu_decode
from ..data.inputs import Preprocess
from ..data.loader import DecodePool
from ..errors import UsageError
from ..layout import ImageNames, OutputLayout
from ..methods.base import CamMethod
from ..model.accel import check_precision
from ..model.build import CamModel, load_model
from ..model.catalog import MULTI_LABEL
from ..model.runtime import Notify, to_stderr
from ..names import name_key
from ..report.settings import RunSettings
from ..sources.discover import ImageSource
from ..sources.shard import Shard
from . import tuning
from .engine import CamEngine, build_engine, resolve_device
from .progress import ProgressReporter
from .remote_out import StagedOut
from .writer import ImageWriter

RESIZE = "whole image to input_size x input_size, no crop"


@dataclass(kw_only=True)
class RunResult:
    """What a run did: counts, speed, where its report is, and why it stopped early, if it did."""

    run_id: str
    out: Path | str  # a URL when OUT is on a store
    report: Path | str
    images: int
    ok: int = 0
    errors: int = 0
    overlays: int = 0
    overlay_images: int = 0  # images with at least one overlay written
    elapsed_s: float = 0.0
    skipped: int = 0  # already in the report from an earlier run
    errors_kept: int = 0  # of those, images whose report rows say they failed (not retried)
    relabelled: int = 0  # finished images redone because their label is another now (`resume.plan`)
    interrupted: str | None = None  # the signal that stopped the run early
    shard: str = "0/1"
    errors_by_path: dict[str, str] = field(default_factory=dict)
    method: str = ""  # the method used (`auto` resolved)
    multi_label: bool = False  # --activation sigmoid: probabilities per class, `correct` by the predicted set
    layer: str | None = None  # the layer its maps come from
    faithfulness: dict | None = None  # averages of the faithfulness columns (`FaithfulnessTally.summary`)
    runtime: str = ""  # which runtime ran which passes (`Execution.summary`)
    annotation_problems: list[str] = field(default_factory=list)  # malformed --annotations entries, file:line
    check: Any = None  # with --check: the verdict (`cambatch.checks.results.CheckRun`, a layer above the runner)

    @property
    def processed(self) -> int:
        return self.ok + self.errors

    @property
    def failed(self) -> int:
        """This run's images that the report now holds as failed: this run's errors and the earlier ones kept."""
        return self.errors + self.errors_kept

    @property
    def images_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(kw_only=True)
class Stages:
    """What a run builds before its first batch, from its config."""

    model: CamModel
    device: torch.device
    method: CamMethod
    engine: CamEngine
    plan: tuning.Plan
    gpu_decode: bool
    class_ids: list[int] | None


@dataclass(kw_only=True)
class Job:
    """A planned run as an engine takes it: the images still to do, and everything that turns them into
    overlays and report rows.
    """

    config: RunConfig
    stages: Stages
    layout: OutputLayout
    todo: list[ImageSource]
    settings: dict
    shard: Shard
    writer: ImageWriter
    result: RunResult
    progress: ProgressReporter
    labels: list[int] | None = None  # per `todo` image, the class `--explain-label` adds (-1: none)
    staged: StagedOut | None = None  # OUT is a URL: the staging folder's mirror, told of every published part
    read_ahead: DecodePool | None = None  # decoding started before torch was imported (`runner.read_ahead`)


def new_run_id(started_at: datetime) -> str:
    """The UTC start time first, so that run ids sort by age (`report.schema.newest_run`)."""
    return started_at.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def build_stages(config: RunConfig, *, notify: Notify = to_stderr) -> Stages:
    """Model, device, method and engine, in the order their checks need; nothing runs yet.

    `notify` gets the lines the run's display shows on the way (a conversion to the runtime).
    """
    net, maps, speed = config.network, config.maps, config.speed
    device = resolve_device(speed.device)
    check_precision(speed.precision, device)
    gpu_decode = use_gpu_decode(speed.gpu_decode, device)  # `on` without nvJPEG: refused before any work
    model = load_model(
        net.model,
        net.weights,
        num_classes=net.num_classes,
        class_names_file=net.class_names,
        image_size=net.image_size,
        trust_checkpoint=net.trust_checkpoint,
        require_cam_head=maps.method == "cam",
    )
    class_ids = resolve_classes(maps.classes, model.class_names) if maps.classes else None
    engine = build_engine(model, device, config, classes=class_ids, notify=notify)
    plan = tuning.plan(
        device.type,
        overlays=config.output.overlays,
        threads=speed.threads,
        workers=speed.workers,
        batch_size=speed.batch_size,
        writer_threads=speed.writer_threads,
    )
    return Stages(
        model=model,
        device=device,
        method=engine.method,
        engine=engine,
        plan=plan,
        gpu_decode=gpu_decode,
        class_ids=class_ids,
    )


def run_settings(config: RunConfig, stages: Stages, *, run_id: str, shard: Shard, device: str) -> RunSettings:
    """What produced the report: stored in every part's Parquet metadata and in the manifest."""
    model, maps, net = stages.model, config.maps, config.network
    return RunSettings(
        run_id=run_id,
        cambatch_version=__version__,
        torch_version=torch.__version__,
        model=model.name,
        weights=model.weights,
        weights_sha256=model.weights_sha256,
        **stages.method.settings(),
        activation=net.activation,
        threshold=net.threshold if net.activation == MULTI_LABEL else None,
        topk=maps.topk,
        classes=stages.class_ids,
        explain_label=maps.explain_label,
        embeddings=maps.embeddings,
        sanity=maps.sanity,
        road=maps.road,
        deletion_insertion=maps.deletion_insertion,
        annotations=str(config.source.annotations) if config.source.annotations else None,
        input_size=model.input_size,
        resize=RESIZE,
        interpolation=model.interpolation,
        mean=list(model.mean),
        std=list(model.std),
        device=device,
        shard=str(shard),
        class_names=model.class_names,
        options=config.options(),
        inputs=[p if isinstance(p, str) else str(Path(p).absolute()) for p in config.inputs],
    )


def label_classes(sources: list[ImageSource], class_names: list[str]) -> list[int]:
    """Each source's label as a class index (by `name_key`, else a class index written as text, as the WSOL
    metadata gives it); -1 without a label or for a label that names no class.
    """
    by_name = {name_key(name): i for i, name in enumerate(class_names)}
    found = []
    for source in sources:
        label = source.label or ""
        index = by_name.get(name_key(label)) if label else None
        if index is None and label.isdigit() and int(label) < len(class_names):
            index = int(label)
        found.append(-1 if index is None else index)
    return found


def resolve_classes(requested: tuple[str, ...], class_names: list[str]) -> list[int]:
    """Class names (compared by `name_key`) or indices to indices; a name several classes share is refused."""
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        by_name.setdefault(name_key(name), []).append(i)
    resolved = []
    for item in requested:
        found = [int(item)] if item.isdigit() and int(item) < len(class_names) else by_name.get(name_key(item), [])
        if not found:
            raise UsageError(
                f"unknown class {item!r} (classes, --classes): give a class name or an index below {len(class_names)}"
            )
        if len(found) > 1:
            raise UsageError(
                f"class name {item!r} (classes, --classes) names {len(found)} classes, indices "
                f"{', '.join(map(str, found))}: give the index of the one you mean"
            )
        resolved.extend(found)
    return list(dict.fromkeys(resolved))


def image_writer(
    config: RunConfig,
    stages: Stages,
    layout: OutputLayout,
    run_id: str,
    *,
    truth: GroundTruth | None,
    names: ImageNames,
    problems: list[str],
) -> ImageWriter:
    """The run's `ImageWriter`; it adds the annotation problems it meets (a box outside its image) to `problems`."""
    out = config.output
    return ImageWriter(
        layout=layout,
        model_name=stages.model.name,
        method=stages.method.name,
        run_id=run_id,
        class_names=stages.model.class_names,
        colormap=out.colormap,
        alpha=out.alpha,
        overlays=out.overlays,
        named_by_rank=stages.class_ids is None,
        truth=truth,
        names=names,
        problems=problems,
    )


def preprocess(config: RunConfig, stages: Stages) -> Preprocess:
    """How this run turns a picture into a model input and an overlay background."""
    return Preprocess(
        image_size=stages.model.input_size,
        interpolation=stages.model.interpolation,
        overlays=config.output.overlays,
        max_side=config.output.max_side,
    )
