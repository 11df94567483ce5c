"""`--engine ray`'s CPU decode tasks: the plain engine's decode (`data.inputs`) of a batch, as columns.

Torch-free, like everything it imports: a Ray worker that only decodes loads Ray, PIL and numpy,
never torch, and its start-up leaves the cores to the CAM actor's (`ray_engine`).
"""

from __future__ import annotations

import pickle

import numpy as np

from ..data.inputs import Prepared, Preprocess, failure_message, prepare
from . import tuning


def decode_batch(batch: dict[str, np.ndarray], prep: Preprocess) -> dict[str, np.ndarray]:
    """A Ray Data task: decode a batch of pickled sources into the columns `ray_engine` turns back into a `Batch`.

    A failed image keeps its row with its message in `error` (and placeholder pixels), so rows never shift.
    """
    # As the plain engine's loader workers: the CAM actors (their start-up, then their forwards) win
    # every contended core, and decoding runs in the time they leave.
    tuning.background_priority()
    items = [_prepared(pickle.loads(raw), prep) for raw in batch["source"]]
    blank = np.zeros((3, prep.image_size, prep.image_size), np.uint8)
    good = [item if isinstance(item, Prepared) else None for item in items]
    columns = {
        "source": batch["source"],
        "error": np.array([item if isinstance(item, str) else "" for item in items], dtype=object),
        "pixels": np.stack([item.pixels if item else blank for item in good]),
        "width": np.array([item.width if item else -1 for item in good]),
        "height": np.array([item.height if item else -1 for item in good]),
        "orientation": np.array([item.orientation if item else 1 for item in good]),
    }
    if prep.overlays:  # overlay backgrounds differ in size: a ragged column
        photos = [item.photo if item else np.zeros((1, 1, 3), np.uint8) for item in good]
        columns["photo"] = np.array([*photos, None], dtype=object)[:-1]  # `None` keeps numpy from stacking them
    return columns


def _prepared(source, prep: Preprocess) -> Prepared | str:
    """One source read and prepared, or its failure's message (one bad file is one error row)."""
    try:
        return prepare(source.read_bytes(), prep)
    except Exception as exc:  # noqa: BLE001 - any one file's failure must stay one row
        return failure_message(exc)
