"""`cambatch check OUT`: every check of a policy on the run in OUT (and a baseline run), and the verdict.

Torch-free: the metrics come from the report through the inspection and evaluation code
(`cambatch.checks.data`). The verdict is kept in `OUT/checks/<checked_at>.json` (`keep_verdict`), where
the gallery shows the latest.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import OutputUnwritable
from ..layout import OutputLayout, out_folder
from ..sources.remote import filesystem, is_url
from .data import ClassValues, Missing, RunData
from .metrics import METRICS
from .outputs import as_json, write_whole
from .policy import Check, OnMissing, Policy, load_policy
from .results import CheckResult, CheckRun, ClassResult, Status, worst


def check_run(
    out: Path | str,
    policy: Policy | Path | str | None = None,
    *,
    baseline: Path | str | None = None,
    strict: bool = False,
) -> CheckRun:
    """Judge the run in `out` (a folder or a store URL) by `policy` (a `Policy`, a TOML file, or None for the
    default policy), the baseline metrics against the run in `baseline`.

    Raises `UsageError` (exit 2) for a bad policy or a run that cannot be read; a check whose data is
    missing is skipped (or fails, `on_missing = "fail"`) with the reason.

    >>> import cambatch
    >>> checked = cambatch.check_run("cams", "policy.toml", baseline="cams-yesterday")  # doctest: +SKIP
    >>> checked.verdict, [c.check.name for c in checked.checks if c.status == "fail"]  # doctest: +SKIP
    """
    policy = policy if isinstance(policy, Policy) else load_policy(policy)
    data = RunData(out, baseline)
    return CheckRun(
        checks=tuple(judge(check, data, policy.on_missing_of(check)) for check in policy.checks),
        out=str(out),
        run_id=data.settings.get("run_id"),
        baseline=None if baseline is None else str(baseline),
        baseline_run_id=data.baseline_settings.get("run_id"),
        policy=policy.source,
        checked_at=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ"),
        strict=strict,
    )


def judge(check: Check, data: RunData, on_missing: OnMissing) -> CheckResult:
    """One check: its metric computed (run or per class) and held to its limits."""
    metric = METRICS[check.metric]
    reason = data.missing(metric)
    try:
        if reason is None and check.per == "run":
            return _judged_value(check, metric.run(data))
        if reason is None:
            return _judged_classes(check, metric.per_class(data), on_missing)
    except Missing as gap:
        reason = str(gap)
    return CheckResult(check=check, status=_missing_status(on_missing), reason=reason)


def _missing_status(on_missing: OnMissing) -> Status:
    return "fail" if on_missing == "fail" else "skip"


def _judged_value(check: Check, value: float) -> CheckResult:
    if value is None or math.isnan(value):
        raise Missing("no value for this run")
    breach = check.breach(value)
    return CheckResult(
        check=check, status=check.severity if breach else "pass", value=float(value), reason=breach or ""
    )


def _judged_classes(check: Check, found: ClassValues, on_missing: OnMissing) -> CheckResult:
    images = found.images.reindex(found.values.index).fillna(0).astype(int)
    classes = tuple(
        _judged_class(check, str(name), value, int(count))
        for name, value, count in sorted(zip(found.values.index, found.values, images, strict=True))
    )
    status = worst([c.status for c in classes])
    if status != "skip":
        return CheckResult(check=check, status=status, by=found.by, classes=classes)
    reason = f"no class has a value and at least {check.min_images} images" if classes else "no class in this run"
    return CheckResult(check=check, status=_missing_status(on_missing), reason=reason, by=found.by, classes=classes)


def _judged_class(check: Check, name: str, value: float, images: int) -> ClassResult:
    if images < check.min_images:
        reason = f"{images} images, fewer than min_images {check.min_images}"
        return ClassResult(name=name, value=_number(value), images=images, status="skip", reason=reason)
    if pd.isna(value):
        return ClassResult(name=name, value=None, images=images, status="skip", reason="no value for this class")
    breach = check.breach(float(value))
    status = check.severity if breach else "pass"
    return ClassResult(name=name, value=float(value), images=images, status=status, reason=breach or "")


def _number(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def keep_verdict(checked: CheckRun) -> str:
    """Write the verdict (the JSON of `--format json`) to `OUT/checks/<checked_at>.json`; where it went.

    Locally under a temporary name, then renamed: a gallery built meanwhile never reads half a verdict.
    On a store, one whole-object upload. `OutputUnwritable` (exit 4) when OUT cannot be written.
    """
    text = as_json(checked)
    rel = OutputLayout(Path(".")).check_rel(checked.checked_at)
    if is_url(checked.out):
        url = f"{checked.out.rstrip('/').removesuffix('/report')}/{rel}"
        try:
            fs, path = filesystem(url)
            fs.pipe_file(path, text.encode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - every store raises its own kinds; all mean it cannot be written
            raise OutputUnwritable(f"cannot keep the verdict at {url}: {type(exc).__name__}: {exc}") from None
        return url
    target = out_folder(checked.out) / rel
    try:
        write_whole(target, text)
    except OSError as exc:
        raise OutputUnwritable(f"cannot keep the verdict in {target.parent}: {exc.strerror or exc}") from None
    return str(target)


def audit(
    out: Path | str,
    policy: Policy | Path | str | None = None,
    *,
    baseline: Path | str | None = None,
    strict: bool = False,
) -> CheckRun:
    """`check_run`, then `keep_verdict`: what `cambatch check` and `cambatch run --check` do."""
    checked = check_run(out, policy, baseline=baseline, strict=strict)
    keep_verdict(checked)
    return checked
