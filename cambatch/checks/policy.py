"""A check policy: which metrics, their limits, and what a breach or missing data means. TOML, declared once.

Each key of a policy is one field below (`Check`, `Policy`) with its type, choices and help; the parser
refuses anything else in one line naming the file and the key
(`policy.toml: check[2].metric: unknown metric 'foo'; known: ...`, exit 2). `DEFAULT_POLICY` is the
policy `cambatch check` uses without `--policy`, and `policy_toml` writes it (or any policy) back as a
commented file: `cambatch check --init FILE`.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import UsageError
from ..inspection.options import Thresholds
from .metrics import LEVELS, METRICS, Level

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Severity = Literal["fail", "warn"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
OnMissing = Literal["skip", "fail"]
ON_MISSING: tuple[str, ...] = get_args(OnMissing)


@dataclass(frozen=True)
class Key:
    """What the parser and the `--init` file need to know about one policy key."""

    help: str
    kind: type  # str, float or int
    choices: tuple[str, ...] | None = None


def key(help: str, kind: type, *, default: Any = MISSING, choices: tuple[str, ...] | None = None) -> Any:
    """A field of `Check` or `Policy`: a key of the TOML file."""
    return field(default=default, metadata={"key": Key(help, kind, choices)})


class PolicyError(UsageError):
    """A policy that cannot be used: one line naming the file and the key (exit 2)."""


@dataclass(frozen=True, kw_only=True)
class Check:
    """One `[[check]]`: a metric of the catalog, its limits, and what a breach means."""

    name: str = key("shown in every output", str)
    metric: str = key("a metric of the catalog (docs/check.md lists them)", str, choices=tuple(METRICS))
    per: Level = key(
        "run: one value for the run; class: one result per class (or label)", str, default="run", choices=LEVELS
    )
    min: float | None = key("the lowest value that passes", float, default=None)
    max: float | None = key("the highest value that passes", float, default=None)
    severity: Severity = key(
        "fail: a breach fails the verdict; warn: it warns", str, default="fail", choices=SEVERITIES
    )
    min_images: int = key("per = class: classes with fewer images are skipped, and listed so", int, default=1)
    on_missing: OnMissing | None = key(
        "this check's own on_missing (default: the policy's)", str, default=None, choices=ON_MISSING
    )

    def breach(self, value: float) -> str | None:
        """How `value` breaks the limits (`0.41 > max 0.25`), or None when it passes."""
        if self.max is not None and value > self.max:
            return f"{value:.4g} > max {self.max:g}"
        if self.min is not None and value < self.min:
            return f"{value:.4g} < min {self.min:g}"
        return None

    def excess(self, value: float) -> float:
        """How far `value` lies beyond the limits (<= 0 inside them): the worst classes come first."""
        above = value - self.max if self.max is not None else -math.inf
        below = self.min - value if self.min is not None else -math.inf
        return max(above, below)

    @property
    def limits(self) -> str:
        """The limits as text: `<= 0.25`, `>= 0.5`, `0.1 to 0.9`."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g} to {self.max:g}"
        return f"<= {self.max:g}" if self.max is not None else f">= {self.min:g}"


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The checks, and what a check whose data is missing does."""

    on_missing: OnMissing = key(
        "what a check whose data is missing (labels, ground truth, a baseline, maps) does: skip, or fail",
        str,
        default="skip",
        choices=ON_MISSING,
    )
    checks: tuple[Check, ...] = ()  # the `[[check]]` tables, in order
    source: str = "the default policy"  # the file it was read from

    def on_missing_of(self, check: Check) -> OnMissing:
        return check.on_missing or self.on_missing


CHECK_TABLE = "check"  # the TOML name of the array of `Check` tables
_LOCK = Thresholds()  # summarize's fixed-location flag: the default policy fails a class at that position lock

DEFAULT_POLICY = Policy(
    checks=(
        Check(name="few images failed", metric="error_rate", max=0.05),
        Check(name="top-1 stable against the baseline", metric="top1_changed", max=0.10),
        Check(name="accuracy holds against the baseline", metric="accuracy_drop", max=0.02),
        Check(name="maps alike in both runs", metric="map_similarity", min=0.5, severity="warn"),
        Check(name="map peaks stay put", metric="peak_shift", max=0.1, severity="warn"),
        Check(
            name="no class looks at one fixed place",
            metric="position_lock",
            per="class",
            max=_LOCK.lock_score,
            min_images=_LOCK.min_lock_images,
        ),
        Check(name="no class keys on the border", metric="flag_border", per="class", max=0, severity="warn"),
        Check(name="no class spreads over the image", metric="flag_spread", per="class", max=0, severity="warn"),
        Check(name="no class looks off the object", metric="flag_off_object", per="class", max=0, severity="warn"),
        Check(name="no new flags since the baseline", metric="new_flags", per="class", max=0, severity="warn"),
    )
)


def load_policy(path: Path | str | None) -> Policy:
    """The policy in the TOML file `path` (`DEFAULT_POLICY` for None); a `PolicyError` naming file and key if bad."""
    if path is None:
        return DEFAULT_POLICY
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    return parse_policy(data, str(path))


def parse_policy(data: dict[str, Any], source: str) -> Policy:
    """A `Policy` from the parsed TOML `data` of file `source`."""
    top = {f.name: f for f in fields(Policy) if "key" in f.metadata}
    _known(data, [*top, CHECK_TABLE], source, "")
    tables = data.get(CHECK_TABLE)
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise PolicyError(f"{source}: {CHECK_TABLE}: give at least one [[{CHECK_TABLE}]] table")
    values = {name: _value(data[name], f, source, name) for name, f in top.items() if name in data}
    checks = tuple(_check(table, source, f"{CHECK_TABLE}[{i}]") for i, table in enumerate(tables, 1))
    seen: dict[str, int] = {}
    for i, check in enumerate(checks, 1):
        if check.name in seen:
            raise PolicyError(f"{source}: {CHECK_TABLE}[{i}].name: {check.name!r} is check[{seen[check.name]}]'s name")
        seen[check.name] = i
    return Policy(**values, checks=checks, source=source)


def _check(table: dict[str, Any], source: str, where: str) -> Check:
    keys = {f.name: f for f in fields(Check)}
    _known(table, list(keys), source, f"{where}.")
    for name, f in keys.items():
        if f.default is MISSING and name not in table:
            raise PolicyError(f"{source}: {where}.{name}: required ({f.metadata['key'].help})")
    values = {name: _value(value, keys[name], source, f"{where}.{name}") for name, value in table.items()}
    metric = METRICS[values["metric"]]
    per = values.get("per", keys["per"].default)
    if per not in metric.levels:
        levels = ", ".join(metric.levels)
        raise PolicyError(f"{source}: {where}.per: metric {metric.name!r} has no per = {per!r} value; it has: {levels}")
    if "min" not in values and "max" not in values:
        raise PolicyError(f"{source}: {where}: give min, max or both")
    if values.get("min", -math.inf) > values.get("max", math.inf):
        raise PolicyError(f"{source}: {where}.min: min {values['min']:g} > max {values['max']:g}")
    if "min_images" in values and per != "class":
        raise PolicyError(f'{source}: {where}.min_images: only for per = "class"')
    return Check(**values)


def _known(table: dict[str, Any], known: list[str], source: str, where: str) -> None:
    for name in table:
        if name not in known:
            raise PolicyError(f"{source}: {where}{name}: unknown key; known: {', '.join(known)}")


def _value(value: Any, f: Field, source: str, where: str) -> Any:
    """`value` checked against the field's `Key`: its type, its choices, no negative count."""
    spec: Key = f.metadata["key"]
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.kind is float and numeric:
        value = float(value)
    elif spec.kind is int and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        pass
    elif not (spec.kind is str and isinstance(value, str)):
        expected = {float: "a number", int: "a whole number >= 0", str: "text"}[spec.kind]
        raise PolicyError(f"{source}: {where}: must be {expected}, not {_toml(value)}")
    if spec.choices is not None and value not in spec.choices:
        kind = "metric" if f.name == "metric" else "value"
        raise PolicyError(f"{source}: {where}: unknown {kind} {value!r}; known: {', '.join(spec.choices)}")
    return value


def write_init(path: Path | str) -> None:
    """`cambatch check --init FILE`: the default policy, commented; an existing file is never overwritten."""
    try:
        with Path(path).open("x", encoding="utf-8") as file:
            file.write(policy_toml())
    except FileExistsError:
        raise PolicyError(f"{path}: exists already; remove it, or --init another file") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot write the policy ({exc.strerror or exc})") from None


def policy_toml(policy: Policy = DEFAULT_POLICY) -> str:
    """`policy` as a commented TOML file that `load_policy` reads back as the same checks."""
    lines = [
        "# A cambatch check policy (docs/check.md). Each [[check]] judges one metric of the run:",
        *(f"#   {f.name:<11} {f.metadata['key'].help}" for f in fields(Check)),
        "# Exit 0 when no check fails (--strict: and none warns), 1 when one fails.",
        "",
    ]
    for f in fields(Policy):
        if "key" in f.metadata:  # the policy's own keys, written even at their defaults: they are few
            lines += [*_comment(f"{f.name}: {f.metadata['key'].help}"), f"{f.name} = {_toml(getattr(policy, f.name))}"]
    for check in policy.checks:
        metric = METRICS[check.metric]
        lines += ["", *_comment(f"{metric.name}: {metric.doc}"), f"[[{CHECK_TABLE}]]", *_assignments(check)]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, width=100, initial_indent="# ", subsequent_indent="#   ")


def _assignments(check: Check) -> list[str]:
    """`key = value` for the keys that are required or differ from their default."""
    return [
        f"{f.name} = {_toml(getattr(check, f.name))}"
        for f in fields(Check)
        if getattr(check, f.name) is not None and getattr(check, f.name) != f.default
    ]


def _toml(value: Any) -> str:
    """A TOML value (text as a basic string: JSON's escapes are TOML's; booleans in lower case)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (str, bool)) else str(value)
