"""Varied benchmark photos made from sample_images/: random crops, scales, flips and JPEG qualities.

Deterministic for a given seed, so two runs of the benchmark (or two machines) see the same job.
Sizes are drawn so that the longest side lies in 200-1300 px (about 0.5 MP on average), like
the photos of the issue's measurements.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_images"
SIDE_RANGE = (200, 1300)


def sources() -> list[Image.Image]:
    images = []
    for path in sorted(SAMPLES.iterdir()):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            with Image.open(path) as img:
                images.append(ImageOps.exif_transpose(img).convert("RGB"))
    if not images:
        raise SystemExit(f"no sample images under {SAMPLES}")
    return images


def generate(folder: Path, count: int, seed: int = 0, processes: int | None = None) -> list[Path]:
    """Write `count` JPEGs under `folder` (in sub-folders of 100); reuse them when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".generated-{count}-{seed}"
    paths = [folder / f"{i // 100:03d}" / f"photo_{i:06d}.jpg" for i in range(count)]
    if marker.exists() and all(p.exists() for p in paths):
        return paths
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(path, seed * 1_000_003 + i) for i, path in enumerate(paths)]
    processes = processes or min(len(os.sched_getaffinity(0)), 16)
    if processes > 1 and count >= 64:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.starmap(_make_one, jobs, chunksize=16)
    else:
        for job in jobs:
            _make_one(*job)
    marker.touch()
    return paths


_POOL: list[Image.Image] = []


def _make_one(path: Path, seed: int) -> None:
    """One photo: a random crop of a random sample, scaled, maybe mirrored, at a random JPEG quality."""
    if not _POOL:
        _POOL.extend(sources())
    rng = random.Random(seed)
    base = rng.choice(_POOL)
    w, h = base.size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = base.crop((x0, y0, x0 + cw, y0 + ch))
    side = rng.uniform(*SIDE_RANGE)
    scale = side / max(cw, ch)
    img = crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BICUBIC)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img.save(path, quality=rng.randint(60, 95))


def replicate(src: Path, folder: Path, times: int) -> Path:
    """`times` copies of the images of `src` under `folder` (hard links where possible)."""
    import shutil

    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
    for t in range(times):
        for p in files:
            target = folder / f"copy{t:02d}" / p.relative_to(src)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, target)
            except OSError:
                shutil.copyfile(p, target)
    return folder
