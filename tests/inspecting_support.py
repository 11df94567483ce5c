"""Helpers for the tests of the inspection tools (API, summarize, compare, gallery, docs recipes).

They make run outputs without running the model: a labelled or altered copy of a real run, and a
synthetic run of thousands of images with small overlays, written with the real report schema.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cambatch.names import name_key
from cambatch.report.parts import report_parts
from cambatch.report.schema import METADATA_KEY, SCHEMA, STAT_NAMES, map_array
from cambatch.report.schema import table as schema_table


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run's output folder (report, overlays, maps, manifests), for altering."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("gallery", ".lock*"))
    return dst


def rewrite_report(out: Path, change) -> None:
    """Apply `change(table: pa.Table) -> pa.Table` to every part of the report in `out`, in place."""
    for part in report_parts(out):
        table = pq.read_table(part)
        pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), part)


def add_labels(out: Path, labels: dict[str, str]) -> None:
    """Give images labels the way `--labels-from-dirs` does: `label` and `correct` on every row."""

    def change(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        top1 = {r["path"]: r["class_name"] for r in rows if r["rank"] == 1}
        for r in rows:
            r["label"] = labels.get(r["path"])
            r["correct"] = (
                None
                if r["label"] is None or r["path"] not in top1
                else name_key(top1[r["path"]]) == name_key(r["label"])
            )
        return pa.Table.from_pylist(rows, schema=table.schema)

    rewrite_report(out, change)


def set_settings(out: Path, **changes) -> None:
    """Change run settings stored in the parts' metadata (e.g. another run id or model)."""
    for part in report_parts(out):
        table = pq.read_table(part)
        settings = json.loads(table.schema.metadata[METADATA_KEY])
        settings.update(changes)
        pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(settings).encode()}), part)


def synthesize_run(out: Path, images: int, classes: int = 40, topk: int = 3, errors: int = 5, seed: int = 0) -> Path:
    """A run's outputs for `images` generated photos: small photos, overlays, report with labels.

    Photos and overlays are tiny (48 x 36) so thousands are made in seconds; class i's maps get a
    border_energy around i / classes, so the flags have something to find.
    """
    rng = random.Random(seed)
    names = [f"class {i:02d}" for i in range(classes)]
    photos = out.parent / f"{out.name}_photos"
    rows = []
    palette = [tuple(rng.randrange(40, 256) for _ in range(3)) for _ in range(classes)]
    base = np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None].repeat(36, 0).repeat(3, 2)
    for n in range(images):
        path = f"{names[n % classes].replace(' ', '_')}/img_{n:05d}.jpg"
        (photos / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(base).save(photos / path, quality=70)
        label = names[n % classes]
        picked = rng.sample(range(classes), topk)
        if rng.random() < 0.8:
            picked = [n % classes] + [c for c in picked if c != n % classes][: topk - 1]
        probs = sorted((rng.random() for _ in range(topk)), reverse=True)
        total = sum(probs) * 1.2
        for rank, (c, p) in enumerate(zip(picked, probs, strict=True), start=1):
            overlay = f"overlays/{path}/top{rank}_{names[c].replace(' ', '_')}.jpg"
            (out / overlay).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (48, 36), palette[c]).save(out / overlay, quality=70)
            stats = {name: rng.random() for name in STAT_NAMES}
            x0, y0 = rng.uniform(0, 0.5), rng.uniform(0, 0.5)
            stats.update(bbox_x0=x0, bbox_y0=y0, bbox_x1=x0 + rng.uniform(0.1, 0.5), bbox_y1=y0 + rng.uniform(0.1, 0.5))
            stats["border_energy"] = min(1.0, c / classes * 0.6 + rng.uniform(0, 0.1))
            rows.append(
                dict(
                    path=path,
                    input_root=str(photos),
                    file_size=1000,
                    mtime_ns=0,
                    width=48,
                    height=36,
                    rank=rank,
                    class_index=c,
                    class_name=names[c],
                    probability=p / total,
                    logit=p * 10,
                    **stats,
                    overlay_path=overlay,
                    status="ok",
                    error=None,
                    model="synthetic",
                    method="cam",
                    run_id="20250101T000000Z-000000",
                    label=label,
                    correct=picked[0] == n % classes,
                )
            )
    for n in range(errors):
        rows.append(
            dict(
                path=f"broken/bad_{n}.jpg",
                input_root=str(photos),
                status="error",
                error="not a readable image: unknown format or corrupt header",
                model="synthetic",
                method="cam",
                run_id="20250101T000000Z-000000",
            )
        )
    settings = {
        "run_id": "20250101T000000Z-000000",
        "model": "synthetic",
        "method": "cam",
        "topk": topk,
        "class_names": names,
        "cambatch_version": "test",
        "device": "cpu",
        "input_size": 224,
    }
    (out / "report").mkdir(parents=True, exist_ok=True)
    schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(settings).encode()})
    pq.write_table(
        pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA.names} for r in rows], schema=schema),
        out / "report" / "part-20250101T000000Z-000000-00000.parquet",
    )
    return out


def swap_top2(out: Path, path: str) -> None:
    """Make the image's second class its top-1 (and the top-1 its second): a changed prediction."""

    def change(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for row in rows:
            if row["path"] == path and row["rank"] in (1, 2):
                row["rank"] = 3 - row["rank"]
        return pa.Table.from_pylist(rows, schema=table.schema)

    rewrite_report(out, change)


def large_report(out: Path, images: int, classes: int = 40, seed: int = 0) -> Path:
    """A report of `images` images with one explained class each and 7 x 7 maps, written column by column
    (no photos, no overlays): for the tests of commands at a scale no real run in a test reaches.
    """
    rng = np.random.default_rng(seed)
    klass = rng.integers(0, classes, images)
    centre = rng.uniform(0.5, 6.5, (images, 2)).astype(np.float32)
    cells = np.arange(7, dtype=np.float32) + 0.5
    maps = np.exp(
        -((cells[None, :, None] - centre[:, 1, None, None]) ** 2 + (cells[None, None] - centre[:, 0, None, None]) ** 2)
        / 2
    )
    names = np.array([f"class {i:02d}" for i in range(classes)], dtype=object)
    columns = {
        "path": [f"{klass[i] % 10}/img_{i:07d}.jpg" for i in range(images)],
        "input_root": pa.array(["/nowhere"] * images),
        "width": np.full(images, 64, np.int32),
        "height": np.full(images, 48, np.int32),
        "rank": np.ones(images, np.int16),
        "class_index": klass.astype(np.int32),
        "class_name": names[klass],
        "probability": rng.random(images).astype(np.float32),
        "border_energy": rng.random(images).astype(np.float32),
        "active_area": rng.random(images).astype(np.float32),
        "entropy": rng.random(images).astype(np.float32),
        "status": pa.array(["ok"] * images),
        "run_id": pa.array(["20250101T000000Z-000000"] * images),
        "map": map_array(maps.astype(np.float16)),
        "map_height": np.full(images, 7, np.int16),
        "map_width": np.full(images, 7, np.int16),
    }
    settings = {"run_id": "20250101T000000Z-000000", "model": "synthetic", "topk": 1, "class_names": list(names)}
    (out / "report").mkdir(parents=True, exist_ok=True)
    step = 100_000
    for first in range(0, images, step):
        part = {k: v[first : first + step] for k, v in columns.items()}
        rows = len(part["path"])
        table = schema_table(part, rows).replace_schema_metadata({METADATA_KEY: json.dumps(settings).encode()})
        pq.write_table(table, out / "report" / f"part-20250101T000000Z-000000-{first // step:05d}.parquet")
    return out
