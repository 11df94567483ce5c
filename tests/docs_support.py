"""Running a documentation page's Python blocks, in order, as a reader would (tests/test_docs_*.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def python_blocks(doc: Path, example_folders: re.Pattern) -> list[str]:
    """The ```python blocks of `doc`, without the lines that set the example folders (the test sets those)."""
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(encoding="utf-8"), re.S | re.M)
    return ["\n".join(line for line in block.splitlines() if not example_folders.match(line)) for block in blocks]


def run_blocks(doc: Path, example_folders: re.Pattern, namespace: dict) -> int:
    """Execute every block in one namespace; a failing block fails the test, naming it. Returns the count."""
    blocks = python_blocks(doc, example_folders)
    for number, block in enumerate(blocks, start=1):
        try:
            exec(compile(block, f"{doc.name} block {number}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - say which block broke
            pytest.fail(f"{doc.name} block {number} failed: {type(exc).__name__}: {exc}\n{block}")
    return len(blocks)
