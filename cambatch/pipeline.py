"""The whole job: discover -> decode/preprocess -> model -> CAM -> statistics -> overlays -> report.

`run(RunConfig(...))` is the Python API behind `cambatch run`. The loader's worker processes
decode; the main thread keeps the device busy; a small thread pool renders overlays and map
files while the next batch runs, with a bounded number of images in flight so memory stays flat.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import __version__, resume
from .discover import ImageSource, discover
from . import tuning
from .accel import accelerate
from .errors import UsageError
from .gpu_decode import DecodedBatches, EncodedImageFiles, GpuDecoder, collate_encoded, use_gpu_decode
from .tuning import torch_threads
from .inference import CamEngine, resolve_device
from .interrupt import stop_on_signals
from .layout import OutputLayout
from .lists import read_list
from .lock import OutputLock
from .manifest import versions, write_manifest
from .methods import METHOD_CHOICES
from .models import DEFAULT_MODEL, CamModel, load_model
from .outputs import ImageWriter, name_key
from .preprocess import ImageFiles, Preprocess, collate
from .progress import ProgressReporter, SilentProgress
from .render import COLORMAPS
from .report import ReportWriter
from .shard import parse_shard

METHOD = "cam"


@dataclass
class RunConfig:
    """Every setting of a run; the CLI's options map one to one onto these fields."""

    inputs: list[Path]
    out: Path
    from_list: Path | None = None  # a .txt/.csv/.parquet list of images (column path, optional label)
    labels_from_dirs: bool = False  # label = the image's parent folder name
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
    writer_threads: int | None = None  # overlay/map writer threads; default from the machine (cambatch.tuning)
    overwrite: bool = False  # start over instead of resuming
    retry_errors: bool = False  # redo images whose earlier attempt failed
    shard: str | None = None  # "I/N"; default from SLURM_ARRAY_TASK_* or RANK/WORLD_SIZE
    images_per_part: int = 1000  # a report part is published after this many images (or 60 s)
    trust_checkpoint: bool = False  # allow a full unpickle of --weights (pickled module, TorchScript)
    method: str = METHOD  # a cambatch.methods name, or "auto" (cam where the head allows, else gradcam)
    layer: str | None = None  # target layer of the non-cam methods; default: found automatically
    scorecam_batch: int | None = None  # masked images per forward pass (scorecam); default by device
    faithfulness: bool = False  # add masked_probability, confidence_drop, confidence_increase
    precision: str = "fp32"  # fp32, fp16 or bf16 (autocast of the feature extractor)
    compile: bool = False  # torch.compile the feature extractor
    threads: int | None = None  # torch threads; default from the machine (cambatch.tuning)
    gpu_decode: str = "auto"  # JPEG decoding with nvJPEG on a CUDA device: auto, on or off


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
    skipped: int = 0  # already in the report from an earlier run
    interrupted: str | None = None  # the signal that stopped the run early
    shard: str = "0/1"
    errors_by_path: dict[str, str] = field(default_factory=dict)
    method: str = METHOD  # the method used (`auto` resolved)
    layer: str | None = None  # the layer its maps come from
    faithfulness: dict | None = None  # averages of the faithfulness columns (`FaithfulnessTally.summary`)

    @property
    def processed(self) -> int:
        return self.ok + self.errors

    @property
    def images_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run(config: RunConfig, progress: ProgressReporter | None = None) -> RunResult:
    """Run the whole job; raises `UsageError` before any work when a setting is wrong.

    Resumes by default: images the report already holds (same size and mtime) are skipped.
    """
    started, started_at = time.monotonic(), datetime.now(timezone.utc)
    progress = progress or SilentProgress()
    _validate(config)
    out = Path(config.out).expanduser().absolute()
    shard = parse_shard(config.shard)
    layout = OutputLayout(out)
    with OutputLock(out / f".lock{shard.tag}"):
        sources = [s for s in _sources(config, out) if shard.owns(s.rel)]
        model = load_model(config.model, config.weights, config.num_classes, config.class_names, config.image_size,
                           trust_checkpoint=config.trust_checkpoint, require_cam_head=config.method == "cam")  # fmt: skip
        class_ids = resolve_classes(config.classes, model.class_names) if config.classes else None
        device = resolve_device(config.device)
        if config.overwrite:
            _start_over(layout, shard)
        todo = resume.plan(sources, layout.report_dir, config.retry_errors)
        if todo.purge_keys:
            resume.purge(layout.report_dir, keys=todo.purge_keys)

        run_id = started_at.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
        engine = CamEngine(model, device, config.topk, class_ids, want_display=config.overlays, want_raw=config.save_maps,
                           method=config.method, layer=config.layer, scorecam_batch=config.scorecam_batch,
                           faithfulness=config.faithfulness)  # fmt: skip
        accelerate(model, device, config.precision, config.compile)
        use_gpu_decode(config.gpu_decode, device)  # `--gpu-decode on` without nvJPEG: refused before any work
        settings = _settings(config, model, run_id, device, class_ids, shard) | engine.method.settings()
        writer = ImageWriter(layout, model.name, engine.method.name, run_id, model.class_names, config.colormap, config.alpha,
                             config.overlays, config.save_maps, named_by_rank=class_ids is None)  # fmt: skip
        prep = Preprocess(model.input_size, config.max_side if config.overlays else None)
        report = ReportWriter(layout.report_dir, f"part-{run_id}{shard.tag}", settings, config.images_per_part)
        result = RunResult(run_id, out, layout.report_dir, len(sources), 0, 0, 0, 0.0, skipped=todo.skipped, shard=str(shard))
        result.method, result.layer = engine.method.name, engine.method.layer
        manifest = _Manifest(out, settings, started_at, result)
        manifest.write("running")

        progress.start(len(todo.todo))
        try:
            with stop_on_signals() as stop, torch_threads(tuning.plan(device, config.overlays, config.threads, config.workers).threads):
                _process(todo.todo, _loader(todo.todo, prep, config, device), engine, writer, report, result, progress, stop,
                         config.writer_threads or tuning.plan(device, config.overlays, config.threads, config.workers).writer_threads)  # fmt: skip
            report.close()
        except BaseException:
            report.abort()
            manifest.write("failed")
            raise
        finally:
            progress.stop()
        result.elapsed_s = time.monotonic() - started
        result.faithfulness = engine.tally.summary()
        manifest.write("interrupted" if result.interrupted else "completed")
    return result


def _process(sources, loader, engine, writer, report, result, progress, stop, writer_threads) -> None:
    """The hot loop: the device works on one batch while writer threads finish earlier ones."""
    with ThreadPoolExecutor(writer_threads, thread_name_prefix="cambatch-writer") as pool:
        in_flight: deque[Future] = deque()
        try:
            for batch in loader:
                for failure in batch.failures:
                    source = sources[failure.index]
                    report.add_image([writer.error_row(source, failure.error)])
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
                if stop:
                    break
        except Exception:
            if not stop:  # loader workers may die of the same Ctrl-C; then finish what is in flight
                raise
        finally:
            if stop:
                result.interrupted = stop.signal_name
        while in_flight:
            _collect(in_flight.popleft(), report, result)


class _Manifest:
    """`OUT/runs/<run_id>.json`, rewritten as the run's status changes."""

    def __init__(self, out: Path, settings: dict, started_at: datetime, result: RunResult):
        self.out, self.settings, self.started_at, self.result = out, settings, started_at, result

    def write(self, status: str) -> None:
        r = self.result
        write_manifest(self.out, r.run_id, {
            "run_id": r.run_id, "status": status, "argv": sys.argv, "shard": r.shard,
            "started": self.started_at.isoformat(), "ended": datetime.now(timezone.utc).isoformat() if status != "running" else None,
            "model": self.settings["model"], "weights": self.settings["weights"], "weights_sha256": self.settings["weights_sha256"],
            "method": self.settings["method"], "device": self.settings["device"], "versions": versions(),
            "counts": {"images": r.images, "ok": r.ok, "error": r.errors, "skipped": r.skipped},
            "elapsed_s": round(r.elapsed_s, 3), "images_per_s": round(r.images_per_s, 3),
            "interrupted_by": r.interrupted, "faithfulness": r.faithfulness, "settings": {k: v for k, v in self.settings.items() if k != "class_names"},
        })  # fmt: skip


def _sources(config: RunConfig, out: Path) -> list[ImageSource]:
    found = discover(config.inputs, exclude=out, labels_from_dirs=config.labels_from_dirs) if config.inputs else []
    if config.from_list is not None:
        found += read_list(config.from_list)
    return found


def _start_over(layout: OutputLayout, shard) -> None:
    """--overwrite: drop this shard's rows; a whole-dataset run also clears overlays and maps."""
    if layout.report_dir.is_dir():
        resume.purge(layout.report_dir, shard=shard)
    if shard.count == 1:
        for folder in (layout.root / "overlays", layout.root / "maps"):
            shutil.rmtree(folder, ignore_errors=True)


def _collect(future: Future, report: ReportWriter, result: RunResult) -> None:
    rows = future.result()
    report.add_image(rows)
    result.ok += 1
    result.overlays += sum(row["overlay_path"] is not None for row in rows)


def resolve_classes(requested: list[str], class_names: list[str]) -> list[int]:
    """Class names (case, `_` and space alike) or indices to indices."""
    by_name = {name_key(name): i for i, name in enumerate(class_names)}
    resolved = []
    for item in requested:
        item = item.strip()
        if item.isdigit() and int(item) < len(class_names):
            resolved.append(int(item))
        elif name_key(item) in by_name:
            resolved.append(by_name[name_key(item)])
        else:
            raise UsageError(f"unknown class {item!r}: give a class name or an index below {len(class_names)}")
    return list(dict.fromkeys(resolved))


def default_workers(device: torch.device) -> int:
    return tuning.plan(device).workers


def default_batch_size(device: torch.device) -> int:
    return tuning.plan(device).batch_size


def _loader(sources: list[ImageSource], prep: Preprocess, config: RunConfig, device: torch.device) -> DataLoader:
    plan = tuning.plan(device, config.overlays, config.threads, config.workers, config.batch_size)
    gpu = use_gpu_decode(config.gpu_decode, device)
    loader = DataLoader(
        EncodedImageFiles(sources, prep) if gpu else ImageFiles(sources, prep),
        batch_size=plan.batch_size,
        num_workers=plan.workers,
        collate_fn=collate_encoded if gpu else collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if plan.workers else None,
    )
    return DecodedBatches(loader, GpuDecoder(sources, prep, device)) if gpu else loader


def _validate(config: RunConfig) -> None:
    _validate_speed_options(config)
    if not config.inputs and config.from_list is None:
        raise UsageError("give at least one input folder or image, or --from-list")
    if config.images_per_part < 1:
        raise UsageError("--images-per-part must be at least 1")
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
    if config.method not in METHOD_CHOICES:
        raise UsageError(f"unknown method {config.method!r}; choose from {', '.join(METHOD_CHOICES)}")
    if config.scorecam_batch is not None and config.scorecam_batch < 1:
        raise UsageError("--scorecam-batch must be at least 1")
    if config.device not in ("auto", "cpu") and not config.device.startswith(("cuda", "mps")):
        raise UsageError(f"unknown device {config.device!r}; use auto, cpu, cuda, cuda:N or mps")


def _settings(config: RunConfig, model: CamModel, run_id: str, device: torch.device, class_ids: list[int] | None, shard) -> dict:
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
        "shard": str(shard),
        "class_names": model.class_names,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items() if k != "inputs"},
        "inputs": [str(Path(p).absolute()) for p in config.inputs],
    }


def _validate_speed_options(config: RunConfig) -> None:
    from .accel import PRECISIONS
    from .gpu_decode import GPU_DECODE_MODES

    if config.precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {config.precision!r}; choose from {', '.join(PRECISIONS)}")
    if config.gpu_decode not in GPU_DECODE_MODES:
        raise UsageError(f"unknown --gpu-decode {config.gpu_decode!r}; choose from {', '.join(GPU_DECODE_MODES)}")
    if config.threads is not None and config.threads < 1:
        raise UsageError("--threads must be at least 1")
