"""Stage 1: find the image files under the inputs, in a stable order."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from ..errors import UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageSource:
    """One image file and where it was found."""

    path: Path  # absolute
    input_root: Path  # the INPUT it was found under, absolute
    rel: str  # path relative to input_root, POSIX separators
    size: int = -1  # bytes and modification time: a rerun redoes an image only when they change
    mtime_ns: int = -1
    label: str | None = None  # ground truth, when the input names it

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the image across runs."""
        return str(self.input_root), self.rel

    @property
    def stem_rel(self) -> str:
        """`rel` without its extension: the key of the image's output files."""
        return self.rel[: -len(Path(self.rel).suffix)] if Path(self.rel).suffix else self.rel


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def discover(
    inputs: list[Path | str], exclude: Path | None = None, labels_from_dirs: bool = False
) -> list[ImageSource]:
    """List the images under `inputs` (folders searched recursively, or image files).

    Anything under `exclude` (the output folder) is skipped so that a run never reads its own
    overlays back. Symlinked folders are followed once; a link loop is not walked twice.
    `labels_from_dirs` labels each image with its parent folder's name (ImageFolder layout).
    """
    excluded = exclude.resolve() if exclude is not None else None
    found: list[ImageSource] = []
    for raw in inputs:
        given = Path(raw).expanduser()
        if not given.exists():
            raise UsageError(f"input not found: {raw}")
        root = given.absolute()
        if given.is_file():
            found.append(image_source(root, root.parent, root.name))
            continue
        found.extend(_walk(root, excluded))
    if labels_from_dirs:
        found = [replace(s, label=PurePosixPath(s.rel).parent.name or s.input_root.name) for s in found]
    return found


def image_source(path: Path, root: Path, rel: str, label: str | None = None) -> ImageSource:
    try:
        stat = path.stat()
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    except OSError:  # a listed file that is missing: it becomes an error row when decoded
        size = mtime_ns = -1
    return ImageSource(path=path, input_root=root, rel=rel, size=size, mtime_ns=mtime_ns, label=label)


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
            sources.append(image_source(path, root, path.relative_to(root).as_posix()))
    return sources
