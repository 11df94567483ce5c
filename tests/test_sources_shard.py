"""`cambatch.sources.shard`: which shard a process is, from the option or the scheduler, and what it owns."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cambatch.errors import UsageError
from cambatch.sources.shard import Shard, parse_shard, shard_of

NAMES = [f"dir{n % 7}/img_{n:04d}.jpg" for n in range(300)]


def test_shard_from_option_and_environment():
    assert parse_shard("2/8", {}) == Shard(2, 8)
    assert parse_shard(
        None, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    ) == Shard(3, 4)
    assert parse_shard(None, {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    assert parse_shard(None, {}) == Shard(0, 1)
    for bad in ["8/8", "x/2", "1"]:
        with pytest.raises(UsageError):
            parse_shard(bad, {})
    owners = [sum(Shard(i, 4).owns(f"dir/img_{n}.jpg") for i in range(4)) for n in range(200)]
    assert owners == [1] * 200  # every image in exactly one shard


def test_the_option_wins_over_slurm_and_slurm_over_torchrun():
    slurm = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5"}
    torchrun = {"RANK": "3", "WORLD_SIZE": "4"}
    assert parse_shard("1/2", {**slurm, **torchrun}) == Shard(1, 2)
    assert parse_shard(None, {**slurm, **torchrun}) == Shard(2, 5)  # arrays start at 0 unless MIN says
    assert parse_shard("", torchrun) == Shard(3, 4)
    assert parse_shard(None, {"SLURM_ARRAY_TASK_ID": "2"}) == Shard(0, 1)  # a job step, not an array


@pytest.mark.parametrize(
    "text, environ, origin",
    [
        ("3/3", {}, "--shard: shard 3/3 is out of range"),
        ("0/0", {}, "--shard: shard 0/0"),
        ("-1/2", {}, "--shard: shard -1/2"),
        (None, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID/COUNT: shard 4/4"),
        (
            None,
            {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1"},
            "shard -1/2",
        ),
        (None, {"RANK": "2", "WORLD_SIZE": "2"}, "RANK/WORLD_SIZE: shard 2/2 is out of range"),
    ],
)
def test_out_of_range_is_refused_naming_where_it_came_from(text, environ, origin):
    with pytest.raises(UsageError, match="out of range") as refused:
        parse_shard(text, environ)
    assert origin in str(refused.value)


def test_malformed_option_is_refused():
    for bad in ("1/2/3", "a/b", "1-2"):
        with pytest.raises(UsageError, match="takes I/N"):
            parse_shard(bad, {})


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_partition_a_list(count):
    owned = [[name for name in NAMES if Shard(i, count).owns(name)] for i in range(count)]
    assert sorted(sum(owned, [])) == sorted(NAMES)  # together: everything, each image once
    assert sum(len(o) for o in owned) == len(NAMES)
    if count > 1:
        assert all(len(o) > len(NAMES) / count / 2 for o in owned)  # roughly even: no shard left idle


def test_ownership_is_the_same_in_every_process():
    """Shards on different machines must agree: no per-process salt (as Python's str hash has)."""
    code = "from cambatch.sources.shard import shard_of; print([shard_of(f'img_{n}.jpg', 8) for n in range(100)])"
    here = str([shard_of(f"img_{n}.jpg", 8) for n in range(100)])
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert other.stdout.strip() == here
    assert len({shard_of(n, 8) for n in NAMES}) == 8


def test_tag_and_text():
    assert Shard(0, 1).tag == "" and str(Shard(0, 1)) == "0/1"
    assert Shard(3, 16).tag == "-shard0003of0016" and str(Shard(3, 16)) == "3/16"
    assert Shard(0, 1).owns("anything.jpg")
