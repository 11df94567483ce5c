"""The whole run: lock OUT, check the settings against what OUT holds, plan what is left to do, hand the
`Job` to its engine, and record the run's manifest.

`run(RunConfig.create(...))` is the Python API behind `cambatch run`. The engines
(`cambatch.runner.engines`) do the work: sources -> decode/preprocess -> model -> maps -> statistics ->
overlays -> report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from datetime import datetime, timezone

from ..annotations.readers import load_annotations
from ..config import RunConfig
from ..errors import UsageError
from ..layout import OutputLayout
from ..model.catalog import MULTI_LABEL
from ..model.runtime import to_stderr
from ..sources.shard import Shard, parse_shard
from . import resume
from .engines import engine
from .failures import output_failure
from .interrupt import stop_on_signals
from .job import (
    Job,
    RunResult,
    build_stages,
    find_sources,
    image_writer,
    label_classes,
    new_run_id,
    run_settings,
    with_annotated_labels,
)
from .lock import OutputLock
from .manifest import RunManifest, live_shard_settings, mark_died
from .progress import ProgressReporter, SilentProgress
from .remote_out import StagedOut


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
        with engine(config.speed.engine).connected(config):
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
        job = _plan(config, progress, layout, staged, shard=shard, started_at=started_at)
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
    shard: Shard,
    started_at: datetime,
) -> Job:
    """Everything checked before any work, OUT made ready (resumed, or purged with --overwrite), and the job."""
    found = find_sources(config, layout.root)
    # Decided before sharding, so that every shard of one OUT lays its overlays out alike.
    several_roots = len({s.input_root for s in found}) > 1
    truth = load_annotations(config.source.annotations) if config.source.annotations else None
    sources = with_annotated_labels([s for s in found if shard.owns(s.rel)], truth)
    if config.maps.explain_label and not any(s.label for s in sources):
        raise UsageError(
            "explain_label (--explain-label) needs labels: add --labels-from-dirs, a --from-list with a label "
            "column, or --annotations with labels"
        )
    runner = engine(config.speed.engine)
    # A reporter written before `note` existed still runs: its lines go to stderr.
    stages = build_stages(runner.driver_config(config), notify=getattr(progress, "note", to_stderr))
    run_id = new_run_id(started_at)
    settings = run_settings(config, stages, run_id=run_id, shard=shard, device=runner.recorded_device(stages)).as_dict()
    if config.job.overwrite:
        _start_over(layout, shard)
    # Before any work: the rows kept, and the shards running beside this one, must come from these settings.
    resume.check_settings(
        resume.report_settings(layout.report_dir) + live_shard_settings(layout.root, shard.tag), settings, layout.root
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
        annotation_problems=list(truth.problems) if truth is not None else [],
    )
    return Job(
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


def _start_over(layout: OutputLayout, shard: Shard) -> None:
    """--overwrite: drop this shard's rows; a whole-dataset run also clears the overlays."""
    if layout.report_dir.is_dir():
        resume.purge(layout, shard=shard)
    if shard.count == 1:
        shutil.rmtree(layout.overlays_dir, ignore_errors=True)
