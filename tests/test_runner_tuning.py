"""`cambatch.runner.tuning`: torch threads, decoding workers and batch size chosen from the machine."""

from __future__ import annotations

import os

import pytest
import torch

from cambatch.runner.tuning import CPU_BATCH, GPU_BATCH, cpu_cores, cpu_workers, plan, torch_threads

CPU = torch.device("cpu")


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
