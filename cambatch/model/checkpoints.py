"""Reading weights from local files: safe unpickling, usual wrappers, `torch.export` archives, a fingerprint."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import UsageError

# Keys under which training scripts commonly nest the state_dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
# What a weights file must be; said when it is none of them (torch's own words, a magic number or
# "pop from empty list", tell nobody what is wrong).
_KINDS = "a PyTorch checkpoint (torch.save), a .safetensors file or a torch.export .pt2 archive"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: Path, trust: bool = False) -> dict[str, torch.Tensor] | torch.nn.Module:
    """Load a state_dict (or a dict holding one) without ever executing pickled code.

    With `trust` (the user owns the file) a full unpickle is allowed, and so are a whole pickled
    `nn.Module` and a TorchScript archive, which are returned as modules.
    """
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    if path.suffix == ".pt2":
        return read_exported(path, trust)
    if trust:
        return _read_trusted(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"refusing to unpickle {path}: it holds objects beyond plain tensors, and unpickling them "
            f"could run code ({first_line}). Save a plain state_dict, or pass --trust-checkpoint if you own this file"
        ) from None
    except Exception:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise UsageError(f"cannot read weights file {path}: it is not {_KINDS}") from None
    return unwrap_state_dict(loaded, path)


def read_exported(path: Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a `torch.export.save` archive (`.pt2`), by their module paths.

    `torch.export.load` unpickles, so the archive is read the way it stores plain tensors: raw
    records described by JSON, through torch's own archive reader; nothing is unpickled. A weight
    stored pickled (a tensor subclass) is refused unless `trust`. The archive's constants are left
    out: lifted literals and non-persistent buffers, which the named architecture makes itself.
    The graph is not run either: the weights load into the architecture `--model` names.
    """
    if trust:
        return dict(torch.export.load(path).state_dict)
    try:
        return _pt2_weights(path)
    except UsageError:
        raise
    except (ImportError, AttributeError) as exc:  # the private reader below moved: say so, not "damaged"
        raise UsageError(
            f"cannot read {path} without unpickling: torch {torch.__version__} changed its torch.export archive "
            f"reader ({exc}); pass --trust-checkpoint if you own the file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive, or one this torch cannot read
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read the torch.export archive {path} ({first_line})") from None


def _pt2_weights(path: Path) -> dict[str, torch.Tensor]:
    """The archive's weights through torch's own reader, `torch.export.pt2_archive._package`: private, so
    this is the one function that touches it (tests/test_model_checkpoints.py reads an archive the
    installed torch wrote through it, and fails when the reader moves).
    """
    from torch.export.pt2_archive import _package as pt2

    with pt2.PT2ArchiveReader(str(path)) as reader:
        config = pt2._load_payload_config(reader, pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format("model"))
        pickled = [name for name, meta in config.config.items() if meta.use_pickle]
        if pickled:
            raise UsageError(
                f"refusing to unpickle {path}: its weight {pickled[0]!r} is stored pickled (a tensor subclass), "
                "and unpickling could run code. Export plain tensors, or pass --trust-checkpoint if you own it"
            )
        records = pt2._build_file_map(reader, config, pt2.WEIGHTS_DIR)
        return {
            name: torch.as_strided(
                records[meta.path_name],
                pt2.deserialize_size(meta.tensor_meta.sizes),
                pt2.deserialize_stride(meta.tensor_meta.strides),
                pt2.deserialize_storage_offset(meta.tensor_meta.storage_offset),
            ).detach()
            for name, meta in config.config.items()
        }


def _load_torchscript(path: Path) -> torch.nn.Module:
    """A TorchScript file (trusted only): `torch.jit.load`, which torch 2.14 deprecates for `torch.export`.
    The one call to it; when it goes, a TorchScript checkpoint is refused here with that reason.
    """
    return torch.jit.load(str(path), map_location="cpu")


def _read_trusted(path: Path) -> dict[str, torch.Tensor] | torch.nn.Module:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("constants.pkl") for name in archive.namelist()):  # TorchScript
                return _load_torchscript(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise UsageError(f"cannot read weights file {path}: it is not {_KINDS}") from None
    return loaded if isinstance(loaded, torch.nn.Module) else unwrap_state_dict(loaded, path)


def unwrap_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the tensors in a checkpoint dict and drop DataParallel's `module.` prefix."""
    while isinstance(loaded, dict) and not _is_state_dict(loaded):
        inner = next((loaded[k] for k in _WRAPPER_KEYS if isinstance(loaded.get(k), dict)), None)
        if inner is None:
            break
        loaded = inner
    if not isinstance(loaded, dict) or not _is_state_dict(loaded):
        raise UsageError(f"{path} holds no state_dict (a dict of tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def _is_state_dict(candidate: dict) -> bool:
    return bool(candidate) and all(isinstance(v, torch.Tensor) for v in candidate.values())
