"""Stage 5-6 glue: one image's overlays and map file on disk, and its report rows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .discover import ImageSource
from .inference import BatchResult
from .layout import OutputLayout
from .preprocess import Sample
from .render import overlay
from .stats import STAT_COLUMNS

JPEG_QUALITY = 90


@dataclass(frozen=True)
class ImageWriter:
    """Writes what one image produced; safe to call from several threads at once."""

    layout: OutputLayout
    model_name: str
    method: str
    run_id: str
    class_names: list[str]
    colormap: str
    alpha: float
    overlays: bool
    save_maps: bool
    named_by_rank: bool  # top-k run: files are top<r>_<class>.jpg; --classes run: <class>.jpg

    def ok_rows(self, source: ImageSource, sample: Sample, result: BatchResult, i: int) -> list[dict]:
        """Render and save the outputs of image `i` of `result`, then return its rows."""
        classes = result.class_index[i]
        names = [self.class_names[c] for c in classes]
        overlay_paths: list[str | None] = [None] * len(classes)
        if self.overlays and sample.photo is not None:
            photo = Image.fromarray(sample.photo.numpy())
            for k, (name, rank) in enumerate(zip(names, result.rank[i])):
                overlay_paths[k] = self.layout.overlay_rel(source, name, int(rank) if self.named_by_rank else None)
                target = self.layout.root / overlay_paths[k]
                target.parent.mkdir(parents=True, exist_ok=True)
                overlay(photo, result.display[i, k], self.colormap, self.alpha).save(target, quality=JPEG_QUALITY)
        if self.save_maps and result.raw_maps is not None:
            target = self.layout.maps_path(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            np.savez(target, **{str(int(c)): result.raw_maps[i, k] for k, c in enumerate(classes)})
        correct = _correct(source.label, names, result.rank[i])
        rows = []
        for k, name in enumerate(names):
            row = self._base(source, sample.width, sample.height)
            row.update(
                rank=int(result.rank[i, k]),
                class_index=int(classes[k]),
                class_name=name,
                probability=float(result.probability[i, k]),
                logit=float(result.logit[i, k]),
                overlay_path=overlay_paths[k],
                status="ok",
                correct=correct,
            )
            row.update({col: _nullable(v) for col, v in zip(STAT_COLUMNS, result.stats[i, k])})
            if result.faithfulness is not None:
                masked, drop, increase = result.faithfulness[i, k]
                row.update(masked_probability=float(masked), confidence_drop=float(drop), confidence_increase=bool(increase))
            rows.append(row)
        return rows

    def error_row(self, source: ImageSource, message: str) -> dict:
        row = self._base(source, None, None)
        row.update(status="error", error=message)
        return row

    def _base(self, source: ImageSource, width: int | None, height: int | None) -> dict:
        return {
            "path": source.rel,
            "input_root": str(source.input_root),
            "file_size": source.size,
            "mtime_ns": source.mtime_ns,
            "label": source.label,
            "width": width,
            "height": height,
            "model": self.model_name,
            "method": self.method,
            "run_id": self.run_id,
        }


def _correct(label: str | None, names: list[str], ranks: np.ndarray) -> bool | None:
    """Top-1 class equals the label (case, `_` and space alike); None without a label, or when
    explicitly chosen classes leave the top-1 class unknown and the label's class was not chosen."""
    if label is None:
        return None
    by_rank = {int(r): name_key(n) for n, r in zip(names, ranks)}
    if 1 in by_rank:
        return by_rank[1] == name_key(label)
    return False if name_key(label) in by_rank.values() else None


def name_key(name: str) -> str:
    """Class names compare case-blind, with `_` and space alike."""
    return " ".join(name.replace("_", " ").lower().split())


def _nullable(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value

