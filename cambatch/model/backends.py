"""The libraries that run a converted network on the CPU, OpenVINO and ONNX Runtime, behind the same calls.

A backend turns a `torch.export` program into files in a folder (`convert`), and loads those files as
a callable for one thread count (`load`). Each library is imported here only, and only when used: a
run whose conversion is cached loads the files and never imports a converter (OpenVINO's PyTorch
frontend, torch.onnx and onnxscript).

Both are told to compute in float32 and to leave the cores unpinned and idle between passes: the
decoding workers and the overlay writers share those cores (`cambatch.runner.tuning`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cache
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from torch.export import ExportedProgram

# A loaded conversion: a float32 batch [B, ...] in, the module's outputs in order.
Compiled = Callable[[np.ndarray], list[np.ndarray]]


class Backend(ABC):
    """One runtime library: its `--runtime` name, how it is installed, and its two calls."""

    name: str  # the --runtime choice
    title: str  # as people write it
    library: str  # the module to import

    def module(self) -> ModuleType:
        """The library, or a `UsageError` saying how to install it."""
        try:
            return import_module(self.library)
        except ImportError:
            raise UsageError(
                f"runtime {self.name} (--runtime) is not installed here: pip install 'cambatch[{self.name}]', "
                "or choose --runtime auto or torch"
            ) from None

    def version(self) -> str:
        return self.module().__version__

    @abstractmethod
    def convert(self, program: ExportedProgram, input_shape: tuple[int, ...], folder: Path) -> None:
        """Write the program's conversion into `folder` (inputs [any batch, *input_shape])."""

    @abstractmethod
    def load(self, folder: Path, threads: int) -> Compiled:
        """The conversion in `folder`, ready to run on `threads` threads."""


class OpenVINO(Backend):
    """OpenVINO: the program converted by its PyTorch frontend, saved as IR, compiled for its CPU plugin."""

    name, title, library = "openvino", "OpenVINO", "openvino"
    FILE = "model.xml"  # and its weights, model.bin

    def convert(self, program: ExportedProgram, input_shape: tuple[int, ...], folder: Path) -> None:
        ov = self.module()
        model = ov.convert_model(program)
        # Only the batch stays dynamic: static image sides let the CPU plugin plan its kernels once.
        model.reshape({model.inputs[0]: ov.PartialShape([-1, *input_shape])})
        ov.save_model(model, folder / self.FILE, compress_to_fp16=False)

    def load(self, folder: Path, threads: int) -> Compiled:
        compiled = self._core().compile_model(
            folder / self.FILE,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": "f32",  # bf16 where the CPU has it would change results
                "PERFORMANCE_HINT": "LATENCY",  # one stream: one batch at a time, as the engine calls it
                "ENABLE_CPU_PINNING": False,
            },
        )
        return lambda x: list(compiled(x).to_tuple())

    @cache  # noqa: B019 - one Core for the process, as OpenVINO advises; the backend itself lives as long
    def _core(self):
        """The process's one OpenVINO Core. Its CPU plugin gives the thread that creates it an alternate signal
        stack (sigaltstack) that it frees with the Core but leaves registered: a Core per load, dropped once a
        run ended, left the next SIGINT (Ctrl-C in a notebook after `cambatch.run`) to crash the interpreter on
        freed memory (measured with OpenVINO 2026.4). A Core that lives as long as the process keeps it valid.
        """
        return self.module().Core()


class OnnxRuntime(Backend):
    """ONNX Runtime: the program exported by torch.onnx (dynamo), run by its CPU execution provider."""

    name, title, library = "onnxruntime", "ONNX Runtime", "onnxruntime"
    FILE = "model.onnx"

    def convert(self, program: ExportedProgram, input_shape: tuple[int, ...], folder: Path) -> None:
        import torch

        self.module()  # not installed: say so before the export's work
        torch.onnx.export(program, dynamo=True, verbose=False).save(folder / self.FILE)

    def load(self, folder: Path, threads: int) -> Compiled:
        ort = self.module()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads would take the cores the decoders and writers run on between passes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(folder / self.FILE), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (OpenVINO(), OnnxRuntime())}
