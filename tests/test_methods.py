"""`cambatch.methods`: the package's names load on first use, and importing it is cheap.

The helpers `sample_batch` and `tiny_model` live in `methods_support`; they are re-exported here
because `tests/test_methods_reference.py` imports them from this module.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from methods_support import sample_batch, tiny_model  # noqa: F401 - re-exported for test_methods_reference

import cambatch.methods as methods


def test_every_public_name_resolves_to_the_module_that_defines_it():
    for name, module in methods._LAZY.items():
        value = getattr(methods, name)
        assert value is getattr(importlib.import_module(f"cambatch.methods.{module}"), name), name
    assert set(methods.__all__) == set(methods._LAZY) and set(methods.__all__) <= set(dir(methods))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'GradCAMXX'"):
        methods.GradCAMXX  # noqa: B018


def test_importing_the_package_loads_no_torch():
    code = "import sys, cambatch.methods; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == (
        "False"
    )
