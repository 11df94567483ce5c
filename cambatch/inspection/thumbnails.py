"""Small JPEG copies of overlays and photos for the gallery, made in parallel and only when stale.

A gallery of 10,000 images must not make the browser load 10,000 full-size overlays: the grid
shows these thumbnails instead. JPEGs are decoded at reduced scale (PIL `draft`), and PIL's
decoders and encoders release the GIL, so a thread pool uses every core.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..data.decode import decode

JPEG_QUALITY = 82


@dataclass(frozen=True)
class ThumbJob:
    """Make `target` from `source`, its longest side at most `side` pixels."""

    source: Path
    target: Path
    side: int
    photo: bool  # an input photo (any format, EXIF orientation applies) rather than one of our overlays


@dataclass
class ThumbStats:
    """What `make_thumbnails` did."""

    written: int = 0
    fresh: int = 0  # already up to date: skipped
    failed: dict[str, str] = field(default_factory=dict)  # target -> reason


def make_thumbnails(jobs: list[ThumbJob], workers: int | None = None) -> ThumbStats:
    """Run `jobs`; a thumbnail newer than its source is kept, so rebuilding a gallery is cheap."""
    stats = ThumbStats()
    pending = []
    for job in jobs:
        if _fresh(job):
            stats.fresh += 1
        else:
            pending.append(job)
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1), thread_name_prefix="cambatch-thumbs") as pool:
        for job, error in zip(pending, pool.map(_make_one, pending), strict=True):
            if error is None:
                stats.written += 1
            else:
                stats.failed[str(job.target)] = error
    return stats


def _fresh(job: ThumbJob) -> bool:
    try:
        return job.target.stat().st_mtime >= job.source.stat().st_mtime
    except OSError:
        return False


def _make_one(job: ThumbJob) -> str | None:
    """Write one thumbnail through a temporary name; the reason as text when it cannot be made."""
    try:
        if job.photo:
            # The same decoding as a run (EXIF orientation, any mode to RGB), at reduced scale.
            image = decode(job.source, min_size=lambda w, h: _fit(w, h, job.side)).image
        else:
            image = Image.open(job.source)
            image.draft("RGB", (job.side, job.side))
            image = image.convert("RGB")
        image.thumbnail((job.side, job.side), Image.BILINEAR)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        temp = job.target.with_name(f".{job.target.name}.tmp")
        image.save(temp, format="JPEG", quality=JPEG_QUALITY)
        os.replace(temp, job.target)
        return None
    except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the gallery
        return f"{type(exc).__name__}: {exc}"


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))
