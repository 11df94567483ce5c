"""One image's overlays on disk, and its report rows (`cambatch.report.schema`)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..annotations.masks import readable_mask
from ..annotations.match import GroundTruth
from ..annotations.orient import visible_boxes
from ..data.preprocess import Sample
from ..evaluation.rows import grid_masks, ground_truth_columns
from ..layout import ImageNames, OutputLayout
from ..render.overlay import overlay, save_jpeg
from ..report.schema import EMBEDDING_COLUMN, GT_BOX_COLUMN, is_correct, map_array, table
from ..sources.discover import ImageSource
from .engine import BatchResult


@dataclass(frozen=True, kw_only=True)
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
    named_by_rank: bool  # top-k run: files are top<r>_<class>.jpg; --classes run: c<index>_<class>.jpg
    names: ImageNames = ImageNames()  # each image's overlay folder, decided from all the run's images
    truth: GroundTruth | None = None  # --annotations: the ground-truth columns
    # Annotation problems met while writing (a box wholly outside its image), one line each; shared with the
    # run's result, appended from the writer threads (`list.append` is atomic).
    problems: list[str] = field(default_factory=list)

    def ok_rows(self, source: ImageSource, sample: Sample, result: BatchResult, i: int) -> pa.Table:
        """Render and save the overlays of image `i` of `result`, then return its rows."""
        one = result.image(i)  # only the columns that are rows (`--explain-label` stand-ins dropped)
        classes = one.class_index[0]
        names = [self.class_names[c] for c in classes]
        ranks = [int(r) for r in one.rank[0]]
        overlay_paths = self._overlays(source, sample, one, names, ranks) if self.overlays else [None] * len(names)
        k = len(names)
        columns = {name: values[0] for name, values in one.columns.items()}
        columns.update(
            self._base(source, sample, k),
            class_name=names,
            overlay_path=overlay_paths,
            status=["ok"] * k,
            correct=[is_correct(source.label, dict(zip(ranks, names, strict=True)), self._predicted(one))] * k,
            map=map_array(one.maps[0]),
            map_height=[one.maps.shape[2]] * k,
            map_width=[one.maps.shape[3]] * k,
        )
        if one.embeddings is not None:
            columns[EMBEDDING_COLUMN.name] = _on_best_row(one.embeddings[0], ranks)
        if self.truth is not None:
            columns.update(self._ground_truth(source, sample, one))
        return table(columns, k)

    def _predicted(self, one: BatchResult) -> list[str] | None:
        """A multi-label run's predicted classes of a one-image result (None in a softmax run)."""
        if one.predicted is None:
            return None
        return [self.class_names[c] for c in np.flatnonzero(one.predicted[0])]

    def _ground_truth(self, source: ImageSource, sample: Sample, one: BatchResult) -> dict:
        """The image's ground-truth columns; none (nulls) when the annotations miss it or name it malformed,
        or when one of its boxes lies wholly outside the image (a problem line, as a malformed entry is).
        """
        found = self.truth.find(source.key)
        if found is None or found.error is not None:
            return {}
        size, orient = (sample.width, sample.height), sample.orientation  # as the decode found them: no second read
        boxes, outside = visible_boxes(found, size, orient)
        if outside:
            self.problems.extend(f"{line} ({source.rel})" for line in outside)
            return {}
        k = one.maps.shape[1]
        gt = np.broadcast_to(boxes, (k, *boxes.shape)).reshape(k, -1, 4)
        cam = np.stack([one.columns[f"bbox_{side}"][0] for side in ("x0", "y0", "x1", "y1")], 1)
        masks = None
        if found.masks:
            grid, _ = grid_masks([readable_mask(found, size, orient)])
            masks = np.broadcast_to(grid, (k, *grid.shape[1:]))
        columns = ground_truth_columns(
            one.maps[0].astype(np.float32), gt, np.ones(gt.shape[:2], bool), np.tile(size, (k, 1)), cam, masks
        )
        columns = {name: np.asarray(values) for name, values in columns.items()}
        columns[GT_BOX_COLUMN.name] = [boxes.reshape(-1).tolist()] * k
        return columns

    def error_row(self, source: ImageSource, message: str) -> pa.Table:
        return table({**self._base(source, None, 1), "status": ["error"], "error": [message]}, 1)

    def _overlays(
        self, source: ImageSource, sample: Sample, one: BatchResult, names: list[str], ranks: list[int]
    ) -> list[str | None]:
        if sample.photo is None:
            return [None] * len(names)
        photo = sample.photo.numpy()
        paths = []
        folder = self.names.folder(str(source.input_root), source.rel)
        if not self.layout.root.is_dir():  # OUT vanished: fail, never quietly recreate a part of it
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(self.layout.root))
        for k, (name, rank) in enumerate(zip(names, ranks, strict=True)):
            rel = self.layout.overlay_rel(
                folder, name, rank if self.named_by_rank else None, class_index=int(one.class_index[0][k])
            )
            target = self.layout.root / rel
            if k == 0:  # an image's overlays share one folder (once it is made, a vanished OUT fails the save)
                _image_folder(target.parent)
            save_jpeg(overlay(photo, one.display[0, k], colormap=self.colormap, alpha=self.alpha), target)
            paths.append(rel)
        return paths

    def _base(self, source: ImageSource, sample: Sample | None, rows: int) -> dict[str, list]:
        """The columns every row of the image shares (`sample` None: an error row)."""
        values = {
            "path": source.rel,
            "input_root": str(source.input_root),
            "file_size": source.size,
            "mtime_ns": source.mtime_ns,
            "etag": source.etag,
            "label": source.label,
            "width": sample.width if sample is not None else None,
            "height": sample.height if sample is not None else None,
            "orientation": sample.orientation if sample is not None else None,
            "model": self.model_name,
            "method": self.method,
            "run_id": self.run_id,
        }
        return {name: [value] * rows for name, value in values.items()}


def _on_best_row(embedding: np.ndarray, ranks: list[int]) -> pa.Array:
    """The `embedding` column of an image's rows: its vector on the best-ranked row (the one `per_image` picks),
    null on the others, so a top-k run stores it once per image, not k times.
    """
    best = int(np.argmin(ranks))
    vector = pa.array(np.ascontiguousarray(embedding, dtype=np.float16))
    offsets = np.zeros(len(ranks) + 1, np.int32)
    offsets[best + 1 :] = len(vector)
    nulls = np.ones(len(ranks), bool)
    nulls[best] = False
    return pa.ListArray.from_arrays(pa.array(offsets), vector, mask=pa.array(nulls))


def _image_folder(folder: Path) -> None:
    """Make an image's overlay folder. One that exists is a rerun's: remove the temp files a killed run left.

    Only this image's writer writes there (one image is one writer task, in one shard), so any temp file
    in it is torn. A first run creates its folders and lists none of them.
    """
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        for torn in folder.glob(".*.tmp"):
            torn.unlink(missing_ok=True)


def overlay_count(rows: pa.Table) -> int:
    """Overlays an image's rows point at."""
    return rows.num_rows - rows.column("overlay_path").null_count
