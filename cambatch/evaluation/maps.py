"""Report maps to the protocol's score maps: bilinear resize to a square side, then min-max normalize."""

from __future__ import annotations

import numpy as np

# The protocol's evaluation side (clovaai/wsolevaluation `_RESIZE_LENGTH`).
EVAL_SIZE = 224


def resize_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] weights of bilinear resampling with half-pixel centres: OpenCV's `INTER_LINEAR`, and PIL's and
    torch's bilinear upsampling (the shortcut tools' common grid uses it too).
    """
    centre = (np.arange(dst) + 0.5) * src / dst - 0.5
    centre = np.clip(centre, 0, src - 1)
    low = np.floor(centre).astype(np.int64)
    high = np.minimum(low + 1, src - 1)
    frac = centre - low
    weights = np.zeros((dst, src))
    np.add.at(weights, (np.arange(dst), low), 1 - frac)
    np.add.at(weights, (np.arange(dst), high), frac)
    return weights


def resize(maps: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """Maps [N, h, w] resized to [N, size, size] in two batched products (columns, then rows), C-contiguous."""
    maps = np.asarray(maps, dtype=np.float32)
    rows = resize_matrix(maps.shape[1], size).astype(np.float32)
    cols = resize_matrix(maps.shape[2], size).astype(np.float32)
    return rows @ (maps @ cols.T)


def normalize(maps: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to [0, 1]; a constant or NaN map becomes zeros (the protocol's `normalize_scoremap`).

    In place on a float32 copy, four passes over the pixels: a NaN shows in the minimum or maximum (and a
    NaN span is not positive), so it needs no pass of its own.
    """
    return _normalized(np.array(maps, dtype=np.float32))


def _normalized(out: np.ndarray) -> np.ndarray:
    """`normalize` in place on float32 maps [N, H, W]."""
    flat = out.reshape(len(out), -1)
    low, high = flat.min(1), flat.max(1)
    span = high - low
    bad = ~(span > 0)
    flat -= low[:, None]
    flat *= np.where(bad, 0, 1 / np.where(bad, 1, span))[:, None]
    np.clip(flat, 0, 1, out=flat)
    flat[bad] = 0  # NaN times 0 is NaN
    return out


def score_maps(maps: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """The protocol's score maps of raw report maps [N, h, w]: resized to size x size, min-max normalized."""
    return _normalized(resize(maps, size))  # a fresh array: scaled in place
