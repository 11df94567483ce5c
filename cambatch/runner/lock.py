"""One run at a time per output folder and shard: a lock that dies with the process that took it.

A POSIX record lock (`fcntl.lockf`) belongs to the process, not to the open file: forked children
(the decoding workers) do not inherit it, and the kernel drops it when its process exits,
`kill -9` and the OOM killer included. (`flock` belongs to the open file, which the workers share,
so a killed run's lock used to live on in its orphaned workers.) The file's JSON names the holder
for the message of a refused second run.

A record lock is also dropped when its process closes *any* descriptor of the file, so this
process's own holds are kept in `_HELD` and checked before the file is ever opened again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from ..errors import OutputLocked

# Record locks never conflict within one process, so this process's own holds are kept here too.
_HELD: dict[str, dict] = {}
_HELD_GUARD = threading.Lock()


class OutputLock:
    """The lock file of one output folder and shard, held with `fcntl.lockf` for the duration of a `with` block."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None
        self._key = ""
        self.took_over: dict | None = None  # the dead holder's record, when its lock was left behind

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.path)
        with _HELD_GUARD:
            if key in _HELD:  # checked before opening: closing any descriptor of the file would drop our lock
                raise self._refused(_HELD[key])
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # EAGAIN or EACCES: held by a live process
                holder = _read(handle)
                handle.close()
                raise self._refused(holder) from None
            self.took_over = _read(handle) or None
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "argv": sys.argv,
            }
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(record))
            handle.flush()
            self._handle, self._key = handle, key
            _HELD[key] = record
        return self

    def _refused(self, holder: dict) -> OutputLocked:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
        return OutputLocked(
            f"{self.path.parent} is in use by another cambatch run ({who}); wait for it, "
            "or give this run another --out or --shard"
        )

    def release(self) -> None:
        if self._handle is not None:
            with _HELD_GUARD:
                self._handle.seek(0)
                self._handle.truncate()  # an empty file: nobody holds it
                fcntl.lockf(self._handle, fcntl.LOCK_UN)
                self._handle.close()
                self._handle = None
                _HELD.pop(self._key, None)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_held(path: Path) -> bool:
    """Whether a live process (this one included) holds the lock at `path`."""
    with _HELD_GUARD:
        if os.path.realpath(path) in _HELD:
            return True
        return _held_elsewhere(path)


def _held_elsewhere(path: Path) -> bool:
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(handle, fcntl.LOCK_UN)
        return False


def _read(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except ValueError:
        return {}
