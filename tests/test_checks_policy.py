"""Policies: the TOML keys, each bad policy refused in one line naming the file and the key (exit 2), and the
default policy, which `cambatch check --init` writes from the same declaration."""

from __future__ import annotations

from dataclasses import fields

import pytest
from inspecting_support import synthesize_run
from typer.testing import CliRunner

from cambatch.checks.metrics import METRICS
from cambatch.checks.policy import DEFAULT_POLICY, Check, Policy, PolicyError, load_policy, parse_policy, policy_toml
from cambatch.cli import app
from cambatch.inspection.options import Thresholds

runner = CliRunner()
GOOD = '[[check]]\nname = "ok"\nmetric = "error_rate"\nmax = 0.1\n'


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return synthesize_run(tmp_path_factory.mktemp("policy") / "run", images=12, classes=3, errors=1)


def test_the_issue_s_example_policy_reads_as_written(tmp_path):
    (tmp_path / "policy.toml").write_text(
        'on_missing = "fail"\n'
        "[[check]]\n"
        'name = "top-1 stable against the baseline"\nmetric = "top1_changed"\nmax = 0.10\nseverity = "fail"\n'
        "[[check]]\n"
        'name = "no class looks at one fixed place"\nmetric = "position_lock"\nper = "class"\nmax = 0.25\n'
        "min_images = 5\n"
    )
    policy = load_policy(tmp_path / "policy.toml")
    assert policy.on_missing == "fail" and policy.source == str(tmp_path / "policy.toml")
    assert policy.checks == (
        Check(name="top-1 stable against the baseline", metric="top1_changed", max=0.1),
        Check(name="no class looks at one fixed place", metric="position_lock", per="class", max=0.25, min_images=5),
    )
    assert policy.on_missing_of(Check(name="x", metric="images", min=1, on_missing="skip")) == "skip"


def test_the_init_file_reads_back_as_the_default_policy_and_is_never_overwritten(tmp_path):
    target = tmp_path / "policy.toml"
    result = runner.invoke(app, ["check", "--init", str(target)])
    assert result.exit_code == 0 and target.read_text() == policy_toml()
    assert load_policy(target).checks == DEFAULT_POLICY.checks
    assert load_policy(target).on_missing == DEFAULT_POLICY.on_missing
    assert "# position_lock: how much a class's maps sit at the same place" in target.read_text()  # commented
    again = runner.invoke(app, ["check", "--init", str(target)])
    assert again.exit_code == 2 and "policy.toml: exists already" in again.stderr
    assert load_policy(None) is DEFAULT_POLICY  # no --policy: the default


def test_the_default_policy_fails_summarize_s_fixed_location_classes():
    """Its position lock limit is summarize's flag threshold, not a second copy of the number."""
    lock = next(c for c in DEFAULT_POLICY.checks if c.metric == "position_lock")
    assert (lock.max, lock.min_images) == (Thresholds().lock_score, Thresholds().min_lock_images)
    assert {c.metric for c in DEFAULT_POLICY.checks} <= set(METRICS)


BAD = [
    ('color = "red"\n' + GOOD, "color: unknown key; known: on_missing, check"),
    ('on_missing = "ignore"\n' + GOOD, "on_missing: unknown value 'ignore'; known: skip, fail"),
    (
        GOOD + '[[check]]\nname = "b"\nmetric = "foo"\nmax = 1\n',
        "check[2].metric: unknown metric 'foo'; known: images, ",
    ),
    (
        GOOD + '[[check]]\nname = "b"\nmetric = "images"\nmaxx = 1\n',
        "check[2].maxx: unknown key; known: name, metric, ",
    ),
    ('[[check]]\nname = "a"\nmetric = "error_rate"\nmin = 0.5\nmax = 0.1\n', "check[1].min: min 0.5 > max 0.1"),
    ('[[check]]\nname = "a"\nmetric = "error_rate"\nmax = "high"\n', 'check[1].max: must be a number, not "high"'),
    ('[[check]]\nname = "a"\nmetric = "error_rate"\nmax = true\n', "check[1].max: must be a number, not true"),
    ('[[check]]\nname = 3\nmetric = "error_rate"\nmax = 1\n', "check[1].name: must be text, not 3"),
    (
        '[[check]]\nname = "a"\nmetric = "position_lock"\nper = "class"\nmax = 1\nmin_images = -1\n',
        "check[1].min_images: must be a whole number >= 0, not -1",
    ),
    (
        '[[check]]\nname = "a"\nmetric = "error_rate"\nmax = 1\nseverity = "fatal"\n',
        "check[1].severity: unknown value 'fatal'; known: fail, warn",
    ),
    (
        '[[check]]\nname = "a"\nmetric = "error_rate"\nper = "image"\nmax = 1\n',
        "check[1].per: unknown value 'image'; known: run, class",
    ),
    (
        '[[check]]\nname = "a"\nmetric = "position_lock"\nmax = 1\n',
        "check[1].per: metric 'position_lock' has no per = 'run' value; it has: class",
    ),
    (
        '[[check]]\nname = "a"\nmetric = "error_rate"\nmax = 1\nmin_images = 5\n',
        'check[1].min_images: only for per = "class"',
    ),
    ('[[check]]\nname = "a"\nmetric = "error_rate"\n', "check[1]: give min, max or both"),
    ('[[check]]\nmetric = "error_rate"\nmax = 1\n', "check[1].name: required"),
    (GOOD + GOOD, "check[2].name: 'ok' is check[1]'s name"),
    ('on_missing = "skip"\n', "check: give at least one [[check]] table"),
    ("check = 3\n", "check: give at least one [[check]] table"),
    ("[[check]\n", "not valid TOML: "),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_a_bad_policy_exits_2_in_one_line_naming_the_file_and_the_key(out, tmp_path, text, message):
    (tmp_path / "policy.toml").write_text(text)
    result = runner.invoke(app, ["check", str(out), "--policy", str(tmp_path / "policy.toml")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"policy.toml: {message}" in lines[0]
    assert result.stdout == ""  # refused before any check


def test_a_missing_policy_file_exits_2_naming_it(out, tmp_path):
    result = runner.invoke(app, ["check", str(out), "--policy", str(tmp_path / "nowhere.toml")])
    assert result.exit_code == 2 and "nowhere.toml: cannot read the policy" in result.stderr


def test_every_key_is_declared_once_with_its_help():
    """The parser, the --init comments and the messages all come from the fields' `Key`s."""
    for f in [*fields(Check), *(f for f in fields(Policy) if "key" in f.metadata)]:
        assert f.metadata["key"].help, f.name
        assert f.name in policy_toml()
    with pytest.raises(PolicyError, match=r"^p\.toml: check\[1\]\.metric: unknown metric"):
        parse_policy({"check": [{"name": "a", "metric": "nope", "max": 1}]}, "p.toml")
