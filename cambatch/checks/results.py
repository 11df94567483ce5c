"""What a check found, as data: `ClassResult`, `CheckResult`, and `CheckRun` (every check of a policy on one run,
and the verdict). JSON, JUnit, Markdown, the table and CSV are all written from these objects
(`cambatch.checks.outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..errors import ExitCode
from ..inspection.options import GroupBy
from .policy import Check

Status = Literal["pass", "warn", "fail", "skip"]
STATUSES: tuple[str, ...] = get_args(Status)
Verdict = Literal["pass", "warn", "fail"]
_WEIGHT = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}  # a check's status is its worst class's


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=_WEIGHT.__getitem__, default="skip")


@dataclass(frozen=True, kw_only=True)
class ClassResult:
    """One class (or label) of a `per = "class"` check."""

    name: str
    value: float | None  # None: no value for this class
    images: int
    status: Status
    reason: str = ""  # the breach (`0.41 > max 0.25`), or why the class was skipped


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """One check of the policy on the run."""

    check: Check
    status: Status
    value: float | None = None  # per = "run"
    reason: str = ""  # the breach, or why the check has no value (missing data)
    by: GroupBy | None = None  # per = "class": whether the names are predicted classes or labels
    classes: tuple[ClassResult, ...] = ()

    def with_status(self, status: Status) -> list[ClassResult]:
        """Its classes of `status`; breaches the worst first, by how far beyond the limit."""
        found = [c for c in self.classes if c.status == status]
        if status in ("fail", "warn"):
            found.sort(key=lambda c: (-self.check.excess(c.value), c.name))
        return found


@dataclass(frozen=True, kw_only=True)
class CheckRun:
    """The policy's checks on one run (and its baseline), and the verdict they add up to."""

    checks: tuple[CheckResult, ...]
    out: str
    run_id: str | None
    baseline: str | None
    baseline_run_id: str | None
    policy: str  # the file, or "the default policy"
    checked_at: str  # UTC, `20250101T120000123456Z`: the name of the verdict kept in OUT/checks/
    strict: bool = False  # a warning fails the run too (`--strict`)

    @property
    def verdict(self) -> Verdict:
        """`fail` when a check fails, else `warn` when one warns, else `pass` (skipped checks pass)."""
        status = worst([result.status for result in self.checks])
        return "pass" if status == "skip" else status

    def failing(self, status: Status) -> bool:
        """Whether a result of `status` fails the run: a failure, or with `strict` a warning."""
        return status == "fail" or (self.strict and status == "warn")

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.failing(self.verdict) else ExitCode.OK

    def count(self, status: Status) -> int:
        return sum(result.status == status for result in self.checks)
