"""The whole job: discover -> decode/preprocess -> model -> CAM -> statistics -> overlays -> report.

`run(RunConfig(...))` is the Python API behind `cambatch run`. The loader's worker processes
decode; the main thread keeps the device busy; a small thread pool renders overlays and map
files while the next batch runs, with a bounded number of images in flight so memory stays flat.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import __version__
from .discover import ImageSource, discover
from .errors import UsageError
from .inference import CamEngine, resolve_device
from .layout import OutputLayout
from .models import DEFAULT_MODEL, CamModel, load_model
from .outputs import ImageWriter
from .preprocess import ImageFiles, Preprocess, collate
from .progress import ProgressReporter, SilentProgress
from .render import COLORMAPS
from .report import ReportWriter

METHOD = "cam"


@dataclass
class RunConfig:
    """Every setting of a run; the CLI's options map one to one onto these fields."""

    inputs: list[Path]
    out: Path
    model: str = DEFAULT_MODEL
    weights: str | None = None  # None: pretrained; "none": random init; else a checkpoint path
    num_classes: int | None = None
    class_names: Path | None = None
    topk: int = 3
    classes: list[str] | None = None  # names or indices, instead of each image's top-k
    image_size: int | None = None  # default: the model's own
    colormap: str = "jet"
    alpha: float = 0.5
    max_side: int = 1024  # 0 keeps the photo's size
    overlays: bool = True
    save_maps: bool = False
    device: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    writer_threads: int = 2


@dataclass
class RunResult:
    run_id: str
    out: Path
    report: Path
    images: int
    ok: int
    errors: int
    overlays: int
    elapsed_s: float
    errors_by_path: dict[str, str] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run(config: RunConfig, progress: ProgressReporter | None = None) -> RunResult:
    """Run the whole job; raises `UsageError` before any work when a setting is wrong."""
    started = time.monotonic()
    progress = progress or SilentProgress()
    _validate(config)
    out = Path(config.out).expanduser().absolute()
    sources = discover(config.inputs, exclude=out)
    model = load_model(config.model, config.weights, config.num_classes, config.class_names, config.image_size)
    class_ids = resolve_classes(config.classes, model.class_names) if config.classes else None
    device = resolve_device(config.device)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)

    engine = CamEngine(model, device, config.topk, class_ids, want_display=config.overlays, want_raw=config.save_maps)
    layout = OutputLayout(out)
    writer = ImageWriter(layout, model.name, METHOD, run_id, model.class_names, config.colormap, config.alpha,
                         config.overlays, config.save_maps, named_by_rank=class_ids is None)  # fmt: skip
    prep = Preprocess(model.input_size, config.max_side if config.overlays else None)
    loader = _loader(sources, prep, config, device)
    report = ReportWriter(layout.report_dir, f"part-{run_id}", _settings(config, model, run_id, device, class_ids))

    result = RunResult(run_id, out, report.final_path, len(sources), 0, 0, 0, 0.0)
    progress.start(len(sources))
    try:
        with ThreadPoolExecutor(config.writer_threads, thread_name_prefix="cambatch-writer") as pool:
            in_flight: deque[Future] = deque()
            for batch in loader:
                for failure in batch.failures:
                    source = sources[failure.index]
                    report.write([writer.error_row(source, failure.error)])
                    result.errors += 1
                    result.errors_by_path[source.rel] = failure.error
                if batch.samples:
                    outputs = engine(batch.pixels)
                    for i, sample in enumerate(batch.samples):
                        in_flight.append(pool.submit(writer.ok_rows, sources[sample.index], sample, outputs, i))
                # Bound the images waiting on the writers: memory stays flat however long the run.
                while len(in_flight) > 4 * loader.batch_size:
                    _collect(in_flight.popleft(), report, result)
                progress.advance(len(batch.samples) + len(batch.failures))
            while in_flight:
                _collect(in_flight.popleft(), report, result)
        report.commit()
    except BaseException:
        report.abort()
        raise
    finally:
        progress.stop()
    result.elapsed_s = time.monotonic() - started
    return result


def _collect(future: Future, report: ReportWriter, result: RunResult) -> None:
    rows = future.result()
    report.write(rows)
    result.ok += 1
    result.overlays += sum(row["overlay_path"] is not None for row in rows)


def resolve_classes(requested: list[str], class_names: list[str]) -> list[int]:
    """Class names (case, `_` and space alike) or indices to indices."""
    by_name = {_name_key(name): i for i, name in enumerate(class_names)}
    resolved = []
    for item in requested:
        item = item.strip()
        if item.isdigit() and int(item) < len(class_names):
            resolved.append(int(item))
        elif _name_key(item) in by_name:
            resolved.append(by_name[_name_key(item)])
        else:
            raise UsageError(f"unknown class {item!r}: give a class name or an index below {len(class_names)}")
    return list(dict.fromkeys(resolved))


def _name_key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def default_workers(device: torch.device) -> int:
    cores = os.cpu_count() or 1
    return min(8, cores) if device.type == "cuda" else min(4, max(1, cores // 2))


def default_batch_size(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 8


def _loader(sources: list[ImageSource], prep: Preprocess, config: RunConfig, device: torch.device) -> DataLoader:
    workers = default_workers(device) if config.workers is None else config.workers
    return DataLoader(
        ImageFiles(sources, prep),
        batch_size=config.batch_size or default_batch_size(device),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,
    )


def _validate(config: RunConfig) -> None:
    if not config.inputs:
        raise UsageError("give at least one input folder or image")
    if config.topk < 1:
        raise UsageError("--topk must be at least 1")
    if not 0.0 <= config.alpha <= 1.0:
        raise UsageError("--alpha must lie between 0 and 1")
    if config.colormap not in COLORMAPS:
        raise UsageError(f"unknown colormap {config.colormap!r}; choose from {', '.join(COLORMAPS)}")
    if config.max_side < 0:
        raise UsageError("--max-side must be 0 (keep the photo's size) or positive")
    if config.image_size is not None and config.image_size < 32:
        raise UsageError("--image-size must be at least 32")
    if (config.batch_size is not None and config.batch_size < 1) or (config.workers is not None and config.workers < 0):
        raise UsageError("--batch-size must be positive and --workers not negative")
    if config.device not in ("auto", "cpu") and not config.device.startswith(("cuda", "mps")):
        raise UsageError(f"unknown device {config.device!r}; use auto, cpu, cuda, cuda:N or mps")


def _settings(config: RunConfig, model: CamModel, run_id: str, device: torch.device, class_ids: list[int] | None) -> dict:
    """What produced the report: stored in the Parquet schema metadata."""
    return {
        "run_id": run_id,
        "cambatch_version": __version__,
        "torch_version": torch.__version__,
        "model": model.name,
        "weights": model.weights,
        "weights_sha256": model.weights_sha256,
        "method": METHOD,
        "topk": config.topk,
        "classes": class_ids,
        "input_size": model.input_size,
        "resize": "whole image to input_size x input_size, no crop",
        "mean": list(model.mean),
        "std": list(model.std),
        "device": str(device),
        "class_names": model.class_names,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items() if k != "inputs"},
        "inputs": [str(Path(p).absolute()) for p in config.inputs],
    }
