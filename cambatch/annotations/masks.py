"""Ground-truth masks: mask PNGs (non-zero = object) and COCO polygons / RLE (through pycocotools), unioned
and mapped into the displayed (EXIF-oriented) image. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.decode import TRANSPOSED
from .model import Truth


@dataclass(frozen=True, eq=False)
class CocoMask:
    """One COCO instance's `segmentation`: polygons `[[x, y, x, y, ...], ...]` or an RLE dict
    (`{"size": [h, w], "counts": ...}`, compressed or not), on an image of `width` x `height`.
    """

    segmentation: object
    width: int
    height: int

    def decode(self) -> np.ndarray:
        """The instance as a bool [height, width] array."""
        try:
            from pycocotools import mask as coco_mask
        except ImportError as exc:  # pragma: no cover - the extra is part of dev
            raise ImportError("COCO masks need pycocotools: pip install 'cambatch[evaluation]'") from exc
        seg = self.segmentation
        if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            seg = coco_mask.frPyObjects(seg, self.height, self.width)  # uncompressed RLE
        elif isinstance(seg, list):
            seg = coco_mask.merge(coco_mask.frPyObjects(seg, self.height, self.width))  # polygons
        return coco_mask.decode(seg).astype(bool)


def _read_png(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 0


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask to (width, height), nearest neighbour (a mask drawn on another size of the image)."""
    if mask.shape == (size[1], size[0]):
        return mask
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0


# PIL's `exif_transpose` steps, by EXIF orientation.
_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def _oriented(mask: np.ndarray, orient: int) -> np.ndarray:
    if orient not in _TRANSPOSE:
        return mask
    from PIL import Image

    picture = Image.fromarray(mask.astype(np.uint8) * 255).transpose(getattr(Image.Transpose, _TRANSPOSE[orient]))
    return np.asarray(picture) > 0


def displayed_mask(truth: Truth, displayed: tuple[int, int], orient: int = 1) -> np.ndarray | None:
    """The union of the truth's masks as a bool [height, width] array of the displayed image (width, height);
    None without masks. Each mask is resized (nearest) to the stored image when drawn at another size, then oriented.
    """
    if not truth.masks:
        return None
    dw, dh = displayed
    stored = (dh, dw) if orient in TRANSPOSED else (dw, dh)
    union = np.zeros((stored[1], stored[0]), bool)
    for source in truth.masks:
        union |= _resized(source.decode() if isinstance(source, CocoMask) else _read_png(source), stored)
    return _oriented(union, orient)


def readable_mask(truth: Truth, displayed: tuple[int, int], orient: int = 1) -> np.ndarray | None:
    """`displayed_mask`, or None when a mask file is missing or unreadable (its `mask_iou` is then null)."""
    try:
        return displayed_mask(truth, displayed, orient)
    except (OSError, ValueError):
        return None
