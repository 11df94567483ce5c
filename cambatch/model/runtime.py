"""Forward passes without gradient through a converted network: OpenVINO or ONNX Runtime, on the CPU.

`resolve_runtime` picks the run's runtime from `--runtime`; `Execution` (`cambatch.model.accel`) hands
it every pass that runs with grad mode off, whatever the method, and keeps torch for the others
(the gradient methods' passes). `Runtime.run(module, x)` converts nothing twice: the first pass of
a module at an input shape finds its conversion in the cache (`cambatch.model.conversions`) or
makes it (`torch.export`, then the backend), and loads it for the runtime's thread count (set
by the run's thread plan and `ThreadChooser`, see `CamEngine.set_threads`; else torch's). A
module's outputs come back as torch tensors in the structure the module returns (one tensor, or a
tuple: the network tapped at a layer gives its logits and the layer's output).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .backends import BACKENDS, Backend, Compiled
from .catalog import RUNTIME_PREFERENCE, TORCH
from .conversions import ConversionCache, cache_root, conversion_key

Notify = Callable[[str], None]  # one line for the person running (the run's progress display)


def to_stderr(line: str) -> None:
    """A `Notify` for code with no progress display of its own (a Ray actor, a script)."""
    print(line, file=sys.stderr, flush=True)


class Runtime:
    """A backend's conversions of the modules a run passes to it, loaded once per thread count.

    `strict` (an explicit `--runtime`): a module that cannot be converted is a `UsageError`;
    otherwise (`auto`) torch runs that module, and `notify` says so.
    """

    def __init__(self, backend: Backend, *, cache: ConversionCache, notify: Notify, strict: bool):
        self.backend = backend
        self.label = f"{backend.name} {backend.version().split('-')[0]}"  # OpenVINO's version goes on with its build
        self.cache = cache
        self.notify = notify
        self.strict = strict
        self.threads: int | None = None  # None: torch's intra-op count at each pass
        self._folders: dict[tuple[int, tuple[int, ...]], Path] = {}
        self._compiled: dict[tuple[int, tuple[int, ...], int], Compiled | None] = {}
        self._modules: list[nn.Module] = []  # kept alive: the slots above are keyed by id()

    def run(self, module: nn.Module, x: Tensor) -> Tensor | tuple[Tensor, ...] | None:
        """`module(x)` by the runtime; None where torch has to run it (`auto`, and no conversion)."""
        compiled = self._prepared(module, tuple(x.shape[1:]), self.threads or torch.get_num_threads())
        if compiled is None:
            return None
        outputs = [torch.from_numpy(out) for out in compiled(x.detach().float().contiguous().numpy())]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _prepared(self, module: nn.Module, shape: tuple[int, ...], threads: int) -> Compiled | None:
        slot = (id(module), shape, threads)
        if slot not in self._compiled:
            self._modules.append(module)
            try:
                self._compiled[slot] = self.backend.load(self._conversion(module, shape), threads)
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's model: any failure means the runtime cannot run it
                self._compiled[slot] = self._refuse(module, exc)
        return self._compiled[slot]

    def _conversion(self, module: nn.Module, shape: tuple[int, ...]) -> Path:
        """The folder of the module's conversion: from the cache, else converted now (and said so)."""
        slot = (id(module), shape)
        if slot not in self._folders:
            key = conversion_key(module, shape, self.backend.name, self.backend.version())
            found = self.cache.lookup(key)
            if found is None:
                self.notify(
                    f"cambatch: converting {type(module).__name__} for {self.label}, "
                    f"once (cached in {self.cache.folder(key)})"
                )
                found = self.cache.store(key, lambda folder: self.backend.convert(export(module, shape), shape, folder))
            self._folders[slot] = found
        return self._folders[slot]

    def _refuse(self, module: nn.Module, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        what = f"{self.backend.title} cannot run {type(module).__name__} ({reason})"
        if self.strict:
            raise UsageError(f"runtime {self.backend.name} (--runtime): {what}; use --runtime torch") from None
        self.notify(f"cambatch: {what}; torch runs it")
        return None


def export(module: nn.Module, shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    """`module` as a `torch.export` program for inputs [any batch, *shape], traced on a random batch of two."""
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(False), torch.no_grad():
        return torch.export.export(
            module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), strict=False
        )


def resolve_runtime(
    name: str, *, device_type: str, precision: str, compile: bool, weights: str, notify: Notify
) -> tuple[Runtime | None, str]:
    """The runtime of the passes without gradient (None: torch), and why torch runs them under `auto` ('' if not).

    An explicit runtime that is not installed, or that cannot run with these settings, is a `UsageError`.
    """
    if name == TORCH:
        return None, ""
    refusal = _refusal(device_type, precision, compile)
    if name in BACKENDS:
        if refusal:
            raise UsageError(f"runtime {name} (--runtime) {refusal}; use --runtime torch or auto")
        return _runtime(BACKENDS[name], notify, strict=True), ""
    if device_type != "cpu":
        return None, ""  # on a GPU torch is the runtime, not a fallback
    if refusal:
        return None, f"auto: a converted runtime {refusal}"
    if weights == "none":
        return None, "auto: random weights (--weights none) are never reused, so a conversion would not pay"
    for candidate in RUNTIME_PREFERENCE:
        try:
            return _runtime(BACKENDS[candidate], notify, strict=False), ""
        except UsageError:  # not installed: the next one
            continue
    titles = " nor ".join(BACKENDS[c].title for c in RUNTIME_PREFERENCE)
    return None, f"auto: neither {titles} is installed (pip install 'cambatch[{RUNTIME_PREFERENCE[0]}]')"


def _runtime(backend: Backend, notify: Notify, *, strict: bool) -> Runtime:
    return Runtime(backend, cache=ConversionCache(cache_root()), notify=notify, strict=strict)


def _refusal(device_type: str, precision: str, compile: bool) -> str:
    """Why OpenVINO and ONNX Runtime cannot run this run's passes ('' when they can)."""
    if device_type != "cpu":
        return f"runs on the CPU only (the device is {device_type})"
    if precision != "fp32":
        return f"computes in fp32 only (--precision {precision} is torch's autocast)"
    if compile:
        return "does not combine with --compile (torch.compile)"
    return ""
