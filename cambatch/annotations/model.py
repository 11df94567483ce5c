"""Ground truth for one image, and the set read from one annotation file or folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Box:
    """A ground-truth box in pixel coordinates of the stored image (x0, y0, x1, y1 as the file gives them)."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None
    # The file and line that gave it, for a problem found later (a box outside its image); not part of its value.
    where: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Truth:
    """What the annotations say about one image.

    `size` is the (width, height) the coordinates refer to when the file states it (VOC `<size>`,
    COCO `width`/`height`, WSOL `image_sizes.txt`); boxes are scaled when the image differs.
    `error` makes the image an error row of the evaluation instead of a crash.
    """

    boxes: tuple[Box, ...] = ()
    label: str | None = None
    size: tuple[int, int] | None = None
    masks: tuple = ()  # mask PNG paths (absolute; non-zero = object) and `masks.CocoMask`s, unioned
    error: str | None = None

    def box_array(self) -> np.ndarray:
        """Boxes as a float [G, 4] array."""
        return np.array([[b.x0, b.y0, b.x1, b.y1] for b in self.boxes], dtype=np.float64).reshape(-1, 4)


@dataclass
class Annotations:
    """What one annotation file or folder says: a truth per entry, keyed by the path the entry names its image
    by (as written), and the problems met while reading. `annotations.match` says which entry is which image.

    `root` is the folder the entries' relative paths start from (the file's folder, or the folder read);
    `aliases` the other names an entry answers to (a VOC `<filename>`). `problems` are one line each,
    naming the file and line; an entry that names its image also marks its `Truth.error`.
    """

    source: str
    kind: str
    root: Path
    images: dict[str, Truth] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, key: str, box: Box | None = None, **fields) -> None:
        """Merge a box and/or fields (label, size, masks, error) into the image's truth."""
        old = self.images.get(key, Truth())
        boxes = old.boxes + ((box,) if box is not None else ())
        label = fields.get("label", old.label) or old.label
        if box is not None and label is None:
            label = box.label
        masks = old.masks + tuple(fields.get("masks", ()))
        self.images[key] = Truth(
            boxes=boxes,
            label=label,
            size=fields.get("size", old.size),
            masks=masks,
            error=old.error or fields.get("error"),
        )

    def alias(self, key: str, name: str) -> None:
        """Let the entry `key` answer to `name` too."""
        if name != key and name not in self.aliases.get(key, ()):
            self.aliases[key] = (*self.aliases.get(key, ()), name)

    def problem(self, where: str, message: str, key: str | None = None) -> None:
        """Record one malformed entry; with `key`, the entry's truth carries the error: its image gets no ground
        truth (`evaluate` lists it in `annotation_error`).
        """
        self.problems.append(f"{where}: {message}")
        if key:
            self.add(key, error=f"bad annotation ({where}): {message}")
