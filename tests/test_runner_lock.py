"""`cambatch.runner.lock`: one live run per output folder and shard; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import make_folder
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.errors import CambatchError, OutputLocked
from cambatch.runner.lock import OutputLock, is_held


def test_a_second_run_on_a_locked_output_is_refused_with_exit_3(tmp_path):
    make_folder(tmp_path / "photos", 1)
    out = tmp_path / "out"
    with OutputLock(out / ".lock"):
        result = CliRunner().invoke(app, ["run", str(tmp_path / "photos"), "--out", str(out)])
        assert result.exit_code == 3
        assert f"pid {os.getpid()}" in result.output and "in use by another cambatch run" in result.output
        with pytest.raises(OutputLocked):
            OutputLock(out / ".lock").acquire()
        OutputLock(out / ".lock-shard0001of0002").acquire().release()  # another shard is free


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from cambatch.runner.lock import OutputLock; from pathlib import Path; "
            f"OutputLock(Path({str(out / '.lock')!r})).acquire(); import os; os._exit(0)",
        ],
        timeout=60,
    )
    assert holder.returncode == 0 and '"pid"' in (out / ".lock").read_text()  # died holding it
    lock = OutputLock(out / ".lock").acquire()
    assert lock.took_over and lock.took_over["pid"] != os.getpid()
    lock.release()


def test_the_holder_is_named_in_the_file_and_release_empties_it(tmp_path):
    path = tmp_path / "out" / ".lock"
    with OutputLock(path) as lock:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and "started" in holder
        assert lock.took_over is None  # a fresh lock: nobody before
    assert path.read_text() == ""
    again = OutputLock(path).acquire()  # free again after release
    assert again.took_over is None  # an empty file names no dead holder
    again.release()
    again.release()  # a second release is harmless


def test_a_refused_run_says_who_holds_the_lock(tmp_path):
    path = tmp_path / ".lock"
    with OutputLock(path):
        with pytest.raises(OutputLocked) as refused:
            OutputLock(path).acquire()
        assert json.loads(path.read_text())["pid"] == os.getpid()  # the refused attempt left the record alone
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and "another --out or --shard" in message
    assert isinstance(refused.value, CambatchError) and refused.value.exit_code == 3


HOLDER_WITH_CHILD = """
import os, sys, time
from pathlib import Path
from cambatch.runner.lock import OutputLock
held = OutputLock(Path(sys.argv[1])).acquire()  # kept: a closed handle would drop it
child = os.fork()  # what a DataLoader worker is: a forked child that outlives a killed parent for a while
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


def test_the_lock_dies_with_its_process_even_while_a_forked_child_lives_on(tmp_path):
    path = tmp_path / "out" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER_WITH_CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        assert is_held(path)
        with pytest.raises(OutputLocked, match=f"pid {holder.pid}"):
            OutputLock(path).acquire()
        holder.send_signal(signal.SIGKILL)  # what the OOM killer does
        holder.wait()
        os.kill(child, 0)  # the child is still alive ...
        assert not is_held(path)  # ... and holds nothing: taken over at once, no sleep
        with OutputLock(path) as lock:
            assert lock.took_over["pid"] == holder.pid
            assert is_held(path)
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_second_acquire_in_the_same_process_is_refused_and_leaves_the_first_held(tmp_path):
    path = tmp_path / ".lock"
    with OutputLock(path):
        with pytest.raises(OutputLocked, match=f"pid {os.getpid()}"):
            OutputLock(path).acquire()
        assert is_held(path)
        probe = subprocess.run(
            [sys.executable, "-c", f"from cambatch.runner.lock import is_held; print(is_held({str(path)!r}))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout.strip() == "True"  # another process sees it held, after the refused attempt too
    assert not is_held(path)
