"""Stage 1: find the image files under the inputs, in a stable order."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageSource:
    """One image file and where it was found."""

    path: Path  # absolute
    input_root: Path  # the INPUT it was found under, absolute
    rel: str  # path relative to input_root, POSIX separators

    @property
    def stem_rel(self) -> str:
        """`rel` without its extension: the key of the image's output files."""
        return self.rel[: -len(Path(self.rel).suffix)] if Path(self.rel).suffix else self.rel


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def discover(inputs: list[Path | str], exclude: Path | None = None) -> list[ImageSource]:
    """List the images under `inputs` (folders searched recursively, or image files).

    Anything under `exclude` (the output folder) is skipped so that a run never reads its own
    overlays back. Symlinked folders are followed once; a link loop is not walked twice.
    """
    excluded = exclude.resolve() if exclude is not None else None
    found: list[ImageSource] = []
    for raw in inputs:
        given = Path(raw).expanduser()
        if not given.exists():
            raise UsageError(f"input not found: {raw}")
        root = given.absolute()
        if given.is_file():
            found.append(ImageSource(path=root, input_root=root.parent, rel=root.name))
            continue
        found.extend(_walk(root, excluded))
    return found


def _walk(root: Path, excluded: Path | None) -> list[ImageSource]:
    sources = []
    seen_dirs: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = Path(dirpath).resolve()
        if real in seen_dirs or (excluded is not None and real.is_relative_to(excluded)):
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if not is_image_name(name):
                continue
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            sources.append(ImageSource(path=path, input_root=root, rel=rel))
    return sources
