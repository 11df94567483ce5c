"""The whole run: lock OUT, check the settings against what OUT holds, plan what is left to do, hand the
`Job` to its engine, and record the run's manifest.

`run(RunConfig.create(...))` is the Python API behind `cambatch run`. The engines
(`cambatch.runner.engines`) do the work: sources -> decode/preprocess -> model -> maps -> statistics ->
overlays -> report.

This module imports no torch itself: it finds the run's images and may start decoding them
(`read_ahead`) before it imports the modules that build the model (`job`), in the second or so those
imports take.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..annotations.match import annotate
from ..config import RunConfig
from ..errors import UsageError
from ..layout import MARKER_TEXT, ImageNames, OutputLayout
from ..model.catalog import MULTI_LABEL
from ..sources.shard import Shard, parse_shard
from . import read_ahead, resume
from .engines import engine
from .failures import output_failure
from .inputs import find_sources
from .interrupt import stop_on_signals
from .lock import OutputLock
from .manifest import RunManifest, live_shard_settings, mark_died
from .progress import ProgressReporter, SilentProgress
from .remote_out import StagedOut

if TYPE_CHECKING:
    from ..annotations.match import GroundTruth
    from ..data.loader import DecodePool
    from ..sources.discover import ImageSource
    from .job import Job, RunResult


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
    _refuse_a_file_as_out(layout.root)
    shard = parse_shard(config.source.shard)
    try:
        images = _images(config, layout, shard)
        # Before the engine's module (and with it torch) is imported: the decoding runs meanwhile.
        pool = read_ahead.start(config, images.sources, layout.report_dir)
        with pool if pool is not None else contextlib.nullcontext(), engine(config.speed.engine).connected(config):
            return _run(config, progress, layout, staged, images=images, shard=shard, pool=pool)
    except OSError as exc:
        failure = output_failure(exc, layout)
        if failure is None:
            raise
        raise failure from exc


@dataclasses.dataclass(frozen=True)
class Images:
    """The run's images as found, before any model is built."""

    sources: list[ImageSource]  # this shard's images, in the order they are processed
    names: ImageNames  # every shard's: the overlays' folder names
    truth: GroundTruth | None  # --annotations, matched to every shard's images


def _images(config: RunConfig, layout: OutputLayout, shard: Shard) -> Images:
    """The images of INPUTS and the list, matched to their annotations; this shard's share of them."""
    found = find_sources(config, layout.root)
    # Decided before sharding, so that every shard of one OUT lays its overlays out alike.
    names = ImageNames.of(s.key for s in found)
    found, truth = annotate(found, config.source.annotations)  # all images: every shard matches alike
    sources = [s for s in found if shard.owns(s.rel)]
    if config.maps.explain_label and not any(s.label for s in sources):
        raise UsageError(
            "explain_label (--explain-label) needs labels: add --labels-from-dirs, a --from-list with a label "
            "column, or --annotations with labels"
        )
    return Images(sources=sources, names=names, truth=truth)


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


def _run(
    config: RunConfig,
    progress: ProgressReporter,
    layout: OutputLayout,
    staged: StagedOut | None,
    *,
    images: Images,
    shard: Shard,
    pool: DecodePool | None,
) -> RunResult:
    started, started_at = time.monotonic(), datetime.now(timezone.utc)
    with OutputLock(layout.lock_path(shard.tag)):
        job = _plan(config, progress, layout, staged, images=images, shard=shard, started_at=started_at, pool=pool)
        manifest = RunManifest(
            layout=layout, settings=job.settings, started_at=started_at, result=job.result, staged=staged
        )
        manifest.write("running")
        progress.start(len(job.todo))
        try:
            with stop_on_signals() as stop:
                engine(config.speed.engine).execute(job, stop)
                if staged is not None:  # every part on the store before the manifest can say `completed`
                    staged.drain()
        except BaseException:
            manifest.write("failed", best_effort=True)
            raise
        finally:
            progress.stop()
        job.result.elapsed_s = time.monotonic() - started
        job.result.faithfulness = job.stages.engine.tally.summary()
        job.result.runtime = job.stages.engine.execution.summary()
        manifest.write("interrupted" if job.result.interrupted else "completed")
    return job.result


def _plan(
    config: RunConfig,
    progress: ProgressReporter,
    layout: OutputLayout,
    staged: StagedOut | None,
    *,
    images: Images,
    shard: Shard,
    started_at: datetime,
    pool: DecodePool | None,
) -> Job:
    """Everything checked before any work, OUT made ready (resumed, or purged with --overwrite), and the job
    (`pool`, decoding since before torch was imported, goes with it: the engine takes it if it fits the job).
    """
    # Here, not at the top: this module runs before torch is imported, to start `read_ahead` first.
    from ..model.runtime import to_stderr
    from .job import Job, RunResult, build_stages, image_writer, label_classes, new_run_id, run_settings

    sources, names, truth = images.sources, images.names, images.truth
    runner = engine(config.speed.engine)
    # A reporter written before `note` existed still runs: its lines go to stderr.
    stages = build_stages(runner.driver_config(config), notify=getattr(progress, "note", to_stderr))
    run_id = new_run_id(started_at)
    settings = run_settings(config, stages, run_id=run_id, shard=shard, device=runner.recorded_device(stages)).as_dict()
    _refuse_other_settings(layout, shard, settings, overwrite=config.job.overwrite)
    if config.job.overwrite:
        _start_over(layout, shard)
    mark_died(layout.root, shard.tag)  # this shard's lock is ours: a run still marked running died
    resume.sweep(layout, shard)  # and so did the writers of this shard's temporary parts
    todo = resume.plan(sources, layout.report_dir, config.job.retry_errors)
    if todo.purge_keys:
        resume.purge(layout, keys=todo.purge_keys)
    if staged is not None:  # the store's report, purged like the staged one, before any work
        staged.push(clear_overlays=config.job.overwrite and shard.count == 1)
    if not layout.marker.is_file():  # later runs, with any OUT, never read this folder's pictures as input
        layout.marker.write_text(MARKER_TEXT, encoding="utf-8")
    result = RunResult(
        run_id=run_id,
        out=layout.root,
        report=layout.report_dir,
        images=len(sources),
        skipped=todo.skipped,
        errors_kept=todo.errors_kept,
        relabelled=todo.relabelled,
        shard=str(shard),
        method=stages.method.name,
        layer=stages.method.layer,
        multi_label=config.network.activation == MULTI_LABEL,
        annotation_problems=list(truth.problems) if truth is not None else [],
    )
    return Job(
        config=config,
        stages=stages,
        layout=layout,
        todo=todo.todo,
        settings=settings,
        shard=shard,
        writer=image_writer(
            config, stages, layout, run_id, truth=truth, names=names, problems=result.annotation_problems
        ),
        result=result,
        progress=progress,
        labels=label_classes(todo.todo, stages.model.class_names) if config.maps.explain_label else None,
        staged=staged,
        read_ahead=pool,
    )


def _refuse_other_settings(layout: OutputLayout, shard: Shard, settings: dict, *, overwrite: bool) -> None:
    """Before any work, and before --overwrite purges anything: the rows kept (with --overwrite, only the
    other shards' rows, which its purge leaves) and the shards running beside this one must come from
    these settings.
    """
    overwritten = shard if overwrite else None
    earlier = resume.report_settings(layout.report_dir, beyond=overwritten)
    earlier += live_shard_settings(layout.root, shard.tag)
    resume.check_settings(earlier, settings, layout.root, overwrite=overwritten)


def _refuse_a_file_as_out(root: Path) -> None:
    """OUT, or the nearest of its folders that exists, must be a folder: else one line, before any work."""
    existing = next(path for path in (root, *root.parents) if path.exists())
    if not existing.is_dir():
        where = "is a file" if existing == root else f"is under {existing}, a file"
        raise UsageError(f"--out {root} {where}, not a folder: give --out a folder (new or a run's)")


def _start_over(layout: OutputLayout, shard: Shard) -> None:
    """--overwrite: drop this shard's rows; a whole-dataset run also clears the overlays."""
    if layout.report_dir.is_dir():
        resume.purge(layout, shard=shard)
    if shard.count == 1:
        shutil.rmtree(layout.overlays_dir, ignore_errors=True)
