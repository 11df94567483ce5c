"""Ground-truth coordinates of the stored image mapped into the displayed (EXIF-oriented) image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.decode import TRANSPOSED  # EXIF orientations that swap width and height
from .model import Truth


def orientation(path: Path) -> int:
    """The file's EXIF orientation (1 when absent or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            value = img.getexif().get(0x0112, 1)
    except (OSError, ValueError):
        return 1
    return value if value in range(1, 9) else 1


def orient_boxes(boxes: np.ndarray, orient: int, stored: tuple[int, int]) -> np.ndarray:
    """Boxes [G, 4] in stored pixel indices -> displayed pixel indices, for an EXIF `orient`ation (1-8).

    The same transforms as PIL's `exif_transpose`; a pixel index i of an axis of n pixels flips to n-1-i.
    """
    w, h = stored
    x0, y0, x1, y1 = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    fx0, fx1, fy0, fy1 = w - 1 - x1, w - 1 - x0, h - 1 - y1, h - 1 - y0
    mapped = {
        1: (x0, y0, x1, y1),
        2: (fx0, y0, fx1, y1),  # mirrored left-right
        3: (fx0, fy0, fx1, fy1),  # rotated 180
        4: (x0, fy0, x1, fy1),  # mirrored top-bottom
        5: (y0, x0, y1, x1),  # transposed
        6: (fy0, x0, fy1, x1),  # rotated 90 clockwise: the stored left edge becomes the top
        7: (fy0, fx0, fy1, fx1),  # transversed
        8: (y0, fx0, y1, fx1),  # rotated 90 counter-clockwise
    }[orient if orient in range(1, 9) else 1]
    return np.stack(mapped, axis=1)


def displayed_boxes(truth: Truth, displayed: tuple[int, int], orient: int = 1) -> np.ndarray:
    """The truth's boxes in the displayed image of size `displayed` (width, height).

    The coordinates are scaled first when the file states another size than the stored image's
    (e.g. boxes of a full-size original, a resized copy in the run), then oriented.
    """
    dw, dh = displayed
    stored = (dh, dw) if orient in TRANSPOSED else (dw, dh)
    boxes = truth.box_array()
    if truth.size and tuple(truth.size) != stored:
        sx, sy = stored[0] / truth.size[0], stored[1] / truth.size[1]
        boxes = boxes * np.array([sx, sy, sx, sy])
    return orient_boxes(boxes, orient, stored)


def visible_boxes(truth: Truth, displayed: tuple[int, int], orient: int = 1) -> tuple[np.ndarray, list[str]]:
    """`displayed_boxes` clipped to the displayed image, and a problem line (`file:line: ...`) per box lying
    wholly outside it.

    A box that runs past the image's edge is scored by its visible part (IoU, energy and pointing all
    see the same box); one with no pixel in the image names a mistake (another image's box, the wrong
    size), and that image then has no ground truth, as with any malformed entry.
    """
    if not truth.boxes:
        return np.zeros((0, 4)), []
    w, h = displayed
    boxes = displayed_boxes(truth, displayed, orient)
    outside = (boxes[:, 0] > w - 1) | (boxes[:, 1] > h - 1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    problems = [
        f"{box.where or 'annotations'}: box {box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g} lies wholly outside "
        f"the {w}x{h} image"
        for box, out in zip(truth.boxes, outside, strict=True)
        if out
    ]
    return np.clip(boxes, 0, [w - 1, h - 1, w - 1, h - 1]), problems
