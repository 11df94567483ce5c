"""Worker processes that decode a run's images ahead of the model, batch by batch, in order (Linux).

The plain engine's loader on a CPU. It does what torch's DataLoader did there, for less, and without
torch (both measured on docs/performance-runtime.md):

- it imports neither torch nor anything that does, so a run can start it before it imports torch: the
  first batches decode in the second or so of imports and model build in which a core used to idle;
- a batch travels as one anonymous file (`memfd`: its header, then every array), whose descriptor
  crosses a socketpair. The DataLoader shares every tensor of a batch through a shared-memory file of its
  own, each a connection to the worker's resource sharer and an HMAC handshake for the main thread.

Batch `b` is decoded by worker `b % workers`, as the DataLoader deals them. A worker runs ahead of the
run by at most its share of `ahead_bytes` of decoded pixels: the run acknowledges every batch it takes,
and a worker whose unacknowledged batches reach its share waits. Memory stays bounded however many
images the run has. A broken file is a failure in its batch, never an exception.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass

import numpy as np

from ..sources.discover import ImageSource
from .inputs import Prepared, Preprocess, failure_message, prepare

_MESSAGE = struct.Struct("<QQ")  # header length, file length: all a batch's message carries beside its descriptor
_ACK = b"\x01"
JOIN_TIMEOUT_S = 5.0  # a worker told to stop finishes the image it decodes; past this it is killed


def available() -> bool:
    """Whether this platform has what the pool needs (memfd and descriptor passing: Linux)."""
    return hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and sys.platform.startswith("linux")


@dataclass
class DecodedImage:
    """One image of a batch, as its worker prepared it (`inputs.Prepared`), and its place in the run's list."""

    index: int
    pixels: np.ndarray  # uint8 [3, S, S]: a view of its batch's `pixels`
    photo: np.ndarray | None  # uint8 [H, W, 3] at overlay size
    width: int
    height: int
    orientation: int


@dataclass
class DecodedBatch:
    """A batch's good images, its pixels stacked, and its failures: (index in the run's list, message)."""

    pixels: np.ndarray  # uint8 [B, 3, S, S], B = len(images)
    images: list[DecodedImage]
    failures: list[tuple[int, str]]


class DecodePool:
    """Decodes `sources` in batches of `batch_size` with `workers` forked processes (0: in the caller).

    Iterate it once for the batches in order; `close` (or the `with` block's end) stops the workers
    wherever they are. `initializer` runs first in each worker (the run lowers their priority with it).
    """

    def __init__(
        self,
        sources: list[ImageSource],
        prep: Preprocess,
        *,
        batch_size: int,
        workers: int,
        ahead_bytes: int,
        initializer: Callable[[], None] | None = None,
    ):
        self.sources, self.prep = sources, prep
        self.batch_size, self.workers = batch_size, workers
        self._batches = [
            range(start, min(start + batch_size, len(sources))) for start in range(0, len(sources), batch_size)
        ]
        self._processes: list[multiprocessing.Process] = []
        self._sockets: list[socket.socket] = []
        if workers and self._batches:
            self._start(min(workers, len(self._batches)), max(1, ahead_bytes // workers), initializer)

    def serves(self, sources: list[ImageSource], prep: Preprocess, *, batch_size: int, workers: int) -> bool:
        """Whether this pool decodes exactly what a loader of these settings would: the same image objects in
        the same order, the same preprocessing, batches and workers.
        """
        same_images = len(sources) == len(self.sources) and all(
            a is b for a, b in zip(sources, self.sources, strict=True)
        )
        return same_images and (prep, batch_size, workers) == (self.prep, self.batch_size, self.workers)

    def __iter__(self) -> Iterator[DecodedBatch]:
        for number, indices in enumerate(self._batches):
            if not self._sockets:
                yield _decoded_batch(self.sources, self.prep, indices)
                continue
            which = number % len(self._sockets)
            yield self._receive(which)
        self.close()  # every batch taken: the workers may go

    def close(self) -> None:
        """Stop the workers: they see the closed socket at their next send or wait, and exit."""
        for sock in self._sockets:
            sock.close()
        for process in self._processes:
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
        self._sockets, self._processes = [], []

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _start(self, count: int, budget: int, initializer: Callable[[], None] | None) -> None:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(count)]
        context = multiprocessing.get_context("fork")  # the workers share the run's source list, never pickled
        for worker, (_, theirs) in enumerate(pairs):
            others = [s for pair in pairs for s in pair if s is not theirs]
            process = context.Process(
                target=_work,
                args=(theirs, others, self.sources, self.prep, self._batches[worker::count], budget, initializer),
                name=f"cambatch-decode-{worker}",
                daemon=True,
            )
            process.start()
            self._processes.append(process)
        for mine, theirs in pairs:
            theirs.close()  # only the worker holds its end: its death is an end of file here
            self._sockets.append(mine)

    def _receive(self, which: int) -> DecodedBatch:
        sock = self._sockets[which]
        try:
            message, fds, _, _ = socket.recv_fds(sock, _MESSAGE.size, 1)
        except ConnectionResetError:  # it died with acknowledgements unread
            message, fds = b"", []
        if not message or not fds:
            raise RuntimeError(f"a decoding worker died: {_death(self._processes[which])}")
        header_length, length = _MESSAGE.unpack(message)
        try:
            # Shared, so that the arrays are writable views (torch takes them as they are) without a copy: only
            # this process holds the file now. Prefaulted: its pages are mapped in one call, not one fault each.
            file = mmap.mmap(fds[0], length, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        finally:
            os.close(fds[0])
        with suppress(OSError):  # a worker that sent its last batch may be gone already
            sock.send(_ACK, socket.MSG_DONTWAIT)
        return _unpack(file, header_length)


def _death(process: multiprocessing.Process) -> str:
    process.join(JOIN_TIMEOUT_S)
    code = process.exitcode
    if code is None:
        return f"pid {process.pid} closed its socket"
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
    return f"pid {process.pid} {how}"


def _work(sock, others, sources, prep, batches, budget, initializer) -> None:
    """A worker: decode its batches in order, each sent as one memfd, never more than `budget` bytes ahead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle: it closes the pool
    for other in others:
        other.close()
    if initializer is not None:
        initializer()
    waiting: deque[int] = deque()  # the sizes of the batches sent and not yet taken
    try:
        for indices in batches:
            _take_acks(sock, waiting, block=False)
            while waiting and sum(waiting) >= budget:
                _take_acks(sock, waiting, block=True)
            waiting.append(_send(sock, _decoded_batch(sources, prep, indices)))
        # Stay until the run closes: a worker that left with acknowledgements unread would reset the
        # socket, and the run could lose the batches still queued on it.
        while sock.recv(1):
            pass
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the run closed the pool, or died: nobody wants the rest


def _take_acks(sock: socket.socket, waiting: deque[int], *, block: bool) -> None:
    flags = 0 if block else socket.MSG_DONTWAIT
    while waiting:
        try:
            ack = sock.recv(1, flags)
        except BlockingIOError:
            return
        if not ack:
            raise EOFError
        waiting.popleft()
        flags = socket.MSG_DONTWAIT  # after the one waited for, take only those already there


def _decoded_batch(sources: list[ImageSource], prep: Preprocess, indices: range) -> DecodedBatch:
    images, failures, pixels = [], [], []
    for index in indices:
        try:
            # Read here, in the worker: local, remote and container samples alike, never on the model's path.
            prepared = prepare(sources[index].read_bytes(), prep)
        except Exception as exc:  # noqa: BLE001 - any one file's failure must stay one row
            failures.append((index, failure_message(exc)))
            continue
        pixels.append(prepared.pixels)
        images.append(_image(index, prepared))
    stacked = np.stack(pixels) if pixels else np.empty((0, 3, prep.image_size, prep.image_size), np.uint8)
    for image, plane in zip(images, stacked, strict=True):
        image.pixels = plane
    return DecodedBatch(stacked, images, failures)


def _image(index: int, prepared: Prepared) -> DecodedImage:
    return DecodedImage(index, prepared.pixels, prepared.photo, prepared.width, prepared.height, prepared.orientation)


def _send(sock: socket.socket, batch: DecodedBatch) -> int:
    """Write the batch into a new memfd and pass its descriptor; returns the file's length (what it holds)."""
    header = pickle.dumps(
        {
            "pixels": batch.pixels.shape,
            "images": [(i.index, i.width, i.height, i.orientation, _shape(i.photo)) for i in batch.images],
            "failures": batch.failures,
        }
    )
    arrays = [batch.pixels, *(image.photo for image in batch.images if image.photo is not None)]
    parts = [memoryview(header), *(_bytes(array) for array in arrays)]
    fd = os.memfd_create("cambatch-batch", os.MFD_CLOEXEC)
    try:
        for part in parts:
            _write_all(fd, part)
        length = sum(part.nbytes for part in parts)
        socket.send_fds(sock, [_MESSAGE.pack(len(header), length)], [fd])
    finally:
        os.close(fd)
    return length


def _bytes(array: np.ndarray) -> memoryview:
    return np.ascontiguousarray(array, np.uint8).reshape(-1).data  # flat bytes (an empty batch's too)


def _shape(photo: np.ndarray | None) -> tuple[int, ...] | None:
    return None if photo is None else photo.shape


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _unpack(file: mmap.mmap, header_length: int) -> DecodedBatch:
    """The batch's arrays as views of `file`, which stays mapped until the last of them is gone."""
    header = pickle.loads(file[:header_length])
    offset = header_length

    def view(shape: tuple[int, ...]) -> np.ndarray:
        nonlocal offset
        count = int(np.prod(shape))
        array = np.frombuffer(file, np.uint8, count, offset).reshape(shape)
        offset += count
        return array

    pixels = view(header["pixels"])
    images = [
        DecodedImage(index, plane, None, width, height, orientation)
        for (index, width, height, orientation, _), plane in zip(header["images"], pixels, strict=True)
    ]
    for image, (*_, photo_shape) in zip(images, header["images"], strict=True):
        image.photo = view(photo_shape) if photo_shape is not None else None
    return DecodedBatch(pixels, images, header["failures"])
