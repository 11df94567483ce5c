"""The whole job: sources -> decode/preprocess -> model -> maps -> statistics -> overlays -> report.

`run(RunConfig.create(...))` is the Python API behind `cambatch run`. The loader's worker processes
decode; the main thread keeps the device busy; a small thread pool renders overlays while the next
batch runs, with a bounded number of images in flight so memory stays flat.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import socket
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from .. import __version__
from ..annotations.match import GroundTruth, annotate
from ..config import RunConfig, SpeedOptions
from ..data.gpu_decode import DecodedBatches, EncodedImageFiles, GpuDecoder, collate_encoded, use_gpu_decode
from ..data.inputs import Preprocess
from ..data.preprocess import Batch, ImageFiles, collate
from ..errors import UsageError
from ..layout import OutputLayout
from ..methods.base import CamMethod
from ..model.accel import check_precision
from ..model.build import CamModel, load_model
from ..model.catalog import MULTI_LABEL
from ..report.parts import published_parts
from ..report.schema import name_key
from ..report.writer import ReportWriter
from ..sources.discover import ImageSource, discover
from ..sources.identity import distinct
from ..sources.lists import read_list
from ..sources.shard import Shard, parse_shard
from . import resume, tuning
from .engine import CamEngine, build_engine, resolve_device
from .failures import output_failure
from .interrupt import stop_on_signals
from .lock import OutputLock
from .manifest import live_shard_settings, mark_died, versions, write_manifest
from .progress import ProgressReporter, SilentProgress
from .remote_out import StagedOut
from .writer import ImageWriter, overlay_count


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
    elapsed_s: float = 0.0
    skipped: int = 0  # already in the report from an earlier run
    interrupted: str | None = None  # the signal that stopped the run early
    shard: str = "0/1"
    errors_by_path: dict[str, str] = field(default_factory=dict)
    method: str = ""  # the method used (`auto` resolved)
    multi_label: bool = False  # --activation sigmoid: probabilities per class, `correct` by the predicted set
    layer: str | None = None  # the layer its maps come from
    faithfulness: dict | None = None  # averages of the faithfulness columns (`FaithfulnessTally.summary`)
    annotation_problems: list[str] = field(default_factory=list)  # malformed --annotations entries, file:line

    @property
    def processed(self) -> int:
        return self.ok + self.errors

    @property
    def images_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(kw_only=True)
class _Stages:
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
    """A planned run as an engine (`execute_plain`, `ray_engine.execute`) takes it.

    The images still to do, and everything that turns them into overlays and report rows.
    """

    config: RunConfig
    stages: _Stages
    layout: OutputLayout
    todo: list[ImageSource]
    settings: dict
    shard: Shard
    writer: ImageWriter
    result: RunResult
    progress: ProgressReporter
    labels: list[int] | None = None  # per `todo` image, the class `--explain-label` adds (-1: none)
    staged: StagedOut | None = None  # OUT is a URL: the staging folder's mirror, told of every published part


def run(config: RunConfig, progress: ProgressReporter | None = None) -> RunResult:
    """Run the whole job; raises `UsageError` before any work when a setting is wrong.

    Resumes by default: images the report already holds (same size and mtime) are skipped. A full
    disk, a read-only or a vanished OUT ends the run with `OutputUnwritable` (exit 4, one line):
    the manifest says `failed`, the report keeps only its complete parts, and a rerun resumes.
    `--engine ray` runs the same job as a Ray Data pipeline (`cambatch.runner.ray_engine`).
    """
    progress = progress or SilentProgress()
    if isinstance(config.out, str):
        return _run_into_store(config, progress)
    return _run_local(config, progress)


def _run_local(config: RunConfig, progress: ProgressReporter, staged: StagedOut | None = None) -> RunResult:
    layout = OutputLayout(config.out.expanduser().absolute())
    try:
        if config.speed.engine == "ray":
            from . import ray_engine  # Ray is an optional extra: imported only when asked for

            with ray_engine.connected(config):
                return _run(config, progress, layout, staged)
        return _run(config, progress, layout, staged)
    except OSError as exc:
        failure = output_failure(exc, layout)
        if failure is None:
            raise
        raise failure from exc


def _run_into_store(config: RunConfig, progress: ProgressReporter) -> RunResult:
    """OUT is a URL: the run writes a local staging folder, which `StagedOut` mirrors to the store."""
    with StagedOut(config.out) as staged:
        try:
            result = _run_local(dataclasses.replace(config, out=staged.staging), progress, staged)
        except BaseException:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                staged.finish()  # what the run published before it failed is kept on the store
            raise
        staged.finish()
    result.out, result.report = config.out, f"{config.out}/{staged.layout.report_dir.name}"
    return result


def _run(config: RunConfig, progress: ProgressReporter, layout: OutputLayout, staged: StagedOut | None) -> RunResult:
    started, started_at = time.monotonic(), datetime.now(timezone.utc)
    shard = parse_shard(config.source.shard)
    with OutputLock(layout.lock_path(shard.tag)):
        found = find_sources(config, layout.root)
        # Decided before sharding, so that every shard of one OUT lays its overlays out alike.
        several_roots = len({s.input_root for s in found}) > 1
        found, truth = annotate(found, config.source.annotations)  # all images: every shard matches alike
        sources = [s for s in found if shard.owns(s.rel)]
        if config.maps.explain_label and not any(s.label for s in sources):
            raise UsageError(
                "explain_label (--explain-label) needs labels: add --labels-from-dirs, a --from-list with a label "
                "column, or --annotations with labels"
            )
        distributed = config.speed.engine == "ray"
        # A Ray driver builds the model only to check the settings and record them: its actors run it.
        stages = build_stages(dataclasses.replace(config, speed=DRIVER_SPEED) if distributed else config)
        run_id = new_run_id(started_at)
        settings = _settings(config, stages, run_id, shard)
        if distributed:
            settings["device"] = "ray"  # each actor's parts record the device it ran on
        if config.job.overwrite:
            _start_over(layout, shard)
        # Before any work: the rows kept, and the shards running beside this one, must come from these settings.
        resume.check_settings(
            resume.report_settings(layout.report_dir) + live_shard_settings(layout.root, shard.tag),
            settings,
            layout.root,
        )
        mark_died(layout.root, shard.tag)  # this shard's lock is ours: a run still marked running died
        resume.sweep(layout, shard)  # and so did the writers of this shard's temporary parts
        todo = resume.plan(sources, layout.report_dir, config.job.retry_errors)
        if todo.purge_keys:
            resume.purge(layout, keys=todo.purge_keys)
        if staged is not None:  # the store's report, purged like the staged one, before any work
            staged.push(clear_overlays=config.job.overwrite and shard.count == 1)

        result = RunResult(
            run_id=run_id,
            out=layout.root,
            report=layout.report_dir,
            images=len(sources),
            skipped=todo.skipped,
            shard=str(shard),
            method=stages.method.name,
            layer=stages.method.layer,
            multi_label=config.network.activation == MULTI_LABEL,
        )
        result.annotation_problems = list(truth.problems) if truth is not None else []
        manifest = _Manifest(layout=layout, settings=settings, started_at=started_at, result=result, staged=staged)
        manifest.write("running")
        job = Job(
            config=config,
            stages=stages,
            layout=layout,
            todo=todo.todo,
            settings=settings,
            shard=shard,
            writer=image_writer(config, stages, layout, run_id, truth=truth, several_roots=several_roots),
            result=result,
            progress=progress,
            labels=label_classes(todo.todo, stages.model.class_names) if config.maps.explain_label else None,
            staged=staged,
        )
        progress.start(len(todo.todo))
        try:
            with stop_on_signals() as stop:
                if distributed:
                    from . import ray_engine

                    ray_engine.execute(job, stop)
                else:
                    execute_plain(job, stop)
                if staged is not None:  # every part on the store before the manifest can say `completed`
                    staged.drain()
        except BaseException:
            manifest.write("failed", best_effort=True)
            raise
        finally:
            progress.stop()
        result.elapsed_s = time.monotonic() - started
        result.faithfulness = stages.engine.tally.summary()
        manifest.write("interrupted" if result.interrupted else "completed")
    return result


def execute_plain(job: Job, stop) -> None:
    """The job in this process: loader workers decode, the device computes, writer threads finish images."""
    report = ReportWriter(
        job.layout.report_dir,
        job.layout.part_name(job.result.run_id, job.shard.tag),
        job.settings,
        images_per_part=job.config.output.images_per_part,
        on_publish=job.staged.published if job.staged is not None else None,
    )
    try:
        with tuning.torch_threads(job.stages.plan.threads):
            loader = _loader(job.todo, job.config, job.stages)
            _process(job, loader, report=report, stop=stop)
        report.close()
    except BaseException:
        report.abort()
        raise


# The Ray driver's model stays on its CPU (a head node may have no GPU) and never decodes.
DRIVER_SPEED = SpeedOptions(device="cpu", gpu_decode="off", engine="ray")


def new_run_id(started_at: datetime) -> str:
    """The UTC start time first, so that run ids sort by age (`report.schema.newest_run`)."""
    return started_at.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def find_sources(config: RunConfig, out: Path) -> list[ImageSource]:
    """The images of the INPUTs (the output folder excluded) and of the list."""
    source = config.source
    found = (
        discover(list(config.inputs), exclude=out, labels_from_dirs=source.labels_from_dirs) if config.inputs else []
    )
    if source.from_list is not None:
        found += read_list(source.from_list)
    return distinct(found)


def build_stages(config: RunConfig) -> _Stages:
    """Model, device, method and engine, in the order their checks need; nothing runs yet."""
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
    engine = build_engine(
        model,
        device,
        method=maps.method,
        layer=maps.layer,
        scorecam_batch=maps.scorecam_batch,
        precision=speed.precision,
        compile=speed.compile,
        topk=maps.topk,
        classes=class_ids,
        want_display=config.output.overlays,
        faithfulness=maps.faithfulness,
        activation=net.activation,
        threshold=net.threshold,
    )
    plan = tuning.plan(
        device,
        overlays=config.output.overlays,
        threads=speed.threads,
        workers=speed.workers,
        batch_size=speed.batch_size,
        writer_threads=speed.writer_threads,
    )
    return _Stages(
        model=model,
        device=device,
        method=engine.method,
        engine=engine,
        plan=plan,
        gpu_decode=gpu_decode,
        class_ids=class_ids,
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


def image_writer(
    config: RunConfig,
    stages: _Stages,
    layout: OutputLayout,
    run_id: str,
    *,
    truth: GroundTruth | None = None,
    several_roots: bool = False,
) -> ImageWriter:
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
        several_roots=several_roots,
    )


def _process(job: Job, loader, *, report: ReportWriter, stop) -> None:
    """The hot loop: the device works on one batch while writer threads finish earlier ones."""
    result, plan = job.result, job.stages.plan
    background = tuning.background_priority if plan.background else None
    chooser = tuning.ThreadChooser(plan.thread_choices)
    with ThreadPoolExecutor(plan.writer_threads, thread_name_prefix="cambatch-writer", initializer=background) as pool:
        in_flight: deque[Future] = deque()
        try:
            for batch in loader:
                futures = submit_batch(
                    batch, job.todo, job.stages.engine, job.writer, report, result, pool, labels=job.labels
                )
                in_flight.extend(futures)
                # Bound the images waiting on the writers: memory stays flat however long the run.
                while len(in_flight) > 4 * plan.batch_size:
                    collect(in_flight.popleft(), report, result)
                job.progress.advance(len(batch.samples) + len(batch.failures))
                chooser.batch_done(len(batch.samples))
                if stop:
                    break
        except Exception:
            if not stop:  # loader workers may die of the same Ctrl-C; then finish what is in flight
                raise
        finally:
            if stop:
                result.interrupted = stop.signal_name
        while in_flight:
            collect(in_flight.popleft(), report, result)


def submit_batch(
    batch: Batch,
    sources: list[ImageSource],
    engine: CamEngine,
    writer: ImageWriter,
    report: ReportWriter,
    result: RunResult,
    pool: ThreadPoolExecutor,
    *,
    labels: list[int] | None = None,
) -> list[Future]:
    """Record the batch's failures, run its images on the device, and hand each one to a writer thread.

    `sources[i]` is the image of the batch's index `i`, `labels[i]` the class `--explain-label` adds for it
    (`label_classes`); each future returns an image's rows for `collect`.
    """
    for failure in batch.failures:
        _record_failure(sources[failure.index], failure.error, writer, report, result)
    if not batch.samples:
        return []
    extra = None if labels is None else torch.tensor([labels[s.index] for s in batch.samples])
    outputs = engine(batch.pixels, extra)
    return [pool.submit(writer.ok_rows, sources[s.index], s, outputs, i) for i, s in enumerate(batch.samples)]


def _record_failure(
    source: ImageSource, error: str, writer: ImageWriter, report: ReportWriter, result: RunResult
) -> None:
    report.add_image(writer.error_row(source, error))
    result.errors += 1
    result.errors_by_path[source.rel] = error


def collect(future: Future, report: ReportWriter, result: RunResult) -> None:
    """Add a finished image's rows to the report (its overlays are on disk by now) and count it."""
    rows: pa.Table = future.result()
    report.add_image(rows)
    result.ok += 1
    result.overlays += overlay_count(rows)


class _Manifest:
    """`OUT/runs/<run_id>.json`, rewritten as the run's status changes."""

    def __init__(
        self,
        *,
        layout: OutputLayout,
        settings: dict,
        started_at: datetime,
        result: RunResult,
        staged: StagedOut | None = None,
    ):
        self.layout, self.settings, self.started_at, self.result = layout, settings, started_at, result
        self.staged = staged

    def write(self, status: str, *, best_effort: bool = False) -> None:
        """Rewrite the manifest; `best_effort`: on the way out of a failure, which a full disk must not hide."""
        if best_effort and not self.layout.root.is_dir():
            return  # OUT vanished: writing the manifest would recreate it
        try:
            path = self._write(status)
        except OSError:
            if not best_effort:
                raise
            return
        if self.staged is not None:
            self.staged.manifest_written(path, final=status != "running")

    def _write(self, status: str) -> Path:
        r, s = self.result, self.settings
        ended = datetime.now(timezone.utc).isoformat() if status != "running" else None
        return write_manifest(
            self.layout.manifest_path(r.run_id),
            {
                "run_id": r.run_id,
                "status": status,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "argv": sys.argv,
                "shard": r.shard,
                "started": self.started_at.isoformat(),
                "ended": ended,
                "model": s["model"],
                "weights": s["weights"],
                "weights_sha256": s["weights_sha256"],
                "method": s["method"],
                "device": s["device"],
                "versions": versions(),
                "counts": {"images": r.images, "ok": r.ok, "error": r.errors, "skipped": r.skipped},
                "elapsed_s": round(r.elapsed_s, 3),
                "images_per_s": round(r.images_per_s, 3),
                "interrupted_by": r.interrupted,
                "faithfulness": r.faithfulness,
                "parts": self._parts(),
                "settings": {k: v for k, v in s.items() if k != "class_names"},
            },
        )

    def _parts(self) -> list[str]:
        """The report parts this run has published (a Ray run's actors each publish their own)."""
        prefix = self.layout.part_name(self.result.run_id, parse_shard(self.result.shard).tag) + "-"
        names = {part.name for part in published_parts(self.layout.report_dir) if part.name.startswith(prefix)}
        if self.staged is not None and self.result.processed:  # a Ray run's actors upload their parts themselves
            names.update(self.staged.parts_on_store(prefix))
        return sorted(names)


def _start_over(layout: OutputLayout, shard: Shard) -> None:
    """--overwrite: drop this shard's rows; a whole-dataset run also clears the overlays."""
    if layout.report_dir.is_dir():
        resume.purge(layout, shard=shard)
    if shard.count == 1:
        shutil.rmtree(layout.overlays_dir, ignore_errors=True)


def resolve_classes(requested: tuple[str, ...], class_names: list[str]) -> list[int]:
    """Class names (compared by `name_key`) or indices to indices."""
    by_name = {name_key(name): i for i, name in enumerate(class_names)}
    resolved = []
    for item in requested:
        if item.isdigit() and int(item) < len(class_names):
            resolved.append(int(item))
        elif name_key(item) in by_name:
            resolved.append(by_name[name_key(item)])
        else:
            raise UsageError(
                f"unknown class {item!r} (classes, --classes): give a class name or an index below {len(class_names)}"
            )
    return list(dict.fromkeys(resolved))


def preprocess(config: RunConfig, stages: _Stages) -> Preprocess:
    """How this run turns a picture into a model input and an overlay background."""
    return Preprocess(
        image_size=stages.model.input_size,
        interpolation=stages.model.interpolation,
        overlays=config.output.overlays,
        max_side=config.output.max_side,
    )


def _loader(sources: list[ImageSource], config: RunConfig, stages: _Stages) -> DataLoader | DecodedBatches:
    plan, device = stages.plan, stages.device
    prep = preprocess(config, stages)
    loader = DataLoader(
        EncodedImageFiles(sources, prep) if stages.gpu_decode else ImageFiles(sources, prep),
        batch_size=plan.batch_size,
        num_workers=plan.workers,
        collate_fn=collate_encoded if stages.gpu_decode else collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if plan.workers else None,
        worker_init_fn=tuning.background_priority if plan.background else None,
    )
    return DecodedBatches(loader, GpuDecoder(prep, device)) if stages.gpu_decode else loader


def _settings(config: RunConfig, stages: _Stages, run_id: str, shard: Shard) -> dict:
    """What produced the report: stored in the Parquet schema metadata."""
    model = stages.model
    return {
        "run_id": run_id,
        "cambatch_version": __version__,
        "torch_version": torch.__version__,
        "model": model.name,
        "weights": model.weights,
        "weights_sha256": model.weights_sha256,
        **stages.method.settings(),
        "activation": config.network.activation,
        "threshold": config.network.threshold if config.network.activation == MULTI_LABEL else None,
        "topk": config.maps.topk,
        "classes": stages.class_ids,
        "explain_label": config.maps.explain_label,
        "input_size": model.input_size,
        "resize": "whole image to input_size x input_size, no crop",
        "interpolation": model.interpolation,
        "mean": list(model.mean),
        "std": list(model.std),
        "device": str(stages.device),
        "shard": str(shard),
        "class_names": model.class_names,
        "options": config.options(),
        "inputs": [p if isinstance(p, str) else str(Path(p).absolute()) for p in config.inputs],
    }
