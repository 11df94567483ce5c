"""Decoding that starts before torch is imported: the first batches decode during the imports and model
build (about 1.9 s on 2 cores, one of which idled), which the plain engine's CPU loader then goes on from.

Torch-free on purpose, like the modules it imports: the pipeline calls `start` before it imports the
modules that need torch. It starts a `data.loader.DecodePool` only where this process can tell, without
torch, what that loader will be asked for; the engine takes the pool only if it `serves` exactly the
job that was planned (`plain_engine._batches`), and closes it otherwise. A guess can cost decoding
time, never a result.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..data import loader
from ..data.inputs import Preprocess
from ..model.catalog import DEFAULT_INPUT_SIZE, DEFAULT_INTERPOLATION, DEFAULT_MODEL
from ..report.parts import published_parts
from ..sources.discover import ImageSource
from . import tuning


def start(config: RunConfig, sources: list[ImageSource], report_dir: Path) -> loader.DecodePool | None:
    """A pool decoding `sources` for a fresh run (or `--overwrite`) of the default model on this machine's
    CPU with the plain engine; None where any of that cannot be told yet.
    """
    prep = known_preprocess(config)
    speed = config.speed
    if prep is None or speed.engine != "plain" or not loader.available() or not _cpu_only(speed.device):
        return None
    if not config.job.overwrite and published_parts(report_dir):
        return None  # a resume: what is left to do is known only once the report is read
    plan = tuning.plan(
        "cpu",
        overlays=config.output.overlays,
        threads=speed.threads,
        workers=speed.workers,
        batch_size=speed.batch_size,
        writer_threads=speed.writer_threads,
    )
    if not plan.workers:
        return None  # decoding in this process: nothing to overlap with the imports
    return decode_pool(sources, prep, plan)


def decode_pool(sources: list[ImageSource], prep: Preprocess, plan: tuning.Plan) -> loader.DecodePool:
    """The CPU loader that `plan` asks for: this module's early one and the plain engine's alike."""
    return loader.DecodePool(
        sources,
        prep,
        batch_size=plan.batch_size,
        workers=plan.workers,
        ahead_bytes=plan.ahead_bytes,
        initializer=tuning.background_priority if plan.background else None,
    )


def known_preprocess(config: RunConfig) -> Preprocess | None:
    """The run's preprocessing when it is known without building the model: the default model's."""
    if config.network.model != DEFAULT_MODEL:
        return None
    return Preprocess(
        image_size=config.network.image_size or DEFAULT_INPUT_SIZE,
        interpolation=DEFAULT_INTERPOLATION,
        overlays=config.output.overlays,
        max_side=config.output.max_side,
    )


def _cpu_only(device: str) -> bool:
    """Whether `--device` resolves to the CPU: `cpu`, or `auto` on a machine with no NVIDIA device node
    (a guess: the engine's check finds a wrong one).
    """
    if device == "cpu":
        return True
    return device == "auto" and not any(Path("/dev").glob("nvidia[0-9]*"))
