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
    """Maps [N, h, w] resized to [N, size, size] in one batched product (rows, then columns)."""
    maps = np.asarray(maps, dtype=np.float32)
    rows = resize_matrix(maps.shape[1], size).astype(np.float32)
    cols = resize_matrix(maps.shape[2], size).astype(np.float32)
    return np.einsum("yh,nhw,xw->nyx", rows, maps, cols, optimize=True)


def normalize(maps: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to [0, 1]; a constant or NaN map becomes zeros (the protocol's `normalize_scoremap`)."""
    maps = np.asarray(maps, dtype=np.float32)
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(1), flat.max(1)
    span = high - low
    bad = ~(span > 0) | np.isnan(flat).any(1)
    out = (flat - low[:, None]) / np.where(bad, 1, span)[:, None]
    out[bad] = 0
    return np.clip(out, 0, 1).reshape(maps.shape)


def score_maps(maps: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """The protocol's score maps of raw report maps [N, h, w]: resized to size x size, min-max normalized."""
    return normalize(resize(maps, size))
