"""`cambatch.runner.tuning`: torch threads, decoding workers and batch size chosen from the machine."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from cambatch.runner.tuning import (
    CPU_BATCH,
    GPU_BATCH,
    ThreadChooser,
    actor_thread_choices,
    background_priority,
    cpu_cores,
    cpu_workers,
    torch_threads,
)
from cambatch.runner.tuning import plan as tuning_plan

CPU = torch.device("cpu")


def plan(device, **given):
    """`tuning.plan` with nothing given but `given` (a run without --threads, --workers, ...)."""
    unset = {"overlays": True, "threads": None, "workers": None, "batch_size": None, "writer_threads": None}
    return tuning_plan(device.type, **{**unset, **given})


@pytest.mark.parametrize("cores", [1, 2, 4, 16, 64])
def test_cpu_plan_never_oversubscribes(cores):
    for overlays in (True, False):
        p = plan(CPU, overlays=overlays, cores=cores)
        assert p.threads >= 1 and p.workers >= 1 and p.batch_size >= 1 and p.writer_threads >= 1
        assert p.threads + p.workers <= max(cores, 2)


def test_plan_keeps_given_values_and_fits_threads_around_workers():
    p = plan(CPU, threads=3, workers=0, batch_size=5, cores=2)
    assert (p.threads, p.workers, p.batch_size) == (3, 0, 5)
    assert plan(CPU, workers=0, cores=4).threads == 4
    gpu = plan(torch.device("cuda"), cores=16)
    assert gpu.workers + gpu.writer_threads <= 16 and gpu.batch_size > plan(CPU, cores=16).batch_size


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("cores, workers", [(1, 1), (2, 1), (4, 1), (5, 2), (16, 5), (64, 21)])
def test_a_third_of_the_cores_decode_on_a_cpu(cores, workers):
    assert cpu_workers(cores) == workers
    p = plan(CPU, cores=cores)
    assert p.workers == workers and p.threads == max(1, cores - workers) and p.batch_size == CPU_BATCH


def test_on_a_gpu_the_cores_decode_and_encode():
    gpu = torch.device("cuda")
    with_overlays, without = plan(gpu, cores=16), plan(gpu, overlays=False, cores=16)
    assert (with_overlays.workers, with_overlays.writer_threads) == (8, 8)  # half decode, half encode overlays
    assert without.workers == 15  # nothing to encode: every core but one decodes
    assert with_overlays.threads == 4 and with_overlays.batch_size == GPU_BATCH
    assert plan(gpu, cores=1).workers == 1 and plan(gpu, writer_threads=3, cores=16).writer_threads == 3


def test_cores_are_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert cpu_cores() == 3
    assert plan(CPU).threads + plan(CPU).workers == 3


def test_torch_threads_is_restored_even_on_error_and_at_least_one():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(0):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_a_cpu_plan_chooses_between_the_cores_beside_the_workers_and_all_of_them():
    p = plan(CPU, cores=2)
    assert p.thread_choices == (1, 2) and p.threads == 1 and p.background
    assert plan(CPU, threads=1, cores=2).thread_choices == ()  # a given --threads is kept
    assert plan(CPU, cores=1).thread_choices == ()
    assert not plan(torch.device("cuda"), cores=16).background


class _Clock:
    """A fake clock: each batch takes `seconds[threads]`."""

    def __init__(self, seconds: dict[int, float]):
        self.seconds, self.now, self.threads = seconds, 0.0, None

    def __call__(self) -> float:
        return self.now

    def run_batch(self, chooser: ThreadChooser) -> None:
        self.now += self.seconds[self.threads]
        chooser.batch_done(8)


def _run(seconds: dict[int, float], batches: int) -> list[int]:
    clock = _Clock(seconds)

    def apply(threads: int) -> None:
        clock.threads = threads

    chooser = ThreadChooser((1, 2), trial=2, period=5, clock=clock, apply=apply)
    used = []
    for _ in range(batches):
        used.append(clock.threads)
        clock.run_batch(chooser)
    return used


def test_the_chooser_keeps_the_faster_thread_count_and_tries_again_later():
    used = _run({1: 1.0, 2: 0.5}, 16)
    # trial: 1 thread (1 untimed + 2 timed), 2 threads (the same), then 5 batches at 2, then a new trial
    assert used[:11] == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    assert used[11:14] == [1, 1, 1]
    assert _run({1: 0.5, 2: 1.0}, 11)[6:] == [1] * 5


def test_a_collapsing_thread_count_ends_its_trial_at_once():
    used = _run({1: 1.0, 2: 8.0}, 6)
    assert used == [1, 1, 1, 2, 2, 1]  # the first timed batch at 2 threads was 8x slower: back to 1


def test_background_priority_lowers_only_the_calling_thread():
    me = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []

    def lowered():
        background_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen == [19]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == me


def test_a_kept_count_that_slows_down_is_tried_again_at_once():
    clock = _Clock({1: 1.0, 2: 0.5})

    def apply(threads: int) -> None:
        clock.threads = threads

    chooser = ThreadChooser((1, 2), trial=2, period=50, clock=clock, apply=apply)
    used = []
    for batch in range(12):
        if batch == 8:
            clock.seconds = {1: 1.0, 2: 8.0}  # another job takes a core: two threads collapse
        used.append(clock.threads)
        clock.run_batch(chooser)
    assert used == [1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1]  # the slow batch at 2 threads ends the kept period


def test_the_chooser_says_the_count_for_the_next_batch():
    applied = []
    chooser = ThreadChooser((1, 2), trial=1, clock=iter(range(100)).__next__, apply=applied.append)
    assert chooser.threads == 1 == applied[-1]
    for _ in range(2):  # count 1: one untimed batch, one timed
        chooser.batch_done(8)
    assert chooser.threads == 2 == applied[-1]
    assert ThreadChooser(()).threads is None


@pytest.mark.parametrize(
    "cores, actors, expected",
    [(2, 1, (1, 2)), (16, 4, (1, 4)), (16, 1, (1, 16)), (4, 4, ()), (2, 3, ()), (1, 1, ())],
)
def test_a_cpu_actor_chooses_between_its_ray_cpu_and_its_share_of_the_node(cores, actors, expected):
    assert actor_thread_choices(cores, actors) == expected
