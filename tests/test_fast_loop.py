"""The fast loop, `pytest -m "not slow"`: tests/conftest.py's rule marks the slow tests.

The rule is tables of names (files, tests, fixtures, parameters, markers): every entry must still name
something in the suite, so a rename cannot quietly put a slow test back into the fast loop; and a real
collection with `-m "not slow"` must leave out known slow tests and keep known fast ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import COLLECTED, REPO, SLOW_FILES, SLOW_FIXTURES, SLOW_MARKERS, SLOW_MODELS, SLOW_TESTS

TESTS = REPO / "tests"


def test_every_entry_of_the_rule_names_something_in_the_suite(pytestconfig):
    for file in SLOW_FILES:
        assert (TESTS / file).is_file(), file
    for entry in SLOW_TESTS:
        file, name = entry.split("::")
        source = (TESTS / file).read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(name.split('[')[0])}\(", source, re.M), entry
    sources = "\n".join(path.read_text(encoding="utf-8") for path in sorted(TESTS.glob("*.py")))
    for fixture in SLOW_FIXTURES:
        assert re.search(rf"^@pytest\.fixture.*\n(@.*\n)*def {fixture}\(", sources, re.M), fixture
    outside = "\n".join(path.read_text(encoding="utf-8") for path in sorted(TESTS.glob("test_*.py")))
    for model in SLOW_MODELS:
        assert f'"{model}"' in outside, model  # still a parameter of some test
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"slow", *SLOW_MARKERS} <= registered


def collect(*files: str) -> tuple[set[str], set[str]]:
    """(kept, deselected) node ids of `pytest --collect-only -m "not slow"` over `files`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-s", "-p", "no:cacheprovider"]
    command += ["-p", "fast_loop_support", "-m", "not slow", *(f"tests/{f}" for f in files)]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    deselected = {line.split(" ", 1)[1] for line in lines if line.startswith("deselected tests/")}
    kept = {line for line in lines if line.startswith("tests/") and "::" in line}
    return kept, deselected


def test_not_slow_leaves_out_the_slow_tests_and_keeps_the_fast_ones():
    # Files whose collection needs no torch: one slow by its name, two with slow and fast tests.
    kept, deselected = collect("test_docs_shell.py", "test_inspection_gallery.py", "test_imports.py")
    gallery, imports = "tests/test_inspection_gallery.py::", "tests/test_imports.py::"
    assert "tests/test_docs_shell.py::test_every_shell_example_runs_as_written" in deselected  # the file
    assert f"{gallery}test_thousands_of_images_stay_one_page_of_data" in deselected  # the fixture big_run
    assert f"{gallery}test_sample_gallery_in_chromium" in deselected  # the marker browser
    assert f"{imports}test_importing_the_model_side_does_load_torch" in deselected  # the test
    assert f"{gallery}test_gallery_files_thumbnails_and_embedded_data" in kept  # the real sample run: fast
    assert f"{gallery}test_errors_are_listed_escaped_and_counted" in kept
    assert f"{imports}test_the_cli_and_the_run_options_load_without_torch_or_pandas" in kept
    assert not kept & deselected and not any(k.startswith("tests/test_docs_shell.py") for k in kept)


# Tests of this session whose marking shows each kind of entry: slow or not.
EXPECTED = {
    "tests/test_cli.py::test_every_method_runs_end_to_end[default-gradcam]": False,
    "tests/test_cli.py::test_every_method_runs_end_to_end[resnet18-gradcam]": True,  # a parameter
    "tests/test_cli.py::test_every_method_runs_end_to_end[default-scorecam]": True,  # one parametrization
    "tests/test_methods_base.py::test_chosen_classes_are_explained_for_every_image": True,  # the fixture resnet18
    "tests/test_methods_base.py::test_select_classes_top_k": False,
    "tests/test_runner_pipeline.py::test_known_top1_predictions": False,  # the real sample run
    "tests/test_runner_pipeline.py::test_hostile_corpus": True,  # the test
}


def test_the_tests_collected_with_this_one_are_marked_by_the_rule(pytestconfig):
    collected = pytestconfig.stash.get(COLLECTED, {})
    present = {nodeid: slow for nodeid, slow in EXPECTED.items() if nodeid in collected}
    if not present:
        pytest.skip('collected without the files of EXPECTED (the whole suite, or `-m "not slow"`, has them)')
    marked = {nodeid: collected[nodeid].get_closest_marker("slow") is not None for nodeid in present}
    assert marked == present
