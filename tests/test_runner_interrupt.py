"""`cambatch.runner.interrupt`: the first SIGINT/SIGTERM asks the run to stop, a second one aborts."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from cambatch.runner.interrupt import StopRequest, stop_on_signals


def deliver(sig: signal.Signals) -> None:
    """Send `sig` to this process and give Python the chance to run its handler."""
    signal.raise_signal(sig)
    time.sleep(0.01)


def test_stop_request():
    request = StopRequest()
    assert not request and request.signal_name is None
    request.set("SIGTERM")
    assert request and request.signal_name == "SIGTERM"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_sets_the_stop_request_and_handlers_are_restored(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as stop:
        assert signal.getsignal(sig) is not before[sig]
        assert not stop
        deliver(sig)
        assert stop and stop.signal_name == sig.name
    assert {s: signal.getsignal(s) for s in before} == before


def test_second_signal_raises_keyboard_interrupt_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt), stop_on_signals() as stop:
        deliver(signal.SIGTERM)
        assert stop.signal_name == "SIGTERM"
        deliver(signal.SIGINT)  # the user means it
        pytest.fail("the second signal did not abort")
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_main_thread_no_handler_is_installed():
    before = signal.getsignal(signal.SIGINT)
    seen = {}

    def work():
        with stop_on_signals() as stop:
            seen["handler"] = signal.getsignal(signal.SIGINT)
            seen["stop"] = stop

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen["handler"] is before and isinstance(seen["stop"], StopRequest) and not seen["stop"]
