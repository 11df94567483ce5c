"""INPUTs given as fsspec URLs (`s3://bucket/photos`, `gs://...`, `file:///data`): listed here, read
by the loader workers through `RemoteFile`.

Credentials and endpoints come from where each library looks for them (for S3: the AWS variables,
`AWS_ENDPOINT_URL` included, `~/.aws`, or fsspec's config such as `FSSPEC_S3_ENDPOINT_URL`); nothing
is passed on the command line. A bad URL, a missing filesystem package, missing credentials or an
unreachable endpoint is one `UsageError` (exit 2) raised while listing, before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ..errors import UsageError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# The package that provides each common protocol, for the message when it is missing.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def is_url(text: str) -> bool:
    """Whether an INPUT is a URL (`scheme://...`) rather than a local path."""
    return bool(_URL.match(str(text)))


def filesystem(url: str):
    """The fsspec filesystem of `url` and the path within it; a URL fsspec cannot serve is a `UsageError`."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        scheme = url.split("://", 1)[0]
        extra = _EXTRAS.get(scheme)
        hint = f"pip install 'cambatch[{extra}]'" if extra else f"install the fsspec package for {scheme}://"
        raise UsageError(f"cannot read {url}: {scheme}:// needs a package that is not installed ({hint})") from exc
    except ValueError as exc:
        raise UsageError(f"cannot read {url}: {exc}") from None


def store_error(url: str, exc: BaseException, *, doing: str = "read") -> UsageError:
    """What went wrong reaching `url` (to `doing` it: read, write), as one line a person can act on."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        why = "no credentials found (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or the store's own)"
    elif names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError"}:
        why = f"endpoint unreachable ({_first_line(exc)})"
    elif isinstance(exc, FileNotFoundError):
        why = "no such object or prefix"
    elif isinstance(exc, PermissionError):
        why = f"access denied ({_first_line(exc)})"
    else:
        why = f"{type(exc).__name__}: {_first_line(exc)}"
    return UsageError(f"cannot {doing} {url}: {why}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class Listing:
    """What a URL holds: files under `root` on `fs`, sorted by path, with fsspec's details (`infos`)."""

    fs: object
    root: str  # the folder relative paths start from: the URL's path, or its parent for a single object
    infos: list[dict]
    single: bool  # the URL names one object


def listing(url: str) -> Listing:
    """The files at or under `url`; anything that keeps the store from answering is a `UsageError`."""
    fs, path = filesystem(url)
    fs.invalidate_cache(path)  # fsspec keeps listings per filesystem: a second run in one process must see new objects
    try:
        info = fs.info(path)
        if info["type"] != "directory":
            return Listing(fs, _parent(path), [info], single=True)
        found = fs.find(path, detail=True, withdirs=False)
    except Exception as exc:  # noqa: BLE001 - every store raises its own kinds; all end the run the same way
        raise store_error(url, exc) from None
    return Listing(fs, path.rstrip("/"), [found[name] for name in sorted(found)], single=False)


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def version(info: dict) -> tuple[int, int]:
    """(size, modification time in ns) of an fsspec info dict: what resume compares (-1 when unknown)."""
    size = int(info.get("size") or info.get("Size") or 0)
    when = info.get("LastModified") or info.get("mtime") or info.get("updated") or info.get("last_modified")
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if isinstance(when, datetime):
        return size, int(when.timestamp() * 1_000_000) * 1000
    return size, int(float(when) * 1e9) if when is not None else -1


def etag(info: dict) -> str | None:
    """The object's ETag in an fsspec info dict (S3, GCS and Azure all give one), without its quotes; None if none."""
    found = info.get("ETag") or info.get("etag")
    return str(found).strip('"') if found else None


@dataclass(frozen=True)
class RemoteFile:
    """An object read whole by a loader worker (fsspec caches one filesystem per worker process)."""

    url: str

    def read(self) -> bytes:
        """The object's bytes."""
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(self.url)
        return fs.cat_file(path)  # one GET, no HEAD first
