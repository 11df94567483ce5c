"""Deterministic sharding: which images this process handles when many share one dataset.

An image belongs to shard `blake2b(path) % count`: the same on every machine and for any listing
order, so Slurm array tasks or torchrun ranks split a dataset without talking to each other.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the images whose path hashes to `index` modulo `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """A file-name part that keeps shards' parts and locks apart."""
        return "" if self.count == 1 else f"-shard{self.index:04d}of{self.count:04d}"

    def owns(self, rel_path: str) -> bool:
        return self.count == 1 or shard_of(rel_path, self.count) == self.index


def shard_of(rel_path: str, count: int) -> int:
    digest = hashlib.blake2b(rel_path.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str | None, environ: dict[str, str] | None = None) -> Shard:
    """`I/N` from the option, else Slurm array or torchrun variables, else the whole dataset."""
    environ = os.environ if environ is None else environ
    if text:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard takes I/N (e.g. 0/8), not {text!r}") from None
        return _checked(index, count, "--shard")
    if "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))  # arrays may start at 1
        index = int(environ["SLURM_ARRAY_TASK_ID"]) - first
        return _checked(index, int(environ["SLURM_ARRAY_TASK_COUNT"]), "SLURM_ARRAY_TASK_ID/COUNT")
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return _checked(int(environ["RANK"]), int(environ["WORLD_SIZE"]), "RANK/WORLD_SIZE")
    return Shard(0, 1)


def _checked(index: int, count: int, origin: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"{origin}: shard {index}/{count} is out of range (0 <= I < N)")
    return Shard(index, count)
