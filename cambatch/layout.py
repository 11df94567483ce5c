"""Where each output lives under OUT; every path is built here and stays inside OUT."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .discover import ImageSource


def slug(name: str) -> str:
    """A class name as a file-name part: 'jack-o'-lantern' -> 'jack_o_lantern'."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"


def safe_key(source: ImageSource) -> PurePosixPath:
    """The image's relative path without extension, with no way to climb out of a folder."""
    parts = [p for p in PurePosixPath(source.stem_rel).parts if p not in ("", ".", "..", "/")]
    return PurePosixPath(*parts) if parts else PurePosixPath("image")


@dataclass(frozen=True)
class OutputLayout:
    root: Path

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def overlay_rel(self, source: ImageSource, class_name: str, rank: int | None) -> str:
        """`overlays/<key>/top<rank>_<slug>.jpg`, or `<slug>.jpg` for explicitly chosen classes."""
        name = f"top{rank}_{slug(class_name)}.jpg" if rank is not None else f"{slug(class_name)}.jpg"
        return (PurePosixPath("overlays") / safe_key(source) / name).as_posix()

    def maps_path(self, source: ImageSource) -> Path:
        return self.root / "maps" / f"{safe_key(source)}.npz"
