"""`--engine plain`: the job in this process. Loader worker processes decode; the main thread keeps the
device busy; a small thread pool renders overlays while the next batch runs, with a bounded number of
images in flight so memory stays flat.

On a CPU the loader is `data.loader.DecodePool`; the pipeline may have started it before torch was
imported (`job.read_ahead`), which this engine takes when it decodes what the job needs, else closes.
A GPU keeps torch's DataLoader (pinned memory, nvJPEG).

An engine module (`cambatch.runner.engines`) offers `connected`, `driver_config`, `recorded_device`
and `execute`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext

from torch.utils.data import DataLoader

from ..config import RunConfig
from ..data import loader
from ..data.gpu_decode import DecodedBatches, EncodedImageFiles, GpuDecoder, collate_encoded
from ..data.inputs import Preprocess
from ..data.preprocess import Batch, ImageFiles, as_batch, collate
from ..render.overlay import opencv_threads
from ..report.writer import ReportWriter
from ..sources.discover import ImageSource
from . import read_ahead, tuning
from .batches import collect, submit_batch
from .job import Job, Stages, preprocess


def connected(config: RunConfig) -> AbstractContextManager:
    """Nothing to join: the run is this process."""
    return nullcontext()


def driver_config(config: RunConfig) -> RunConfig:
    """This process runs the model itself, as configured."""
    return config


def recorded_device(stages: Stages) -> str:
    return str(stages.device)


def execute(job: Job, stop) -> None:
    """The job in this process: loader workers decode, the device computes, writer threads finish images."""
    report = ReportWriter(
        job.layout.report_dir,
        job.layout.part_name(job.result.run_id, job.shard.tag),
        job.settings,
        images_per_part=job.config.output.images_per_part,
        on_publish=job.staged.published if job.staged is not None else None,
    )
    try:
        opencv = opencv_threads(1) if job.config.output.overlays else nullcontext()  # overlays: parallel by image
        with tuning.torch_threads(job.stages.plan.threads), opencv, _batches(job) as batches:
            _process(job, batches, report=report, stop=stop)
        report.close()
    except BaseException:
        report.abort()
        raise


def _process(job: Job, batches: Iterable[Batch], *, report: ReportWriter, stop) -> None:
    """The hot loop: the device works on one batch while writer threads finish earlier ones."""
    result, plan = job.result, job.stages.plan
    background = tuning.background_priority if plan.background else None
    engine = job.stages.engine
    engine.set_threads(plan.threads)
    chooser = tuning.ThreadChooser(plan.thread_choices, apply=engine.set_threads)
    with ThreadPoolExecutor(plan.writer_threads, thread_name_prefix="cambatch-writer", initializer=background) as pool:
        in_flight: deque[Future] = deque()
        try:
            for batch in batches:
                futures = submit_batch(batch, job.todo, engine, job.writer, report, result, pool, labels=job.labels)
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


@contextmanager
def _batches(job: Job) -> Iterator[Iterable[Batch]]:
    """The job's images, decoded, in batches; a CPU's decoding workers stop when the block ends."""
    stages, plan = job.stages, job.stages.plan
    prep = preprocess(job.config, stages)
    if stages.device.type != "cpu" or not loader.available():
        yield _data_loader(job.todo, prep, stages)
        return
    pool = job.read_ahead
    if pool is None or not pool.serves(job.todo, prep, batch_size=plan.batch_size, workers=plan.workers):
        if pool is not None:
            pool.close()  # it guessed another job than the one planned: its batches are not these
        pool = read_ahead.decode_pool(job.todo, prep, plan)
    with pool:
        yield map(as_batch, pool)


def _data_loader(sources: list[ImageSource], prep: Preprocess, stages: Stages) -> DataLoader | DecodedBatches:
    plan, device = stages.plan, stages.device
    batches = DataLoader(
        EncodedImageFiles(sources, prep) if stages.gpu_decode else ImageFiles(sources, prep),
        batch_size=plan.batch_size,
        num_workers=plan.workers,
        collate_fn=collate_encoded if stages.gpu_decode else collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if plan.workers else None,
        worker_init_fn=tuning.background_priority if plan.background else None,
    )
    return DecodedBatches(batches, GpuDecoder(prep, device)) if stages.gpu_decode else batches
