"""Errors that end a command with a one-line message, and every exit code, declared once (`ExitCode`).

The CLI maps each error to its code; the docs' exit-code table (docs/cli.md) is generated from
`ExitCode`, and a test holds README's short table to it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of every `cambatch` command; each member's `meaning` is what the docs say of it."""

    OK = 0
    FAILED = 1
    USAGE = 2
    LOCKED = 3
    UNWRITABLE = 4
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "the command completed (a run: even with error rows; `check`: no check failed)",
    ExitCode.FAILED: "some image failed and `--fail-on-error` was given, a `check` failed, or an unexpected "
    "internal error (one line; `--debug` shows the traceback)",
    ExitCode.USAGE: "bad usage or settings, refused before any work: missing input, no images found, an OUT that is "
    "a file, unknown model or class, bad option, unusable or unsafe weights, a resume with other settings than the "
    "report's, a damaged report part, a bad policy",
    ExitCode.LOCKED: "the output folder (and shard) is locked by another live run",
    ExitCode.UNWRITABLE: "the output folder could not be written (full disk, read-only, vanished, a store that "
    "went away): its complete parts are kept; rerun when fixed",
    ExitCode.INTERRUPTED: "interrupted (SIGINT/SIGTERM): what was finished is in the report; rerun to resume",
}


class ImageError(Exception):
    """One image's failure, in words meant for its error row: the row's `error` says exactly this."""


class CambatchError(Exception):
    """An error a person can act on; the CLI prints it as one line and exits with `exit_code`."""

    exit_code = ExitCode.FAILED


class UsageError(CambatchError):
    """Bad input, option or setting: nothing was processed."""

    exit_code = ExitCode.USAGE


class OutputLocked(CambatchError):
    """Another live run holds this output folder (and shard)."""

    exit_code = ExitCode.LOCKED


class OutputUnwritable(CambatchError):
    """OUT could not be written; what is in its complete report parts is kept."""

    exit_code = ExitCode.UNWRITABLE
