"""`cambatch.runner.progress`: a rich bar on a terminal, plain lines for logs, nothing when quiet."""

from __future__ import annotations

import io
import re

from rich.console import Console

from cambatch.runner.progress import PlainProgress, RichProgress, SilentProgress, make_progress


def test_plain_progress_prints_lines_without_control_characters():
    stream = io.StringIO()
    progress = PlainProgress(stream, interval=0.0)  # a line at every update
    progress.start(4)
    progress.advance(1)
    progress.advance(3)
    progress.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
    assert lines[0].startswith("cambatch: 1/4 images (25.0%), ") and "img/s, eta " in lines[0]
    assert lines[1].startswith("cambatch: 4/4 images (100.0%)") and lines[1].endswith("eta 0s")
    assert re.fullmatch(r"cambatch: 4/4 images \(100\.0%\), [\d.]+ img/s, eta 0s", lines[2])  # the final line


def test_plain_progress_waits_its_interval_and_says_nothing_about_no_work():
    stream = io.StringIO()
    progress = PlainProgress(stream, interval=3600)
    progress.start(10)
    progress.advance(2)
    assert stream.getvalue() == ""  # within the interval: quiet
    progress.stop()
    assert stream.getvalue().startswith("cambatch: 2/10 images (20.0%)")
    idle = io.StringIO()
    nothing = PlainProgress(idle, interval=0.0)
    nothing.start(0)
    nothing.stop()
    assert idle.getvalue() == ""


def test_rich_progress_counts_images():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    progress = RichProgress(console)
    progress.start(5)
    progress.advance(2)
    progress.advance(3)
    progress.stop()
    assert "5/5" in console.file.getvalue()


def test_make_progress_picks_by_quiet_and_terminal():
    assert isinstance(make_progress(True, Console(file=io.StringIO(), force_terminal=True)), SilentProgress)
    assert isinstance(make_progress(False, Console(file=io.StringIO(), force_terminal=True)), RichProgress)
    assert isinstance(make_progress(False, Console(file=io.StringIO())), PlainProgress)  # a log, not a terminal
