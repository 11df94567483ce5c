"""Defaults for torch threads, decoding workers and batch size, chosen from the machine.

On a CPU, the model's forward pass, the decoding workers and the overlay writers share the same
cores. Torch's intra-op threads wait for each other at every operator, so a torch thread that
loses its core to a decoder stalls the whole forward pass: oversubscribing is much worse than
leaving a core to the decoders. The rules below come from `benchmarks/bench.py --tune` on a
2-core machine (see README, Performance) and keep torch threads + workers at the core count.
On a GPU the device does the model's work, so every core but one decodes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's or Slurm's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Plan:
    """Threads, workers and batch size for one run."""

    threads: int  # torch intra-op threads in the main process
    workers: int  # decoding worker processes
    batch_size: int
    writer_threads: int  # threads rendering overlays (PIL releases the GIL while it resizes and encodes)


def plan(
    device: torch.device,
    *,
    overlays: bool = True,
    threads: int | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    writer_threads: int | None = None,
    cores: int | None = None,
) -> Plan:
    """The settings for a run; any given value is kept, the others are chosen around it."""
    cores = cores or cpu_cores()
    if device.type == "cpu":
        workers = cpu_workers(cores) if workers is None else workers
        threads = threads or max(1, cores - (workers if workers else 0))
        batch_size = batch_size or CPU_BATCH
        writers = max(2, cores // 4)
    else:
        # The device does the model's work; the cores decode (workers) and encode overlays (writers),
        # which cost about the same per image.
        half = max(1, cores // 2)
        workers = (half if overlays else max(1, cores - 1)) if workers is None else workers
        threads = threads or min(4, cores)
        batch_size = batch_size or GPU_BATCH
        writers = max(2, cores - workers)
    return Plan(threads=threads, workers=workers, batch_size=batch_size, writer_threads=writer_threads or writers)


# Measured (README, Performance): EfficientNet-Lite0 with channels_last runs best at batch 4-8
# on a CPU; larger batches fall out of the caches. A GPU wants large batches.
CPU_BATCH = 8
GPU_BATCH = 64


def cpu_workers(cores: int) -> int:
    """Decoding workers on a CPU: about a third of the cores, at least one (see module docstring)."""
    return max(1, round(cores / 3))


@contextmanager
def torch_threads(count: int):
    """Torch's intra-op thread count set to `count` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
