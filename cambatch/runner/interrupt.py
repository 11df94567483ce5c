"""SIGINT/SIGTERM handling: the first signal asks the run to stop cleanly, a second one aborts."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopRequest:
    """Set by SIGINT or SIGTERM; the run loop checks it between batches."""

    def __init__(self):
        self._event = threading.Event()
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self._event.is_set()

    def set(self, name: str) -> None:
        self.signal_name = name
        self._event.set()


@contextmanager
def stop_on_signals():
    """Yield a `StopRequest`; handlers are restored on exit (and only installed in the main thread)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, _frame):
        if request:  # second signal: the user means it
            raise KeyboardInterrupt
        request.set(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
