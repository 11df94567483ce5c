"""`-p fast_loop_support`: a pytest plugin for tests/test_fast_loop.py, printing each test that `-m` deselects."""

from __future__ import annotations


def pytest_deselected(items):
    for item in items:
        print(f"deselected {item.nodeid}")
