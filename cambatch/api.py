"""The notebook-facing entry point: `cambatch.run(inputs, out, **options)`.

The same job as `cambatch run` (both are thin layers over `cambatch.runner.pipeline.run`), with
keyword options named like the CLI's (`topk=5`, `overlays=False`, ...; declared once in
`cambatch.config`) and a `tqdm.auto` progress bar, which draws a widget in Jupyter and a text bar
elsewhere.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the pipeline imports torch: only when a run actually starts
    from .runner.pipeline import RunResult
    from .runner.progress import ProgressReporter


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

    def note(self, line: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)  # above the bar, which stays whole


def run(
    inputs: str | Path | Sequence[str | Path] | None,
    out: str | Path,
    *,
    progress: bool | ProgressReporter = True,
    **options: Any,
) -> RunResult:
    """Compute top-k maps for every image under `inputs`; write overlays and a report to `out`.

    `options` are those of `cambatch run`, with `_` for `-` (`cambatch.config.RunConfig`):
    `model`, `weights`, `topk`, `classes` (a list or a comma-separated string), `method`,
    `overlays`, `device`, `batch_size`, `gallery`, ... `progress=False` runs silently (or pass any
    object with `start/advance/stop`). `check="policy.toml"` (and `baseline=OUT`) checks the run when it
    ends (`cambatch check`): its verdict is `result.check` (`.verdict`, `.checks`) and is kept in OUT.

    Returns the run's result: `run_id`, `out`, `report`, counts (`images`, `ok`, `errors`,
    `overlays`), `elapsed_s` and `errors_by_path`. Raises `cambatch.errors.UsageError` before any
    work when a setting is wrong, and `TypeError` for an unknown option.

    >>> import cambatch
    >>> result = cambatch.run("photos/", "cams", topk=3)                 # doctest: +SKIP
    >>> result.ok, result.errors, result.run_id                          # doctest: +SKIP
    (7, 0, '20250101T120000Z-1a2b3c')
    >>> df = cambatch.load_report(result.out)                            # doctest: +SKIP
    """
    from .checks.policy import load_policy
    from .config import RunConfig
    from .runner.pipeline import run as run_pipeline
    from .runner.progress import SilentProgress

    config = RunConfig.create(inputs, out, **options)
    policy = load_policy(config.audit.check) if config.audit.check else None  # a bad policy: before any work
    reporter = TqdmProgress() if progress is True else SilentProgress() if progress is False else progress
    result = run_pipeline(config, reporter)
    if policy is not None and not result.interrupted:
        from .checks.run import audit

        result.check = audit(result.out, policy, baseline=config.audit.baseline)
    if config.output.gallery and not result.interrupted:
        from .inspection.gallery import build_gallery

        build_gallery(result.out)
    return result
