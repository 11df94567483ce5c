"""The notebook-facing entry point: `cambatch.run(inputs, out, **options)`.

The same job as `cambatch run` (both are thin layers over `cambatch.pipeline.run`), with keyword
options named like the CLI's (`topk=5`, `save_maps=True`, ...) and a `tqdm.auto` progress bar,
which draws a widget in Jupyter and a text bar elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the pipeline imports torch: only when a run actually starts
    from .pipeline import RunConfig, RunResult
    from .progress import ProgressReporter


class TqdmProgress:
    """A `ProgressReporter` drawn by `tqdm.auto` (a widget in notebooks when ipywidgets exists)."""

    def __init__(self, **tqdm_options: Any):
        self._options = tqdm_options
        self.bar = None

    def start(self, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="cambatch", unit="img", **self._options)

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    progress: bool | ProgressReporter = True,
    gallery: bool = False,
    **options: Any,
) -> RunResult:
    """Compute top-k CAMs for every image under `inputs`; write overlays and a report to `out`.

    `options` are the fields of `cambatch.pipeline.RunConfig`, i.e. the options of `cambatch run`
    with `_` for `-`: `model`, `weights`, `topk`, `classes` (a list or a comma-separated string),
    `save_maps`, `overlays`, `device`, `batch_size`, ... `progress=False` runs silently (or pass
    any object with `start/advance/stop`); `gallery=True` also builds `out/gallery/index.html`.

    Returns the run's result: `run_id`, `out`, `report`, counts (`images`, `ok`, `errors`,
    `overlays`), `elapsed_s` and `errors_by_path`. Raises `cambatch.errors.UsageError` before any
    work when a setting is wrong.

    >>> import cambatch
    >>> result = cambatch.run("photos/", "cams", topk=3, save_maps=True)   # doctest: +SKIP
    >>> result.ok, result.errors, result.run_id                          # doctest: +SKIP
    (7, 0, '20250101T120000Z-1a2b3c')
    >>> df = cambatch.load_report(result.out)                            # doctest: +SKIP
    """
    from .pipeline import run as run_pipeline
    from .progress import SilentProgress

    config = make_config(inputs, out, **options)
    reporter = TqdmProgress() if progress is True else SilentProgress() if progress is False else progress
    result = run_pipeline(config, reporter)
    if gallery:
        from .gallery import build_gallery

        build_gallery(result.out)
    return result


def make_config(inputs: str | Path | Sequence[str | Path], out: str | Path, **options: Any) -> RunConfig:
    """A `RunConfig` from notebook-friendly arguments; an unknown option is a `TypeError` naming the known ones."""
    from .pipeline import RunConfig

    known = {f.name for f in dataclasses.fields(RunConfig)} - {"inputs", "out"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; cambatch.run takes: {', '.join(sorted(known))}")
    if isinstance(options.get("classes"), str):
        options["classes"] = [c for c in options["classes"].split(",") if c.strip()]
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    return RunConfig(inputs=[Path(p) for p in paths], out=Path(out), **options)
