"""Where everything lives under OUT. Every path under a run's output folder is built here, and stays inside it.

    OUT/report/part-<run_id><shard>[-w<worker>]-00000.parquet   the report (cambatch.report)
    OUT/overlays/[<input>~<hash>/]<rel>[~<hash>]/top1_<class>.jpg  overlays (cambatch.runner.writer)
    OUT/runs/<run_id>.json                          run manifests (cambatch.runner.manifest)
    OUT/.lock<shard>                                one live run per folder and shard (cambatch.runner.lock)
    OUT/gallery/index.html, data/, thumbs/, photos/, maps/ the HTML gallery (cambatch.inspection.gallery)

Torch-free: the writers and the readers both use it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


def slug(name: str) -> str:
    """A class name as a file-name part: 'jack-o'-lantern' -> 'jack_o_lantern'."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"


def _digest(text: str, size: int = 5) -> str:
    # surrogateescape: names that are not UTF-8 on disk still hash (and differ) by their bytes.
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=size).hexdigest()


def _folded(text: str) -> str:
    """How a case- and normalization-insensitive file system (macOS, SMB, NTFS) compares names."""
    return unicodedata.normalize("NFC", text).casefold()


def root_tag(input_root: str) -> str:
    """The top folder of one INPUT's outputs when a run has several: its name and a hash of its absolute path."""
    name = PurePosixPath(str(input_root)).name or "root"
    safe = re.sub(r"[^0-9A-Za-z._-]+", "_", name).strip(".") or "root"
    return f"{safe}~{_digest(str(input_root), 3)}"


def image_dir(rel: str, input_root: str | None = None) -> PurePosixPath:
    """The folder of one image's outputs, one-to-one with (input root, relative path).

    The relative path itself, extension kept (`x/a.jpg/`, `x/a.png/`), under `root_tag(input_root)`
    when given (a run over several INPUTs). A path that a case- or normalization-insensitive file
    system could merge with another (`A.jpg` / `a.jpg`, NFC / NFD), or that had to be cleaned
    (`..`, empty parts), gets `~<hash of the exact path>` on its last part: distinct on any disk.
    """
    parts = [p for p in PurePosixPath(rel).parts if p not in ("", ".", "..", "/")] or ["image"]
    if "/".join(parts) != rel or _folded(rel) != rel:
        parts[-1] = f"{parts[-1]}~{_digest(rel)}"
    if input_root is not None:
        parts.insert(0, root_tag(input_root))
    return PurePosixPath(*parts)


# A report part being written (`report.writer`) or rewritten by a purge:
# `.part-<run_id><shard>[-w<worker>]-NNNNN.parquet.tmp`.
_TEMP_PART = re.compile(
    r"^\.part-\d{8}T\d{6}Z-[0-9a-f]+(?P<shard>-shard\d{4}of\d{4})?(?:-w[0-9a-f]+)?-\d{5}\.parquet\.tmp$"
)


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

    def part_name(self, run_id: str, shard_tag: str, worker: str | None = None) -> str:
        """The prefix of a run's report parts (`<prefix>-00000.parquet`, ...).

        `worker` keeps apart the parts of the processes that write one run's report side by side
        (`--engine ray`: each CAM actor writes its own, `part-<run_id><shard>-w<worker>-00000.parquet`).
        """
        return f"part-{run_id}{shard_tag}" + (f"-w{worker}" if worker else "")

    def temp_part_shard(self, name: str) -> str | None:
        """The shard tag (`""` for a whole-dataset run) of a temporary part file's name; None for any other name."""
        found = _TEMP_PART.match(name)
        return None if found is None else found["shard"] or ""

    @property
    def purge_lock(self) -> Path:
        """Held while a run rewrites report parts (shards share them)."""
        return self.report_dir / ".purge.lock"

    def lock_path(self, shard_tag: str) -> Path:
        return self.root / f".lock{shard_tag}"

    def manifest_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def overlay_rel(
        self, rel: str, class_name: str, rank: int | None, *, class_index: int = 0, input_root: str | None = None
    ) -> str:
        """`overlays/<image_dir>/top<rank>_<slug>.jpg`, relative to OUT.

        For explicitly chosen classes (`rank` None) `c<index>_<slug>.jpg`: two classes may share a
        name (ImageNet has two 'crane's). `input_root` only when the run has several INPUTs.
        """
        leaf = f"top{rank}_{slug(class_name)}.jpg" if rank is not None else f"c{class_index}_{slug(class_name)}.jpg"
        return (PurePosixPath(self.overlays_dir.name) / image_dir(rel, input_root) / leaf).as_posix()

    def gallery_rel(self, kind: str, rel: str, input_root: str | None = None) -> str:
        """A gallery picture of one image (`kind`: thumbs or photos), relative to the gallery folder."""
        return f"{kind}/{image_dir(rel, input_root).as_posix()}.jpg"

    def gallery_chunk_rel(self, number: int) -> str:
        """A chunk of the gallery's card data (a script the page loads), relative to the gallery folder."""
        return f"data/chunk-{number:05d}.js"

    def gallery_map_rel(self, by: str, number: int, name: str, cluster: int | None = None) -> str:
        """A mean-map picture of group `number` (`name`) grouped `by` class or label, or of one of its clusters;
        relative to the gallery folder (the number keeps names that slug alike apart).
        """
        tail = f"-c{cluster}" if cluster is not None else ""
        return f"maps/{by}/{number:05d}_{slug(name)}{tail}.png"


def out_folder(out: Path | str) -> Path:
    """The run's output folder for any `out` a reader is given: the folder, its `report/`, or one part file."""
    given = Path(out).expanduser()
    if given.is_file():
        given = given.parent
    return given.parent if given.name == "report" and not (given / "report").is_dir() else given
