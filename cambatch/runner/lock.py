"""One run at a time per output folder and shard: an advisory lock the kernel drops on death.

`flock` is released when its holder exits, `kill -9` included, so a dead run's lock file is
simply taken over; the file's JSON names the holder for the message of a refused second run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import CambatchError


class OutputLocked(CambatchError):
    """Another live run holds this output folder (and shard)."""

    exit_code = 3


class OutputLock:
    """The lock file of one output folder and shard, held with `flock` for the duration of a `with` block."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None
        self.took_over: dict | None = None  # the dead holder's record, when its lock was left behind

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(handle)
            handle.close()
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            raise OutputLocked(
                f"{self.path.parent} is in use by another cambatch run ({who}); wait for it, "
                "or give this run another --out or --shard"
            ) from None
        self.took_over = _read(handle) or None
        handle.seek(0)
        handle.truncate()
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv,
        }
        handle.write(json.dumps(record))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()  # an empty file: nobody holds it
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except ValueError:
        return {}
