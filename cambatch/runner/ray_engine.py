"""`--engine ray`: the same job as a Ray Data pipeline, for clusters (the optional extra `cambatch[ray]`).

    from_items(the images still to do)    driver: `pipeline` locks, checks settings, resumes and plans as always
      -> map_batches(decode_batch)        CPU tasks, torch-free: the plain engine's decode (`ray_decode`)
      -> map_batches(CamActor, ...)       an actor pool, one GPU an actor when the cluster has GPUs: the
                                          plain engine's `CamEngine`, `ImageWriter` and `ReportWriter`
      -> iter_rows()                      driver: counts, progress (ours; Ray's bars are off), the manifest

Every stage is the plain engine's code; only the transport differs. Sources travel pickled, so any
`ImageSource` that `cambatch.sources` yields runs here unchanged. OUT must be the same folder on
every node (a shared file system), or a URL: then each actor stages its overlays and parts in a
local folder of its own and uploads them (`cambatch.runner.remote_out`), and the driver counts the
rows on the store.

Each actor writes its own report parts (`OutputLayout.part_name(..., worker=...)`), published
atomically every `--images-per-part` images or 60 s like the plain engine's, and its last one when
Ray Data retires it (`__del__`, run on a graceful shutdown). The driver waits for every row the
actors reported to be in a published part before it calls the run completed. A driver killed or
interrupted takes its actors with it: their open parts stay dot-named temporary files that no
reader counts, and a rerun redoes those images.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import pickle
import secrets
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress

import numpy as np
import torch

from ..config import RunConfig, SpeedOptions
from ..data.preprocess import Batch, Failure, Sample
from ..errors import CambatchError, UsageError
from ..methods.faithfulness import FaithfulnessTally
from ..report.parts import footer, published_parts
from ..report.writer import ReportWriter
from . import tuning
from .batches import collect, submit_batch
from .job import Job, RunResult, Stages, build_stages, label_classes, preprocess
from .ray_decode import decode_batch
from .remote_out import StagedOut
from .writer import ImageWriter

# Decoding waits on the disk part of the time; and resources unlike the actors' keep Ray from fusing
# the decode into the CAM actors, where it would run in turn with the model instead of beside it.
DECODE_CPUS = 0.5
PUBLISH_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 30.0
# Ray Data's threads that its executor's shutdown asks to end, with a join of 2 s (names as Ray 2.60 gives them).
RAY_DATA_THREADS = ("StreamingExecutor-", "ray-data-metadata-prefetch")
# Batches an actor takes at once (threads): one on the device while the other's overlays are written,
# the overlap the plain engine gets from its writer threads.
BATCHES_PER_ACTOR = 2  # for the retired actors' last parts


# The driver's model stays on its CPU (a head node may have no GPU) and never decodes: it only checks the
# settings and records them; the actors run the model.
DRIVER_SPEED = SpeedOptions(device="cpu", gpu_decode="off", engine="ray")


class PartsNotPublished(CambatchError):
    """Rows the actors reported never reached a published part (an actor died before publishing)."""


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("engine ray (--engine ray) needs Ray: pip install 'cambatch[ray]'") from None
    # Ray's own notes (progress bars off, a dataset finished, token authentication) say what cambatch's
    # progress and summary say, or nothing a person acts on: its errors only.
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


@contextmanager
def connected(config: RunConfig):
    """Ray joined (`--ray-address`, else RAY_ADDRESS, else a local Ray started here) for the block.

    A Ray this process already runs (a notebook's, a test's) is used as it is; one started here is
    shut down afterwards. Missing Ray or an unreachable cluster is a `UsageError`, before any work.
    """
    ray = _ray()
    if config.speed.gpu_decode == "on":
        raise UsageError("gpu_decode on (--gpu-decode) needs --engine plain: with ray, CPU tasks decode")
    if ray.is_initialized():
        yield ray
        return
    address = config.speed.ray_address
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a Ray cluster"
        raise UsageError(f"cannot join {where} (ray_address, --ray-address): {_first_line(exc)}") from None
    try:
        yield ray
    finally:
        settle()
        ray.shutdown()


def settle(timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Let Ray Data's executor threads end, and Ray's objects in reference cycles go, while Ray is still up.

    A thread that calls into Ray after `ray.shutdown()` ends the process at once: exit 1 and "The core
    worker has already been shutdown" instead of an interrupted run's 130 and its summary. That was
    seen once in a full test suite, from a thread other than the main one, 34 ms after the shutdown
    (the driver's Ray log does not say which). Two kinds of thread can still call into Ray then, and
    this ends both before the shutdown: an executor thread that outlived the 2 s its executor waits
    for it (a loaded machine), and a collection that frees Ray's objects (Ray runs `gc.collect` on a
    thread of its own when its core worker asks).
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith(RAY_DATA_THREADS):
            thread.join(max(0.0, deadline - time.monotonic()))
    gc.collect()


def driver_config(config: RunConfig) -> RunConfig:
    """The driver builds the model only to check the settings and record them (a `--runtime` not installed
    is refused here, before any work).
    """
    return dataclasses.replace(config, speed=dataclasses.replace(DRIVER_SPEED, runtime=config.speed.runtime))


def recorded_device(stages: Stages) -> str:
    return "ray"  # each actor's parts record the device it ran on


def execute(job: Job, stop) -> None:
    """Run `job.todo` through the Ray Data pipeline; counts, progress and faithfulness come back to `job`."""
    if not job.todo:
        return
    ray = _ray()
    config = job.config
    device = config.speed.device
    gpus = int(ray.cluster_resources().get("GPU", 0)) if device != "cpu" else 0
    # `--device cuda` asks for GPU actors even where the cluster has none yet: an autoscaler adds them.
    on_gpus = device.startswith("cuda") or (device == "auto" and gpus > 0)
    batch_size = config.speed.batch_size or (tuning.GPU_BATCH if on_gpus else tuning.CPU_BATCH)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # `job.progress` reports: one bar, not two
    context.print_on_execution_start = False
    # One block a batch: Ray Data does not join blocks into batches, so blocks of another size leave
    # remainders (38 one-image batches of 98 measured on 512 photos), each a forward of its own.
    images = ray.data.from_items(
        [{"source": pickle.dumps(source)} for source in job.todo],
        override_num_blocks=-(-len(job.todo) // batch_size),
    )
    decoded = images.map_batches(
        decode_batch,
        fn_kwargs={"prep": preprocess(config, job.stages)},
        batch_size=batch_size,
        num_cpus=DECODE_CPUS,
    )
    threads = config.speed.threads or 1
    with warnings.catch_warnings():
        # Ray 2.60 takes `max_restarts` only among `ray_remote_args`, which it marks deprecated.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        done = decoded.map_batches(
            CamActor,
            fn_constructor_kwargs={
                "config": config,
                "settings": job.settings,
                "writer": job.writer,
                "shard": job.shard.tag,
                "store": job.staged.url if job.staged is not None else None,
            },
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(
                size=config.speed.concurrency or max(1, gpus),
                max_concurrent_calls_per_actor=BATCHES_PER_ACTOR,
                enable_true_multi_threading=True,  # `CamActor` serializes its device part itself
            ),
            num_gpus=1 if on_gpus else 0,
            num_cpus=1 if on_gpus else threads,  # on a CPU an actor holds the cores its torch threads use
            # Not restarted: an actor that dies loses its open part, and the run says so (`PartsNotPublished`);
            # a restart could not bring those rows back (and Ray warns, as an error, of restarts from arguments
            # in its object store).
            max_restarts=0,
        )
    expected = _gather(done, job, stop)
    del done, decoded, images  # the last references: Ray Data retires the actors, which publish their parts
    if not stop:
        _await_published(job, expected)
    else:
        _count_published(job)


def _gather(done, job: Job, stop) -> dict[str, int]:
    """Fold the actors' per-batch counts into the run's result; the rows each actor's parts must hold."""
    result, expected = job.result, {}
    for out in done.iter_rows():
        result.ok += out["ok"]
        result.errors += out["errors"]
        result.overlays += out["overlays"]
        result.overlay_images += out["overlay_images"]
        result.errors_by_path.update(pickle.loads(out["failed"]))
        result.annotation_problems.extend(pickle.loads(out["problems"]))
        job.stages.engine.tally.merge(pickle.loads(out["tally"]))
        job.stages.engine.execution.passes.update(pickle.loads(out["passes"]))
        expected[out["prefix"]] = max(expected.get(out["prefix"], 0), out["rows"])
        job.progress.advance(out["ok"] + out["errors"])
        if stop:
            result.interrupted = stop.signal_name
            break
    return expected


def _await_published(job: Job, expected: dict[str, int], timeout: float = PUBLISH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    where = job.staged.url if job.staged is not None else job.layout.report_dir
    while True:
        missing = {prefix: rows - _published_rows(job, prefix) for prefix, rows in expected.items()}
        missing = {prefix: rows for prefix, rows in missing.items() if rows > 0}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise PartsNotPublished(
                f"{sum(missing.values())} report rows of {len(missing)} Ray actor(s) never reached a published part "
                f"in {where} (an actor died, or its upload failed?); rerun the same command to redo their images"
            )
        time.sleep(0.1 if job.staged is None else 1.0)  # a store answers each poll with requests


def _count_published(job: Job, timeout: float = PUBLISH_TIMEOUT_S) -> None:
    """An interrupted run: the actors finished batches whose counts were not gathered and publish them as they
    retire. Once no part of the run is open any more, the run's counts are what its published parts hold.
    """
    prefix = job.layout.part_name(job.result.run_id, job.shard.tag)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _open_parts(job, prefix):
        time.sleep(0.2)
    statuses = _published_statuses(job, prefix)
    job.result.ok = int(statuses.get("ok", 0))
    job.result.errors = int(statuses.get("error", 0))


def _open_parts(job: Job, prefix: str) -> bool:
    """Whether an actor still writes a part of the run (a dot-named file; an OUT on a store: its staging)."""
    if job.staged is not None:
        return False  # each actor stages in a folder of its own: its last upload is awaited by its retirement
    return any(p.name.startswith(f".{prefix}") for p in job.layout.report_dir.glob(".*"))


def _published_statuses(job: Job, prefix: str) -> dict[str, int]:
    """Images per status in the run's published parts."""
    import pyarrow.parquet as pq

    if job.staged is not None:
        fs, names = job.staged.fs, job.staged.parts_on_store(prefix + "-")
        paths = [job.staged.remote(f"{job.layout.report_dir.name}/{name}") for name in names]
        tables = [pq.read_table(fs.open(path), columns=["path", "status"]) for path in paths]
    else:
        parts = [p for p in published_parts(job.layout.report_dir) if p.name.startswith(prefix + "-")]
        tables = [pq.read_table(part, columns=["path", "status"]) for part in parts]
    counts: dict[str, int] = {}
    for table in tables:
        frame = table.to_pandas().drop_duplicates()
        for status, n in frame["status"].value_counts().items():
            counts[str(status)] = counts.get(str(status), 0) + int(n)
    return counts


def _published_rows(job: Job, prefix: str) -> int:
    if job.staged is not None:
        return job.staged.rows_on_store(prefix + "-")
    parts = published_parts(job.layout.report_dir)
    return sum(footer(part).num_rows for part in parts if part.name.startswith(prefix + "-"))


def _batch(columns: dict[str, np.ndarray]) -> Batch:
    """`decode_batch`'s columns back into the plain engine's `Batch` (indices within this batch)."""
    failures = [Failure(i, str(error)) for i, error in enumerate(columns["error"]) if error]
    good = [i for i, error in enumerate(columns["error"]) if not error]
    photos = columns.get("photo")
    samples = [
        Sample(
            index=i,
            pixels=torch.from_numpy(np.array(columns["pixels"][i])),
            photo=torch.from_numpy(np.array(photos[i])) if photos is not None else None,
            width=int(columns["width"][i]),
            height=int(columns["height"][i]),
            orientation=int(columns["orientation"][i]),
        )
        for i in good
    ]
    pixels = torch.from_numpy(np.array(columns["pixels"][good])) if good else torch.empty(0, dtype=torch.uint8)
    return Batch(pixels, samples, failures)


class CamActor:
    """A Ray Data actor: the plain engine's device side, overlay writers and report writer, on one GPU or CPU.

    Returns one row a batch: its counts, its failures, its faithfulness tally, and the rows this
    actor's parts (`prefix`) hold once published.
    """

    def __init__(  # noqa: D107
        self, *, config: RunConfig, settings: dict, writer: ImageWriter, shard: str, store: str | None = None
    ):
        self.stages = build_stages(config)  # built on this node: its device, its checks
        plan, cpu = self.stages.plan, self.stages.device.type == "cpu"
        # On a CPU the actor holds `--threads` (default 1) of Ray's CPUs; decoding runs in other tasks.
        self.threads = config.speed.threads or (1 if cpu else plan.threads)
        # Without `--threads`, its forwards may also take the cores the decode tasks leave idle, as the
        # plain engine's do: the chooser keeps that only while it is faster.
        chooses = cpu and not config.speed.threads
        choices = tuning.actor_thread_choices(tuning.cpu_cores(), config.speed.concurrency or 1) if chooses else ()
        self.chooser = tuning.ThreadChooser(choices)
        # OUT on a store: this actor's own staging folder, uploaded part by part like the plain engine's.
        self.staged = StagedOut(store) if store is not None else None
        if self.staged is not None:
            writer = dataclasses.replace(writer, layout=self.staged.layout)
        self.writer = writer
        self.explain_label = config.maps.explain_label
        layout = writer.layout
        self.prefix = layout.part_name(writer.run_id, shard, worker=secrets.token_hex(4))
        background = tuning.background_priority if plan.background else None  # as the plain engine's writers
        self.pool = ThreadPoolExecutor(
            plan.writer_threads, thread_name_prefix="cambatch-writer", initializer=background
        )
        self.device = threading.Lock()  # one batch on the device at a time
        self.report = _SharedReport(
            ReportWriter(
                layout.report_dir,
                self.prefix,
                {**settings, "device": str(self.stages.device)},
                images_per_part=config.output.images_per_part,
                on_publish=self.staged.published if self.staged is not None else None,
            )
        )

    def __call__(self, columns: dict[str, np.ndarray]) -> dict[str, list]:
        sources = [pickle.loads(raw) for raw in columns["source"]]
        layout = self.writer.layout
        counts = RunResult(run_id=self.writer.run_id, out=layout.root, report=layout.report_dir, images=len(sources))
        engine = self.stages.engine
        labels = label_classes(sources, self.stages.model.class_names) if self.explain_label else None
        with self.device:
            # Set on each call: Ray runs the calls on a pool of threads, and OpenMP keeps a count per thread.
            engine.set_threads(self.chooser.threads or self.threads)
            engine.tally = FaithfulnessTally()  # this batch's alone: the driver adds them up
            engine.execution.passes = Counter()  # likewise
            batch = _batch(columns)
            futures = submit_batch(batch, sources, engine, self.writer, self.report, counts, self.pool, labels=labels)
            tally, passes = engine.tally, engine.execution.passes
            self.chooser.batch_done(len(batch.samples))
        for future in futures:  # the overlays are written while the other batch is on the device
            collect(future, self.report, counts)
        return {
            "prefix": [self.prefix],
            "rows": [self.report.rows_added],
            "ok": [counts.ok],
            "errors": [counts.errors],
            "overlays": [counts.overlays],
            "overlay_images": [counts.overlay_images],
            "failed": [pickle.dumps(counts.errors_by_path)],
            "problems": [pickle.dumps(self._new_problems())],
            "tally": [pickle.dumps(tally)],
            "passes": [pickle.dumps(passes)],
        }

    def _new_problems(self) -> list[str]:
        """The annotation problems this actor's writer met since the last call took them (calls overlap:
        each `pop` hands a line to exactly one of them).
        """
        taken = []
        with suppress(IndexError):
            while True:
                taken.append(self.writer.problems.pop(0))
        return taken

    def __del__(self):
        # Ray Data retires an actor gracefully once the dataset is done, by dropping its last reference:
        # publish the part it still holds. Nothing the actor holds may refer back to it (a bound method
        # kept as a callback would): a cycle defers this to the collector, after the process tore down.
        if hasattr(self, "report"):
            self.pool.shutdown()
            self.report.publish()
        if getattr(self, "staged", None) is not None:
            try:  # a failure shows on the driver: these rows never reach the store (`PartsNotPublished`)
                self.staged.finish()
            finally:
                self.staged.close()


class _SharedReport:
    """The actor's `ReportWriter`, taking one image at a time from the actor's concurrent batches."""

    def __init__(self, report: ReportWriter):
        self._report = report
        self._lock = threading.Lock()

    @property
    def rows_added(self) -> int:
        with self._lock:
            return self._report.rows_added

    def add_image(self, rows) -> None:
        with self._lock:
            self._report.add_image(rows)

    def publish(self) -> None:
        with self._lock:
            self._report.publish()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
