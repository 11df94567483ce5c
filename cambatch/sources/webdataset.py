"""WebDataset tar shards: every image member of a `.tar` is one sample (`shard.tar/<__key__>.jpg`).

The shard is listed once with the standard library's `tarfile` (headers only: the data is skipped
over); each sample keeps its member's data offset and size, so a loader worker reads that one byte
range and nothing else, from a local disk or an object store alike. Compressed shards (`.tar.gz`)
have no such offsets and are not read.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

from ..errors import UsageError

SHARD_SUFFIXES = (".tar",)


def is_shard_name(name: str) -> bool:
    """Whether a file is a WebDataset shard by its name."""
    return name.lower().endswith(SHARD_SUFFIXES)


def shard_members(fs, path: str, url: str) -> list[tuple[str, int, TarMember]]:
    """`(member name, size, reader)` of every regular file in the shard at `path` on `fs`, in tar order.

    `url` names the shard for the workers' readers. Only headers are read: `tarfile` seeks over the data.
    """
    try:
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            return [(m.name, m.size, TarMember(url, m.offset_data, m.size)) for m in tar if m.isfile()]
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot read tar shard {url}: {exc}") from None


@dataclass(frozen=True)
class TarMember:
    """One member's bytes, read by offset from its shard."""

    url: str
    offset: int
    size: int

    def read(self) -> bytes:
        """The member's bytes."""
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(self.url)  # one ranged read (one GET on an object store)
        data = fs.cat_file(path, start=self.offset, end=self.offset + self.size)
        if len(data) != self.size:
            raise OSError(f"tar member truncated: {len(data)} of {self.size} bytes at offset {self.offset}")
        return data
