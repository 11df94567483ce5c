"""Defaults for torch threads, decoding workers and batch size, chosen from the machine.

On a CPU, the model's forward pass, the decoding workers and the overlay writers share the same
cores. Torch's intra-op threads wait for each other at every operator, so a torch thread that
loses its core to a decoder stalls the whole forward pass. Two measures keep the cores busy
without that stall (docs/performance.md):

- the decoding workers and the overlay writers run at the lowest CPU priority
  (`background_priority`): they take only what the forward leaves, and never a core from it;
- the forward's thread count is chosen while the run goes (`ThreadChooser`): every core when the
  machine is quiet (twice the forward's speed on 2 cores), but fewer when other jobs take cores
  away, where all-core OpenMP collapses (8x slower measured at load 5 on 2 cores).

On a GPU the device does the model's work, so every core but one decodes.

Torch is imported only where a function needs it: Ray's decode tasks take `background_priority`
from here and never load torch (`runner.ray_decode`).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's or Slurm's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Plan:
    """Threads, workers and batch size for one run."""

    threads: int  # torch intra-op threads in the main process (the first `thread_choices` tried)
    workers: int  # decoding worker processes
    batch_size: int
    writer_threads: int  # threads rendering overlays (OpenCV's steps and the JPEG encode release the GIL)
    thread_choices: tuple[int, ...] = ()  # thread counts `ThreadChooser` picks from; () keeps `threads`
    background: bool = False  # decoding workers and writers at the lowest priority (`background_priority`)
    ahead_bytes: int = 0  # decoded pixels the CPU loader's workers may hold ahead of the run (`loader.DecodePool`)


def plan(
    device_type: str,
    *,
    overlays: bool,
    threads: int | None,
    workers: int | None,
    batch_size: int | None,
    writer_threads: int | None,
    cores: int | None = None,
) -> Plan:
    """The settings for a run on a device of `device_type` ("cpu", "cuda", ...); any given value (not None)
    is kept, the others are chosen around it for `cores` (default: this machine's).
    """
    cores = cores or cpu_cores()
    if device_type == "cpu":
        workers = cpu_workers(cores) if workers is None else workers
        beside = max(1, cores - (workers if workers else 0))  # the cores the decoders leave
        choices = () if threads else tuple(sorted({beside, cores}))
        threads = threads or beside
        batch_size = batch_size or CPU_BATCH
        writers = max(2, cores // 4)
        return Plan(
            threads=threads,
            workers=workers,
            batch_size=batch_size,
            writer_threads=writer_threads or writers,
            thread_choices=choices if len(choices) > 1 else (),
            background=True,
            ahead_bytes=read_ahead_bytes(),
        )
    else:
        # The device does the model's work; the cores decode (workers) and encode overlays (writers),
        # which cost about the same per image.
        half = max(1, cores // 2)
        workers = (half if overlays else max(1, cores - 1)) if workers is None else workers
        threads = threads or min(4, cores)
        batch_size = batch_size or GPU_BATCH
        writers = max(2, cores - workers)
    return Plan(threads=threads, workers=workers, batch_size=batch_size, writer_threads=writer_threads or writers)


# Measured (docs/performance.md): EfficientNet-Lite0 with channels_last runs best at batch 4-8
# on a CPU; larger batches fall out of the caches. A GPU wants large batches.
CPU_BATCH = 8
GPU_BATCH = 64


def read_ahead_bytes(memory: int | None = None) -> int:
    """How far the CPU loader's workers may decode ahead: far enough to fill the start-up (imports and model
    build take a second or two, in which the workers decode while a core would idle), never more than
    1/16 of `memory` (default: what this process may use, `memory_limit`).
    """
    return min(READ_AHEAD_MAX, (memory or memory_limit()) // 16)


READ_AHEAD_MAX = 512 << 20  # about 350 photos of 0.5 MP with their model inputs
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")  # cgroup v2: a number of bytes, or "max"


def memory_limit(cgroup: Path = CGROUP_MEMORY_MAX) -> int:
    """The memory this process may use: the machine's, or its cgroup's limit (a container's, Slurm's) if lower."""
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with suppress(OSError, ValueError):
        limit = cgroup.read_text().strip()
        return min(machine, int(limit)) if limit != "max" else machine
    return machine


def cpu_workers(cores: int) -> int:
    """Decoding workers on a CPU: about a third of the cores, at least one (see module docstring)."""
    return max(1, round(cores / 3))


def actor_thread_choices(cores: int, actors: int) -> tuple[int, ...]:
    """The torch thread counts a CPU CAM actor of `--engine ray` chooses between (`ThreadChooser`).

    The one Ray CPU it holds, or its share of the node's `cores` were all `actors` on this node:
    never more than the node has, whatever Ray places where. () when the share is one core.
    """
    share = max(1, cores // max(1, actors))
    return (1, share) if share > 1 else ()


def background_priority(*_: object) -> None:
    """Lower the calling thread to the lowest CPU priority (nice 19; Linux nice values are per thread).

    For the decoding workers (their pool's `initializer`, a DataLoader's `worker_init_fn`) and the overlay
    writers (a pool `initializer`): the forward's threads then win every contended core, and these stages
    run in the time it leaves. Where the OS refuses, the thread keeps its priority.
    """
    with suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class ThreadChooser:
    """Chooses the forward's thread count between batches from the throughput each count gives (`apply`
    sets it: torch's by default; a run hands it to `CamEngine.set_threads`, which gives it to the runtime
    that runs the forward passes).

    Each of `choices` runs `trial` timed batches (after one untimed: the thread pool resizes, the
    loader's queue adjusts); the fastest in images/s of the whole loop (decoding waits included)
    is kept for `period` batches, or until a batch runs at under half its trial rate, then all are
    tried again: the best count changes as other jobs come and go. Call `batch_done(images)`
    after each batch; with no choices it does nothing.
    """

    def __init__(
        self,
        choices: tuple[int, ...],
        *,
        trial: int = 2,
        period: int = 60,
        clock: Callable[[], float] = time.perf_counter,
        apply: Callable[[int], None] | None = None,  # default: torch.set_num_threads
    ):  # noqa: D107
        self.choices, self.trial, self.period, self.clock = choices, trial, period, clock
        self.apply = apply or _set_torch_threads
        self._plan: list[tuple[int, bool]] = []  # (thread count, timed) of the coming batches
        self._rates: dict[int, list[float]] = {}
        self._kept_rate = 0.0  # the kept count's rate in its trial; a batch at under half of it starts a new trial
        if choices:
            self._plan = self._next_round()
            self.apply(self._plan[0][0])
        self._last = clock()

    @property
    def threads(self) -> int | None:
        """The thread count for the next batch; None without choices."""
        return self._plan[0][0] if self.choices else None

    def batch_done(self, images: int) -> None:
        """Note a finished batch of `images`; may switch the thread count for the next one."""
        now = self.clock()
        elapsed, self._last = now - self._last, now
        if not self.choices:
            return
        threads, timed = self._plan.pop(0)
        if elapsed > 0 and images:
            if timed:
                self._rates.setdefault(threads, []).append(images / elapsed)
                self._cut_a_losing_trial(threads, images / elapsed)
            elif images / elapsed < 0.5 * self._kept_rate:  # other jobs came: the kept count may now collapse
                self._plan = []
        if not self._plan:
            self._plan = self._next_round()
        if self._plan[0][0] != threads:
            self.apply(self._plan[0][0])

    def _cut_a_losing_trial(self, threads: int, rate: float) -> None:
        """A count at under half the best rate so far ends its trial at once: on a contended machine
        all-core OpenMP can run 8x slower, and a whole trial at that speed would cost more than it finds.
        """
        others = [statistics.median(r) for t, r in self._rates.items() if t != threads]
        if others and rate < 0.5 * max(others):
            self._plan = [(t, timed) for t, timed in self._plan if t != threads]

    def _next_round(self) -> list[tuple[int, bool]]:
        if self._rates:  # a trial round is over: keep the fastest count (median rate) for a while
            best = max(self._rates, key=lambda t: statistics.median(self._rates[t]))
            self._kept_rate = statistics.median(self._rates[best])
            self._rates = {}
            return [(best, False)] * self.period
        self._kept_rate = 0.0
        return [(c, timed) for c in self.choices for timed in [False] + [True] * self.trial]


@contextmanager
def torch_threads(count: int):
    """Torch's intra-op thread count set to `count` for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _set_torch_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)
