"""Converted networks on disk: one folder per conversion, found again by everything that made it.

    $CAMBATCH_CACHE (default: the user's cache folder, e.g. ~/.cache/cambatch)
    └── <runtime>/                  openvino, onnxruntime
        └── <key digest>/           32 hex digits of the sha256 of the key below
            ├── entry.json          the key, and each file's size and sha256
            └── model.xml, model.bin / model.onnx

The key (`conversion_key`): the module's architecture (its class and `repr`), the sha256 of its
tensors (the state_dict: pretrained weights, a checkpoint file or a fine-tuned model alike, and of
this very part: the feature extractor, or the network tapped at a layer), the input's shape with
the batch left dynamic, the runtime and its version, and the versions of the libraries whose code the
module runs (torch, timm, torchvision, cambatch). Any change is another folder; nothing is ever
converted from a stale entry.

A conversion is written into a temporary folder beside its place and renamed into it, entry.json
last: a reader sees a whole entry or none, and of two runs converting at once one rename wins. An
entry whose files do not match entry.json (a killed copy, a disk error, an edit) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ENTRY = "entry.json"
FORMAT = 1  # cambatch's way of converting: a change to it is a new key


def cache_root() -> Path:
    """CAMBATCH_CACHE, else cambatch's folder in the user's cache (as platformdirs' user_cache_dir places it)."""
    if os.environ.get("CAMBATCH_CACHE"):
        return Path(os.environ["CAMBATCH_CACHE"]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "cambatch" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "cambatch"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cambatch"


def conversion_key(module: nn.Module, input_shape: tuple[int, ...], runtime: str, version: str) -> dict:
    """Everything a conversion of `module` for inputs [any batch, *input_shape] depends on."""
    return {
        "format": FORMAT,
        "runtime": runtime,
        "runtime_version": version,
        "architecture": _sha256(f"{type(module).__module__}.{type(module).__qualname__}\n{module!r}".encode()),
        "weights": weights_sha256(module),
        "input_shape": list(input_shape),
        "batch": "dynamic",
        "libraries": _libraries(module),
    }


def weights_sha256(module: nn.Module) -> str:
    """The sha256 of the module's tensors: names, dtypes, shapes and values (memory format aside)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        values = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {values.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(values.view(torch.uint8).numpy())
    return digest.hexdigest()


def _libraries(module: nn.Module) -> dict[str, str]:
    """The versions of the packages whose classes make up the module (their forward code is converted)."""
    packages = {type(m).__module__.split(".")[0] for m in module.modules()} | {"torch"}
    return {name: str(getattr(sys.modules.get(name), "__version__", "")) for name in sorted(packages)}


class ConversionCache:
    """The conversions under `root` (see the module doc for the layout)."""

    def __init__(self, root: Path):
        self.root = root

    def folder(self, key: dict) -> Path:
        digest = _sha256(json.dumps(key, sort_keys=True).encode())[:32]
        return self.root / key["runtime"] / digest

    def lookup(self, key: dict) -> Path | None:
        """The entry's folder when it is whole and made from `key`; None when missing or damaged."""
        folder = self.folder(key)
        try:
            entry = json.loads((folder / ENTRY).read_text(encoding="utf-8"))
            intact = entry["key"] == key and entry["files"] and entry["files"] == _files(folder)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return folder if intact else None

    def store(self, key: dict, build: Callable[[Path], None]) -> Path:
        """Build the entry of `key` (`build(folder)` writes the runtime's files) and put it in its place."""
        final = self.folder(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        _discard(final)  # a damaged entry: out of the way first, so the rename below can land
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            build(work)
            entry = {"key": key, "files": _files(work)}
            (work / ENTRY).write_text(json.dumps(entry, indent=1, sort_keys=True), encoding="utf-8")
            try:
                work.rename(final)
            except OSError:  # another run put the same conversion there first: keep theirs
                if self.lookup(key) is None:
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return final


def _files(folder: Path) -> dict[str, dict]:
    """Each file of an entry but entry.json: its size and sha256."""
    return {
        path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path.read_bytes())}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != ENTRY
    }


def _discard(folder: Path) -> None:
    """Remove `folder` if it is there; renamed aside first, so no reader sees it half deleted."""
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}-discarded-{os.getpid()}")
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
