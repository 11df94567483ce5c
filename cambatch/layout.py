"""Where everything lives under OUT. Every path under a run's output folder is built here, and stays inside it.

    OUT/report/part-<run_id><shard>-00000.parquet   the report (cambatch.report)
    OUT/overlays/<image key>/top1_<class>.jpg       overlays (cambatch.runner.writer)
    OUT/runs/<run_id>.json                          run manifests (cambatch.runner.manifest)
    OUT/.lock<shard>                                one live run per folder and shard (cambatch.runner.lock)
    OUT/gallery/index.html, thumbs/, photos/, maps/ the HTML gallery (cambatch.inspection.gallery)

Torch-free: the writers and the readers both use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


def slug(name: str) -> str:
    """A class name as a file-name part: 'jack-o'-lantern' -> 'jack_o_lantern'."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"


def image_key(rel: str) -> PurePosixPath:
    """An image's relative path without its extension, with no way to climb out of a folder."""
    stem = rel[: -len(PurePosixPath(rel).suffix)] if PurePosixPath(rel).suffix else rel
    parts = [p for p in PurePosixPath(stem).parts if p not in ("", ".", "..", "/")]
    return PurePosixPath(*parts) if parts else PurePosixPath("image")


@dataclass(frozen=True)
class OutputLayout:
    """The paths of one output folder `root`."""

    root: Path

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def overlays_dir(self) -> Path:
        return self.root / "overlays"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def gallery_dir(self) -> Path:
        return self.root / "gallery"

    def part_name(self, run_id: str, shard_tag: str) -> str:
        """The prefix of a run's report parts (`<prefix>-00000.parquet`, ...)."""
        return f"part-{run_id}{shard_tag}"

    @property
    def purge_lock(self) -> Path:
        """Held while a run rewrites report parts (shards share them)."""
        return self.report_dir / ".purge.lock"

    def lock_path(self, shard_tag: str) -> Path:
        return self.root / f".lock{shard_tag}"

    def manifest_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def overlay_rel(self, rel: str, class_name: str, rank: int | None) -> str:
        """`overlays/<key>/top<rank>_<slug>.jpg`, or `<slug>.jpg` for explicitly chosen classes; relative to OUT."""
        name = f"top{rank}_{slug(class_name)}.jpg" if rank is not None else f"{slug(class_name)}.jpg"
        return (PurePosixPath(self.overlays_dir.name) / image_key(rel) / name).as_posix()

    def gallery_map_rel(self, by: str, number: int, name: str, cluster: int | None = None) -> str:
        """A mean-map picture of group `number` (`name`) grouped `by` class or label, or of one of its clusters;
        relative to the gallery folder (the number keeps names that slug alike apart).
        """
        tail = f"-c{cluster}" if cluster is not None else ""
        return f"maps/{by}/{number:05d}_{slug(name)}{tail}.png"

    def gallery_rel(self, kind: str, rel: str) -> str:
        """A gallery picture of the image `rel` (`kind`: thumbs or photos), relative to the gallery folder."""
        return f"{kind}/{image_key(rel).as_posix()}.jpg"


def out_folder(out: Path | str) -> Path:
    """The run's output folder for any `out` a reader is given: the folder, its `report/`, or one part file."""
    given = Path(out).expanduser()
    if given.is_file():
        given = given.parent
    return given.parent if given.name == "report" and not (given / "report").is_dir() else given
