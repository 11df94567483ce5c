"""One batch through the device and the writers: the steps every engine shares."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import torch

from ..data.preprocess import Batch
from ..report.writer import ReportWriter
from ..sources.discover import ImageSource
from .engine import CamEngine
from .job import RunResult
from .writer import ImageWriter, overlay_count


def submit_batch(
    batch: Batch,
    sources: list[ImageSource],
    engine: CamEngine,
    writer: ImageWriter,
    report: ReportWriter,
    result: RunResult,
    pool: ThreadPoolExecutor,
    *,
    labels: list[int] | None = None,
) -> list[Future]:
    """Record the batch's failures, run its images on the device, and hand each one to a writer thread.

    `sources[i]` is the image of the batch's index `i`, `labels[i]` the class `--explain-label` adds for it
    (`job.label_classes`); each future returns an image's rows for `collect`.
    """
    for failure in batch.failures:
        _record_failure(sources[failure.index], failure.error, writer, report, result)
    if not batch.samples:
        return []
    extra = None if labels is None else torch.tensor([labels[s.index] for s in batch.samples])
    outputs = engine(batch.pixels, extra)
    return [pool.submit(writer.ok_rows, sources[s.index], s, outputs, i) for i, s in enumerate(batch.samples)]


def _record_failure(
    source: ImageSource, error: str, writer: ImageWriter, report: ReportWriter, result: RunResult
) -> None:
    report.add_image(writer.error_row(source, error))
    result.errors += 1
    result.errors_by_path[source.rel] = error


def collect(future: Future, report: ReportWriter, result: RunResult) -> None:
    """Add a finished image's rows to the report (its overlays are on disk by now) and count it."""
    rows: pa.Table = future.result()
    report.add_image(rows)
    result.ok += 1
    overlays = overlay_count(rows)
    result.overlays += overlays
    result.overlay_images += overlays > 0
