"""Stage 1: find the image files under the inputs, in a stable order."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Protocol

from ..errors import ImageError, UsageError
from ..layout import is_out_folder
from .parquet import is_parquet_name, parquet_rows
from .remote import RemoteFile, etag, is_url, listing, store_error
from .remote import version as remote_version
from .webdataset import is_shard_name, shard_members

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class SampleReader(Protocol):
    """How a loader worker fetches the bytes of an image that is not a plain local file (a URL, a tar
    member, a Parquet cell). Picklable: it travels to the workers, which do the I/O themselves.
    """

    def read(self) -> bytes: ...


class Unusable(ImageError):
    """An image the run must not explain: what it is said to be contradicts itself (two labels, two
    annotation entries). The message, meant for a person, is the image's error row.
    """


@dataclass(frozen=True)
class ImageSource:
    """One image (a file, an object, a tar member or a Parquet row) and where it was found."""

    path: Path | str  # absolute local path; for other samples the URL or container path naming it
    input_root: Path | str  # the INPUT it was found under, absolute (a URL as given for remote INPUTs)
    rel: str  # path relative to input_root, POSIX separators (`shard.tar/key.jpg`, `file.parquet#row`)
    size: int = -1  # bytes and modification time: a rerun redoes an image only when they change
    mtime_ns: int = -1
    label: str | None = None  # ground truth, when the input names it
    reader: SampleReader | None = None  # None: a local file, read from `path`
    etag: str | None = None  # on a store: the object's (or its container's) ETag, compared by resume too
    error: str | None = None  # known before reading: the image is an error row (`Unusable`), never explained

    def read_bytes(self) -> bytes:
        """The image's encoded bytes: the one place a loader worker reads an input.

        An image with an `error` raises `Unusable` here rather than being left out before the loader:
        every engine then makes it the image's error row, as it does for a file that cannot be decoded.
        """
        if self.error is not None:
            raise Unusable(self.error)
        return self.reader.read() if self.reader is not None else Path(self.path).read_bytes()

    @property
    def local_path(self) -> Path | None:
        """The local file holding exactly this image, if there is one."""
        return Path(self.path) if self.reader is None else None

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
    """List the images under `inputs`: folders searched recursively, image files, fsspec URLs
    (`s3://bucket/photos`), WebDataset `.tar` shards and Parquet files of images, given or met in a folder.

    Anything under `exclude` (this run's output folder) or under any other cambatch output folder
    (`layout.is_out_folder`) is skipped, so that a run never reads overlays, thumbnails or mean maps
    back as photos. Symlinked folders are followed once; a link loop is not walked twice.
    `labels_from_dirs` labels each image with the first folder of its path under its INPUT, as
    torchvision's ImageFolder does (`folder_label`). A Parquet file met in a folder without an image
    column is not a dataset and is passed over; a container met in a folder that cannot be read is
    one sample, which fails as one error row (`Unreadable`), and the rest of the folder goes on.
    """
    excluded = exclude.resolve() if exclude is not None else None
    found: list[ImageSource] = []
    for raw in inputs:
        if is_url(str(raw)):
            found.extend(_remote(str(raw)))
            continue
        given = Path(raw).expanduser()
        if not given.exists():
            raise UsageError(f"input not found: {raw}")
        root = given.absolute()
        if given.is_file():
            found.extend(_given_file(root))
            continue
        found.extend(_walk(root, excluded))
    if labels_from_dirs:
        found = [replace(s, label=folder_label(s.rel)) for s in found]
    return found


def folder_label(rel: str) -> str | None:
    """ImageFolder's label: the first folder of the path under the INPUT (`espresso/nested/x.jpg`: espresso).

    An image at the INPUT's top has none. A container's samples take the container's place (its members'
    own folders are inside a file, not folders of the INPUT).
    """
    parts = PurePosixPath(rel).parts
    container = next((i for i, part in enumerate(parts) if is_shard_name(part)), len(parts) - 1)
    return parts[0] if container > 0 else None


@dataclass(frozen=True)
class Unreadable:
    """The reader of a container that could not be listed: reading it fails with why, so it is one error row."""

    reason: str

    def read(self) -> bytes:
        raise OSError(self.reason)


def image_source(path: Path, root: Path, rel: str, label: str | None = None) -> ImageSource:
    try:
        stat = path.stat()
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    except OSError:  # a listed file that is missing: it becomes an error row when decoded
        size = mtime_ns = -1
    return ImageSource(path=path, input_root=root, rel=rel, size=size, mtime_ns=mtime_ns, label=label)


def _given_file(path: Path) -> list[ImageSource]:
    """An INPUT that is one file: a container's samples, else the file itself (an error row if no image)."""
    if is_shard_name(path.name) or is_parquet_name(path.name):
        version = _local_version(path)
        return _container(
            _local_fs(), str(path), str(path), root=path.parent, rel=path.name, version=version, given=True
        )
    return [image_source(path, path.parent, path.name)]


def _walk(root: Path, excluded: Path | None) -> list[ImageSource]:
    sources = []
    seen_dirs: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = Path(dirpath).resolve()
        if real in seen_dirs or (excluded is not None and real.is_relative_to(excluded)) or is_out_folder(real):
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if is_image_name(name):
                sources.append(image_source(path, root, rel))
            elif is_shard_name(name) or is_parquet_name(name):
                sources.extend(_walked_container(path, root, rel))
    return sources


def _walked_container(path: Path, root: Path, rel: str) -> list[ImageSource]:
    """A container met in a folder: its samples, or itself as one sample that fails when it cannot be read."""
    try:
        version = _local_version(path)
        return _container(_local_fs(), str(path), str(path), root=root, rel=rel, version=version)
    except UsageError as exc:
        return [replace(image_source(path, root, rel), reader=Unreadable(str(exc)))]


def _remote(url: str) -> list[ImageSource]:
    """The samples at or under a URL, named relative to it (to its parent for a single object)."""
    found = listing(url)
    fs, root = found.fs, found.root
    root_url = fs.unstrip_protocol(root).rstrip("/")
    sources = []
    for info in found.infos:
        rel = info["name"][len(root) :].lstrip("/")
        item_url, version, tag = fs.unstrip_protocol(info["name"]), remote_version(info), etag(info)
        if is_shard_name(rel) or is_parquet_name(rel):
            try:
                sources.extend(
                    _container(
                        fs,
                        info["name"],
                        item_url,
                        root=root_url,
                        rel=rel,
                        version=version,
                        etag=tag,
                        given=found.single,
                    )
                )
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001 - a store's own error while reading a container
                raise store_error(item_url, exc) from None
        elif is_image_name(rel) or found.single:
            size, mtime_ns = version
            sources.append(ImageSource(item_url, root_url, rel, size, mtime_ns, reader=RemoteFile(item_url), etag=tag))
    return sources


def _container(
    fs,
    path: str,
    url: str,
    *,
    root: Path | str,
    rel: str,
    version: tuple[int, int],
    etag: str | None = None,
    given: bool = False,
) -> list[ImageSource]:
    """The samples of a tar shard (`rel/member`) or a Parquet file (`rel#row`); `given`: named as an INPUT,
    so a Parquet file without an image column is refused rather than passed over. Every sample carries
    the container's version (and `etag`, on a store).
    """
    if is_shard_name(rel):
        return [
            ImageSource(f"{url}/{name}", root, f"{rel}/{name}", size, version[1], reader=reader, etag=etag)
            for name, size, reader in shard_members(fs, path, url)
            if is_image_name(name)
        ]
    rows = parquet_rows(fs, path, url, version=version[1])
    if rows is None:
        if given:
            raise UsageError(f"{url} has no image column (a column of bytes, or a struct with 'bytes' and 'path')")
        return []
    # A row's bytes are not known without reading it: the file's size and mtime are every row's version.
    return [
        ImageSource(f"{url}#{row}", root, f"{rel}#{row}", version[0], version[1], label, reader, etag)
        for row, reader, label in rows
    ]


def _local_version(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as exc:  # a dangling link: a container's samples cannot even be listed
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return stat.st_size, stat.st_mtime_ns


def _local_fs():
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()
