"""Progress display: a rich bar on a terminal, a plain line every few seconds elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_INTERVAL_S = 5.0


class ProgressReporter(Protocol):
    """What the pipeline tells about progress: a total, then counts as images finish; and the odd line
    on the way (`note`: a network being converted for the runtime).
    """

    def start(self, total: int) -> None: ...
    def advance(self, count: int) -> None: ...
    def stop(self) -> None: ...
    def note(self, line: str) -> None: ...


class SilentProgress:
    """Reports nothing (`--quiet`, `progress=False`)."""

    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def stop(self) -> None:
        pass

    def note(self, line: str) -> None:
        pass


class RichProgress:
    """Images done, images/s and ETA, redrawn in place."""

    def __init__(self, console: Console):
        self._progress = Progress(
            TextColumn("[bold]cambatch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = None
        self._started = 0.0
        self._done = 0

    def start(self, total: int) -> None:
        self._started = time.monotonic()
        self._task = self._progress.add_task("images", total=total, rate="")
        self._progress.start()

    def advance(self, count: int) -> None:
        self._done += count
        rate = self._done / max(time.monotonic() - self._started, 1e-9)
        self._progress.update(self._task, advance=count, rate=f"{rate:.1f} img/s")

    def stop(self) -> None:
        self._progress.stop()

    def note(self, line: str) -> None:
        self._progress.console.print(line, markup=False, highlight=False)  # above the live bar


class PlainProgress:
    """For cron, Slurm and CI logs: one line every `interval` seconds, no control characters."""

    def __init__(self, stream=None, interval: float = PLAIN_INTERVAL_S):
        self._stream = stream or sys.stderr
        self._interval = interval
        self._total = 0
        self._done = 0
        self._started = self._last = 0.0

    def start(self, total: int) -> None:
        self._total = total
        self._started = self._last = time.monotonic()

    def advance(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._print(now)

    def stop(self) -> None:
        if self._done:
            self._print(time.monotonic())

    def note(self, line: str) -> None:
        print(line, file=self._stream, flush=True)

    def _print(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        eta = (self._total - self._done) / rate if rate else float("inf")
        percent = 100.0 * self._done / self._total if self._total else 100.0
        print(
            f"cambatch: {self._done}/{self._total} images ({percent:.1f}%), {rate:.1f} img/s, eta {eta:.0f}s",
            file=self._stream,
            flush=True,
        )


def make_progress(quiet: bool, console: Console | None = None) -> ProgressReporter:
    console = console or Console(stderr=True)
    if quiet:
        return SilentProgress()
    return RichProgress(console) if console.is_terminal else PlainProgress()
