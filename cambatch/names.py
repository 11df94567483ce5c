"""How class names and labels compare, the one rule every layer uses (the report's `correct`, `--classes`,
labels matched to classes, copies of one image that disagree). Plain Python.
"""

from __future__ import annotations


def name_key(name: object) -> str:
    """Class names and labels compare case-blind, `_` and space alike."""
    return " ".join(str(name).replace("_", " ").lower().split())
