"""Errors that end a run with a one-line message and a documented exit code."""

from __future__ import annotations


class CambatchError(Exception):
    """An error a person can act on; the CLI prints it as one line and exits with `exit_code`."""

    exit_code = 1


class UsageError(CambatchError):
    """Bad input, option or setting: nothing was processed."""

    exit_code = 2
