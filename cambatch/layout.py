"""Where everything lives under OUT. Every path under a run's output folder is built here, and stays inside it.

    OUT/report/part-<run_id><shard>[-w<worker>]-00000.parquet   the report (cambatch.report)
    OUT/overlays/[<input>~<hash>/]<rel>[~<hash>]/top1_<class>.jpg  overlays (cambatch.runner.writer)
    OUT/runs/<run_id>.json                          run manifests (cambatch.runner.manifest)
    OUT/.lock<shard>                                one live run per folder and shard (cambatch.runner.lock)
    OUT/gallery/index.html, data/, thumbs/, photos/, maps/ the HTML gallery (cambatch.inspection.gallery)
    OUT/checks/<checked_at>.json                    the verdicts of `cambatch check` (cambatch.checks)
    OUT/slices/slices.json, members.parquet         error slices and their members (cambatch.bias.slices)
    OUT/CAMBATCH_OUTPUT                             marks the folder as an OUT: no run reads images under it

Torch-free: the writers and the readers both use it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# Bytes a file name may take on the file systems OUT lives on (ext4, APFS, NTFS, ...: 255 each).
NAME_BYTES = 255
_HASH_TAIL = 11  # `~` and the 10 hex digits of `_digest`
# What the gallery adds to an image folder's last part for its pictures (`thumbs/<image dir>.jpg`).
_GALLERY_SUFFIX = ".jpg"
# What a writer adds around a file's name for the temporary one it writes first (`.<name>.<thread id>.tmp`).
_TEMP_ROOM = 26
_SLUG_CHARS = 100  # a class name's part of an overlay's file name: room is left for the run's temp names


def slug(name: str) -> str:
    """A class name as a file-name part: 'jack-o'-lantern' -> 'jack_o_lantern'."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")[:_SLUG_CHARS].strip("_") or "class"


def _digest(text: str, size: int = 5) -> str:
    # surrogateescape: names that are not UTF-8 on disk still hash (and differ) by their bytes.
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=size).hexdigest()


def _folded(text: str) -> str:
    """How a case- and normalization-insensitive file system (macOS, SMB, NTFS) compares names."""
    return unicodedata.normalize("NFC", text).casefold()


def folded_paths(paths: pa.Array) -> pa.Array:
    """`_folded` of every path of an Arrow string array: ASCII ones lowered in Arrow (for ASCII text NFC changes
    nothing and casefold is lower), the others one by one in Python. The report scan names a million images
    with it (`ReportScan.names`), where a Python call a path took most of the gallery's naming pass.
    """
    import pyarrow as pa  # only the report scan calls this: the run's CLI loads without pyarrow
    import pyarrow.compute as pc

    ascii_only = pc.string_is_ascii(paths)
    lowered = pc.ascii_lower(paths)
    others = pc.invert(ascii_only)
    if not pc.any(others).as_py():
        return lowered
    folded = pa.array([_folded(p) for p in paths.filter(others).to_pylist()], pa.string())
    return pc.replace_with_mask(lowered, others, folded)


def clash_key(input_root: str, rel: str) -> tuple[str, str]:
    """What a case- or normalization-insensitive disk sees of an image (input root, path): two images alike here
    clash (`ImageNames`).
    """
    return str(input_root), _folded(rel)


def root_tag(input_root: str) -> str:
    """The top folder of one INPUT's outputs when a run has several: its name and a hash of its absolute path."""
    name = PurePosixPath(str(input_root)).name or "root"
    safe = re.sub(r"[^0-9A-Za-z._-]+", "_", name).strip(".") or "root"
    return f"{_cut(safe, NAME_BYTES - 7)}~{_digest(str(input_root), 3)}"


def image_dir(rel: str, input_root: str | None = None, *, clash: bool = False) -> PurePosixPath:
    """The folder of one image's outputs, one-to-one with (input root, relative path) among a run's images.

    The relative path itself, extension kept (`x/a.jpg/`, `x/a.png/`), under `root_tag(input_root)`
    when given (a run over several INPUTs). A path that `clash`es (a case- or normalization-insensitive
    file system could merge it with another of the run's, `A.jpg` / `a.jpg`, NFC / NFD: `ImageNames`),
    that had to be cleaned (`..`, empty parts), or whose last part would not fit a file name with the
    gallery's suffix and a temporary name's, gets `~<hash of the exact path>` on its last part (cut to
    fit): distinct on any disk.
    A longer folder part is cut the same way, with a hash of that part.
    """
    parts = [p for p in PurePosixPath(rel).parts if p not in ("", ".", "..", "/")] or ["image"]
    parts[:-1] = [_fitted(part, NAME_BYTES, _digest(part)) for part in parts[:-1]]
    room = NAME_BYTES - len(_GALLERY_SUFFIX) - _TEMP_ROOM
    if "/".join(parts) != rel or clash or _size(parts[-1]) > room:
        parts[-1] = f"{_cut(parts[-1], room - _HASH_TAIL)}~{_digest(rel)}"
    if input_root is not None:
        parts.insert(0, root_tag(input_root))
    return PurePosixPath(*parts)


def _size(name: str) -> int:
    return len(name.encode("utf-8", "surrogateescape"))


def _cut(name: str, room: int) -> str:
    """`name` cut to at most `room` bytes, never inside a character."""
    kept, used = [], 0
    for char in name:
        used += _size(char)
        if used > room:
            break
        kept.append(char)
    return "".join(kept)


def _fitted(part: str, room: int, tag: str) -> str:
    """`part` as it is when it fits `room` bytes, else cut, with `~tag` keeping cut names apart."""
    return part if _size(part) <= room else f"{_cut(part, room - _HASH_TAIL)}~{tag}"


@dataclass(frozen=True)
class ImageNames:
    """How one run names its images' output folders (`image_dir`), decided once from all its images.

    Decided before sharding (the runner, from every image found) or from the whole report (the
    inspection commands), so every shard, and a later re-rendering, lays an image out alike.
    `several_roots`: each INPUT gets its own top folder. `clashing`: the (input root, path) keys
    a case- or normalization-insensitive disk could merge with another image's: only those get
    a hash, so `IMG_0001.JPG` keeps its plain name.
    """

    several_roots: bool = False
    clashing: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def of(cls, images: Iterable[tuple[str, str]]) -> ImageNames:
        """The naming for a run over `images`, (input root, path) keys (duplicates count once)."""
        keys = {(str(root), rel) for root, rel in images}
        several = len({root for root, _ in keys}) > 1
        folded = Counter(clash_key(*key) for key in keys)
        return cls(several, frozenset(key for key in keys if folded[clash_key(*key)] > 1))

    def folder(self, input_root: str, rel: str) -> PurePosixPath:
        """The output folder of the image `rel` found under `input_root`."""
        root = str(input_root)
        return image_dir(rel, root if self.several_roots else None, clash=(root, rel) in self.clashing)


OUT_MARKER = "CAMBATCH_OUTPUT"
MARKER_TEXT = "A cambatch output folder: `cambatch run` never reads the images under it as input.\n"


def is_out_folder(folder: Path) -> bool:
    """Whether `folder` is a cambatch OUT (any run's, not only this one's): it holds the marker."""
    return (folder / OUT_MARKER).is_file()


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

    @property
    def checks_dir(self) -> Path:
        return self.root / "checks"

    def check_rel(self, checked_at: str) -> str:
        """One verdict of `cambatch check`, relative to OUT (also on a store); `checked_at` is a UTC time
        (`20250101T120000123456Z`), so the newest verdict is the last name.
        """
        return f"{self.checks_dir.name}/{checked_at}.json"

    @property
    def slices_dir(self) -> Path:
        return self.root / "slices"

    @property
    def slices_file(self) -> Path:
        """The slices `cambatch slices` found: figures, mean maps and leading members of each (JSON)."""
        return self.slices_dir / "slices.json"

    @property
    def slice_members_file(self) -> Path:
        """Every member of every slice, with its membership (Parquet)."""
        return self.slices_dir / "members.parquet"

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

    @property
    def marker(self) -> Path:
        """Marks the folder as a cambatch OUT (`is_out_folder`): a run reads no image under it."""
        return self.root / OUT_MARKER

    def manifest_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def overlay_rel(self, folder: PurePosixPath, class_name: str, rank: int | None, *, class_index: int = 0) -> str:
        """`overlays/<folder>/top<rank>_<slug>.jpg`, relative to OUT; `folder` the image's (`ImageNames.folder`).

        For explicitly chosen classes (`rank` None) `c<index>_<slug>.jpg`: two classes may share a
        name (ImageNet has two 'crane's).
        """
        leaf = f"top{rank}_{slug(class_name)}.jpg" if rank is not None else f"c{class_index}_{slug(class_name)}.jpg"
        return (PurePosixPath(self.overlays_dir.name) / folder / leaf).as_posix()

    def gallery_rel(self, kind: str, folder: PurePosixPath) -> str:
        """A gallery picture of one image (`kind`: thumbs or photos) of output `folder`, relative to the gallery."""
        return f"{kind}/{folder.as_posix()}{_GALLERY_SUFFIX}"

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
