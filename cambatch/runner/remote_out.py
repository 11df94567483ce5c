"""OUT as a URL (`--out s3://bucket/cams`): the run writes a local staging folder, and every part it
publishes there goes up to the store, its overlays first.

An object store has no rename and no lock, so the guarantees are built from what it has: an object
appears whole or not at all once its upload completes (S3, GCS, Azure). Hence the order:

1. Before any work, the report's published parts are downloaded into the staging folder; resume,
   the settings check and purges then work on them as on a local OUT, and parts a purge rewrote
   or emptied are uploaded (or deleted) before the first image is processed.
2. Each part the run publishes is uploaded after the overlays its rows name, so a row on the store
   never points at an overlay that is not there. Uploads run on one background thread, in order,
   beside the device; a staged overlay is deleted once it is up, so the staging folder stays small.
3. The run's manifest (`runs/<run_id>.json`, which lists its parts) is uploaded last. The run
   `drain`s the uploads before its manifest may say `completed`, so a late failure makes it `failed`.
4. A store that fails is not asked again by this run (exit 4 after one retry window of its client, not
   one per step of the way out), except for the `failed` manifest, tried once. Every manifest waits in
   a local spool (`PENDING_PREFIX`, under the temporary folder) until its final version is on the
   store; the next run into that URL on this machine uploads what a failed run left there, and marks
   `died` a `running` one whose run is gone (killed: its staging folder's lock is free).

With `--engine ray` every CAM actor stages and uploads its own parts the same way (`StagedOut` without
`__enter__`: nothing to pull), so actors on other nodes need no shared file system; the driver waits
for their rows on the store, then uploads the manifest.

A killed run's staging folder is removed by the next run into any OUT URL on that machine (`sweep`).
A killed run leaves only whole objects: the parts that were up, their overlays, and overlays of a
part that never made it (overwritten when the rerun redoes those images). There is no lock across
machines: two runs writing one OUT URL at once are not prevented (the lock is per staging machine).
Stores without whole-object uploads (sftp, ...) get each part under a dot-name, then moved into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq

from ..errors import OutputUnwritable
from ..layout import OutputLayout
from ..report.parts import arrow_filesystem, footer, published_parts, store_parts
from ..sources.remote import filesystem, store_error
from .lock import OutputLock, is_held

STAGING_PREFIX = "cambatch-out-"  # the staging folders, under `tempfile.gettempdir()` ($TMPDIR)
PENDING_PREFIX = "cambatch-pending-"  # manifests not yet final on their store, one folder per OUT URL
STAGING_LOCK = ".staging.lock"
STAGING_GRACE_S = 60.0
# Stores where an uploaded object appears only once complete: a part goes straight to its name.
_WHOLE_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "memory"}


class StagedOut:
    """A run's OUT on a store: `staging` is the local folder the run writes, mirrored to `url`."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, root = filesystem(self.url)
        self.root = root.rstrip("/")
        self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))
        self._held = OutputLock(self.staging / STAGING_LOCK).acquire()  # dies with this process: see `sweep`
        self.layout = OutputLayout(self.staging)
        self._known: dict[str, tuple[int, int]] = {}  # staged part name -> (size, mtime_ns) as on the store
        self._uploads = ThreadPoolExecutor(1, thread_name_prefix="cambatch-upload")
        self._pending: list[Future] = []
        self._lock = threading.Lock()  # one push at a time: the upload thread's and the final one
        self._manifest: Path | None = None
        self._failed: OutputUnwritable | None = None  # an upload failure, once `drain` saw it

    def __enter__(self) -> StagedOut:
        try:
            sweep(exclude=self.staging)
            self._check_writable()
            self._settle_pending()
            self._pull()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def remote(self, rel: str) -> str:
        """The store path of `rel`, a path relative to OUT."""
        return f"{self.root}/{rel}"

    def published(self) -> None:
        """A part was published in the staging folder: upload it (and its overlays) in the background.

        An upload that failed earlier ends the run here, rather than computing what cannot be saved.
        """
        self._raise_failed()
        self._pending.append(self._uploads.submit(self.push))

    def push(self, *, clear_overlays: bool = False) -> None:
        """Make the store's report what the staging folder's is: new or rewritten parts up, emptied ones gone."""
        with self._lock:
            if clear_overlays:
                self._remove(self.remote(self.layout.overlays_dir.name), recursive=True)
            staged = {part.name: part for part in published_parts(self.layout.report_dir)}
            for name in sorted(set(self._known) - set(staged)):
                self._remove(self._remote_part(name))
                del self._known[name]
            for name, part in staged.items():
                stamp = _stamp(part)
                if self._known.get(name) != stamp:
                    self._upload_overlays(part)
                    self._put_part(part)
                    self._known[name] = stamp

    def parts_on_store(self, prefix: str = "") -> list[str]:
        """The names of the published parts on the store that start with `prefix`."""
        try:
            found = store_parts(self.fs, self.remote(self.layout.report_dir.name))
        except FileNotFoundError:  # no report yet
            return []
        names = (PurePosixPath(path).name for path in found)
        return [name for name in names if name.startswith(prefix)]

    def rows_on_store(self, prefix: str) -> int:
        """The rows of the published parts on the store that start with `prefix` (read from their footers)."""
        arrow = arrow_filesystem(self.fs)
        return sum(footer(self._remote_part(name), arrow).num_rows for name in self.parts_on_store(prefix))

    @property
    def failed(self) -> bool:
        """An upload failed: the run ends with exit 4, and asks the store nothing more but its manifest."""
        return self._failed is not None

    def manifest_written(self, path: Path, *, final: bool) -> None:
        """A manifest of this run was (re)written: spooled; the first uploaded at once, the final after the parts."""
        spooled = self._pending_dir / path.name
        spooled.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, spooled)
        if final:
            self._manifest = path
        else:
            self._guarded(lambda: self._put(path, self._remote_rel(path)))

    @property
    def _pending_dir(self) -> Path:
        """This run's spool of manifests: under the URL's folder, named after the staging folder (whose lock
        tells whether the run is alive).
        """
        return pending_root(self.url) / self.staging.name

    def _settle_pending(self) -> None:
        """Upload the manifests that runs into this URL left unsent here; a `running` one of a run gone is `died`."""
        for folder in sorted(pending_root(self.url).glob(f"{STAGING_PREFIX}*")):
            if is_held(Path(tempfile.gettempdir()) / folder.name / STAGING_LOCK):
                continue  # a live run's own
            for manifest in sorted(folder.glob("*.json")):
                record = json.loads(manifest.read_text(encoding="utf-8"))
                if record.get("status") == "running":
                    manifest.write_text(json.dumps({**record, "status": "died"}, indent=2), encoding="utf-8")
                self._guarded(
                    lambda manifest=manifest: self._put(manifest, f"{self.layout.runs_dir.name}/{manifest.name}")
                )
                manifest.unlink()
            _remove_spooled(folder)

    def drain(self) -> None:
        """Wait for the background uploads, then push what is left: every published part is on the store.

        The run calls this before its manifest says `completed`, so that a late upload failure makes the
        run `failed` instead. A failure is exit 4, and stays the outcome: `finish` raises it again.
        """
        if self._failed is None:
            self._uploads.shutdown(wait=True)
            try:
                self._raise_failed()
                self._guarded(self.push)
            except OutputUnwritable as failure:
                self._failed = failure
        if self._failed is not None:
            raise self._failed

    def finish(self) -> None:
        """`drain`, then upload the final manifest; an upload failure is exit 4.

        After a failed upload the manifest still goes up if it says so (`failed`); one saying `completed`
        would be false, and the store keeps the first one, which `cambatch runs` shows as died.
        """
        try:
            self.drain()
        except OutputUnwritable:
            if self._manifest is not None and _status(self._manifest) != "completed":
                with contextlib.suppress(Exception):  # the upload failure is the error to report; spooled if not up
                    self._put_manifest()
            raise
        if self._manifest is not None:
            self._guarded(self._put_manifest)

    def _put_manifest(self) -> None:
        self._put(self._manifest, self._remote_rel(self._manifest))
        _remove_spooled(self._pending_dir)  # final and on the store: nothing left to send

    def close(self) -> None:
        self._uploads.shutdown(wait=True, cancel_futures=True)
        self._held.release()
        shutil.rmtree(self.staging, ignore_errors=True)

    def _check_writable(self) -> None:
        """Before any work: an object written and removed, so a missing bucket or a read-only key fails now."""
        probe = self.remote(f"{self.layout.runs_dir.name}/.cambatch-probe-{os.getpid()}")
        try:
            self._folders([probe])
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)
        except Exception as exc:  # noqa: BLE001 - every store raises its own kinds; all mean the same here
            raise store_error(self.url, exc, doing="write") from None

    def _pull(self) -> None:
        """Download the report's published parts into the staging folder (the store is the truth)."""
        try:
            names = self.parts_on_store()
        except Exception as exc:  # noqa: BLE001 - every store raises its own kinds; all mean it cannot be read
            raise store_error(self.url, exc) from None
        if not names:
            return
        self.layout.report_dir.mkdir(parents=True)
        local = [str(self.layout.report_dir / name) for name in names]
        try:
            self.fs.get([self._remote_part(name) for name in names], local)
        except Exception as exc:  # noqa: BLE001
            raise store_error(self.url, exc) from None
        self._known = {name: _stamp(Path(path)) for name, path in zip(names, local, strict=True)}

    def _upload_overlays(self, part: Path) -> None:
        """The overlays the part's rows name that are still staged (a rewritten old part's are up already)."""
        rels = pq.read_table(part, columns=["overlay_path"]).column("overlay_path").drop_null().to_pylist()
        staged = [(self.staging / rel, rel) for rel in dict.fromkeys(rels) if (self.staging / rel).is_file()]
        if not staged:
            return
        targets = [self.remote(rel) for _, rel in staged]
        self._folders(targets)
        self.fs.put([str(local) for local, _ in staged], targets)
        for local, _ in staged:
            local.unlink()

    def _put_part(self, part: Path) -> None:
        target = self._remote_part(part.name)
        if self._whole_objects():
            self.fs.put_file(str(part), target)
            return
        temp = self._remote_part(f".{part.name}.tmp")
        self._folders([temp])
        self.fs.put_file(str(part), temp)
        self.fs.mv(temp, target)

    def _put(self, local: Path, rel: str) -> None:
        self._folders([self.remote(rel)])
        self.fs.put_file(str(local), self.remote(rel))

    def _folders(self, paths: list[str]) -> None:
        """Stores with folders (sftp, a local path) need them made; on object stores a key needs none, and
        `makedirs` there would create a missing bucket instead of failing.
        """
        if self._whole_objects():
            return
        for folder in dict.fromkeys(path.rsplit("/", 1)[0] for path in paths):
            self.fs.makedirs(folder, exist_ok=True)

    def _remove(self, path: str, *, recursive: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):  # already gone: what removing it was for
            self.fs.rm(path, recursive=recursive)

    def _remote_part(self, name: str) -> str:
        return self.remote(f"{self.layout.report_dir.name}/{name}")

    def _remote_rel(self, path: Path) -> str:
        return path.relative_to(self.staging).as_posix()

    def _whole_objects(self) -> bool:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple | list) else (self.fs.protocol,)
        return bool(set(protocols) & _WHOLE_OBJECT_STORES)

    def _raise_failed(self) -> None:
        if self._failed is not None:
            raise self._failed
        for future in self._pending:
            if future.done() and future.exception() is not None:
                self._failed = self._failure(future.exception())
                raise self._failed from future.exception()
        self._pending = [f for f in self._pending if not f.done()]

    def _guarded(self, step) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - any store error: the run's report upload failed
            raise self._failure(exc) from exc

    def _failure(self, exc: BaseException) -> OutputUnwritable:
        why = store_error(self.url, exc, doing="write")
        return OutputUnwritable(
            f"{why}; the parts already uploaded are kept, and a rerun of the same command redoes the rest"
        )


def sweep(*, exclude: Path | None = None, min_age_s: float = STAGING_GRACE_S) -> list[Path]:
    """Remove the staging folders that killed runs left under the temporary folder; returns them.

    A live run holds its folder's lock, and the kernel drops it when the run dies (`kill -9` too).
    A folder younger than `min_age_s` may belong to a run that has not taken its lock yet.
    """
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        if folder == exclude or not folder.is_dir() or is_held(folder / STAGING_LOCK):
            continue
        with contextlib.suppress(FileNotFoundError):  # another run's sweep may have taken it
            if time.time() - folder.stat().st_mtime >= min_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def _remove_spooled(folder: Path) -> None:
    """A run's spool folder, and its URL's once empty (the temporary folder keeps nothing of a settled run)."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # another run's spool is still there
        folder.parent.rmdir()


def pending_root(url: str) -> Path:
    """The spool of manifests not yet final on the store at `url` (on this machine)."""
    return Path(tempfile.gettempdir()) / f"{PENDING_PREFIX}{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def _status(manifest: Path) -> str | None:
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError):
        return None


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
