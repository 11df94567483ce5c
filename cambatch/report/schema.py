"""The report's columns, declared once: the writer builds its rows from here and the reader reads them.

Torch-free (pyarrow only), so that notebooks, `summarize`, `compare` and `gallery` open a report
without importing the model side. A new column is one `Column(...)` line below plus the code that
computes it under the same name (`cambatch.runner.engine` for per-class values).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..names import name_key

LABEL_SEPARATOR = "|"  # between the classes of a multi-label label: `atelectasis|effusion`

# The Parquet schema-metadata key under which each part stores the settings of the run that wrote it.
METADATA_KEY = b"cambatch"


@dataclass(frozen=True)
class Column:
    """One report column: its name, Arrow type and meaning (docs/report.md's table is generated from these)."""

    name: str
    type: pa.DataType
    doc: str


IMAGE_COLUMNS = (
    Column(
        "path",
        pa.string(),
        "image path relative to its input root, POSIX separators (`shard.tar/key.jpg`, `file.parquet#row`)",
    ),
    Column("input_root", pa.string(), "the INPUT it was found under, absolute (a URL as given)"),
    Column("file_size", pa.int64(), "bytes of the file the row describes (with `mtime_ns`: its version, for resume)"),
    Column("mtime_ns", pa.int64(), "modification time of that file, nanoseconds"),
    Column(
        "etag",
        pa.string(),
        "the object's ETag on a store (for a shard's or Parquet file's samples, the container's); resume redoes an "
        "image whose ETag changed; null for local files",
    ),
    Column("width", pa.int32(), "displayed width (after EXIF orientation)"),
    Column("height", pa.int32(), "displayed height"),
    Column(
        "orientation",
        pa.int8(),
        "the EXIF orientation (1-8) the decode applied to the stored pixels: `evaluate` maps ground truth given "
        "in stored pixels by it, without reopening the image; null on error rows",
    ),
)
PREDICTION_COLUMNS = (
    Column("rank", pa.int16(), "1 = top prediction"),
    Column("class_index", pa.int32(), "the class's index in the model's output"),
    Column("class_name", pa.string(), "the class's name"),
    Column("probability", pa.float32(), "softmax probability; with `--activation sigmoid` the logit's sigmoid"),
    Column("logit", pa.float32(), "raw logit"),
)
# Statistics of each map (`cambatch.methods.statistics` computes them in this order).
STATISTIC_COLUMNS = (
    Column("cam_max", pa.float32(), "maximum of the raw map at feature resolution"),
    Column("cam_mean", pa.float32(), "mean of the raw map (for `cam`: `cam_mean + bias == logit`)"),
    Column("cam_std", pa.float32(), "standard deviation of the raw map"),
    Column("peak_x", pa.float32(), "x of the map's maximum, as a fraction of the displayed width"),
    Column("peak_y", pa.float32(), "y of the map's maximum, as a fraction of the displayed height"),
    Column("centroid_x", pa.float32(), "x of the positive map's centre of mass"),
    Column("centroid_y", pa.float32(), "y of the positive map's centre of mass"),
    Column("active_area", pa.float32(), "fraction of the image where the ReLU'd, min-max normalized map >= 0.5"),
    Column("bbox_x0", pa.float32(), "the CAM paper's box (20% of the map's max, largest 8-connected component): left"),
    Column("bbox_y0", pa.float32(), "the box's top"),
    Column("bbox_x1", pa.float32(), "the box's right"),
    Column("bbox_y1", pa.float32(), "the box's bottom"),
    Column("border_energy", pa.float32(), "share of the positive map's mass in the outer 10% frame"),
    Column("entropy", pa.float32(), "entropy of the positive map over its cells / log(cells): 0 focused, 1 diffuse"),
)
OUTCOME_COLUMNS = (
    Column("overlay_path", pa.string(), "the overlay, relative to OUT; null when none was written"),
    Column("status", pa.string(), "`ok` or `error`"),
    Column("error", pa.string(), "why the image failed; null when ok"),
    Column("model", pa.string(), "the model that produced the row"),
    Column("method", pa.string(), "the map method used (`auto` resolved)"),
    Column("run_id", pa.string(), "the run that produced the row"),
    Column("label", pa.string(), "ground truth, with labels (multi-label: classes joined by `|`); else null"),
    Column(
        "correct",
        pa.bool_(),
        "whether the top-1 class matches the label; multi-label: whether the label's classes are exactly those "
        "at or above --threshold (see `is_correct`); null without labels",
    ),
)
# --faithfulness (`cambatch.methods.faithfulness` computes them in this order); null without it.
FAITHFULNESS_COLUMNS = (
    Column("masked_probability", pa.float32(), "the class's probability for the image masked by its map"),
    Column("confidence_drop", pa.float32(), "max(0, p - p_masked) / p; its mean is the Average Drop"),
    Column("confidence_increase", pa.bool_(), "p_masked > p; its mean is the Increase in Confidence"),
)
# --annotations (`cambatch.evaluation.rows.ground_truth_columns` computes them); null without it or for an image
# the annotations do not name. Boxes are mapped into the displayed image first.
GROUND_TRUTH_COLUMNS = (
    Column("gt_boxes", pa.int16(), "ground-truth boxes of the image (0: annotated, no object)"),
    Column("gt_box_iou", pa.float32(), "IoU of the CAM-paper box (bbox_*) with the best-matching ground-truth box"),
    Column("energy_in_gt", pa.float32(), "share of the positive map's mass inside the ground-truth boxes"),
    Column("pointing_hit", pa.bool_(), "the map's maximum lies within 15 px (displayed image) of a ground-truth box"),
    Column("mask_iou", pa.float32(), "IoU of the map above 20% of its max with the ground-truth mask (224 x 224 grid)"),
)
# The image's ground-truth boxes themselves, so that the gallery draws them without reading the annotations.
GT_BOX_COLUMN = Column(
    "gt_box_coords", pa.list_(pa.float32()), "ground-truth boxes in displayed pixels, x0, y0, x1, y1 per box"
)
# --embeddings (`cambatch.runner.engine` copies them back with the batch); null without it.
EMBEDDING_COLUMN = Column(
    "embedding",
    pa.list_(pa.float16()),
    "the image's pooled features (the head's input; for the other methods the target layer's activations averaged "
    "over space), on its best-ranked row only (rank 1 in a top-k run), null on its other rows",
)
MAP_COLUMNS = (
    Column("map", pa.list_(pa.float16()), "the raw map (signed, not normalized) at feature resolution, row-major"),
    Column("map_height", pa.int16(), "rows of `map`"),
    Column("map_width", pa.int16(), "columns of `map`"),
)
COLUMNS = (
    IMAGE_COLUMNS
    + PREDICTION_COLUMNS
    + STATISTIC_COLUMNS
    + OUTCOME_COLUMNS
    + FAITHFULNESS_COLUMNS
    + GROUND_TRUTH_COLUMNS
    + (GT_BOX_COLUMN,)
    + MAP_COLUMNS
    + (EMBEDDING_COLUMN,)
)
SCHEMA = pa.schema([(c.name, c.type) for c in COLUMNS])
STAT_NAMES = tuple(c.name for c in STATISTIC_COLUMNS)
FAITHFULNESS_NAMES = tuple(c.name for c in FAITHFULNESS_COLUMNS)
MAP_NAMES = tuple(c.name for c in MAP_COLUMNS)
GROUND_TRUTH_NAMES = tuple(c.name for c in GROUND_TRUTH_COLUMNS)


def table(columns: Mapping[str, Sequence | np.ndarray | pa.Array], rows: int, schema: pa.Schema = SCHEMA) -> pa.Table:
    """A table of `rows` rows in the report's schema: the given columns, nulls for the others.

    Float NaN becomes null (an undefined statistic); an unknown column name is an error.
    """
    unknown = set(columns) - set(schema.names)
    if unknown:
        raise KeyError(f"not report columns: {', '.join(sorted(unknown))}")
    arrays = []
    for field in schema:
        values = columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(rows, field.type))
        elif isinstance(values, (pa.Array, pa.ChunkedArray)):
            arrays.append(values.cast(field.type))
        elif isinstance(values, np.ndarray) and values.dtype.kind == "f" and pa.types.is_floating(field.type):
            arrays.append(pa.array(values, mask=np.isnan(values), type=field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def map_array(maps: np.ndarray) -> pa.Array:
    """Maps [K, h, w] as the `map` column's K lists (float16, row-major)."""
    k, h, w = maps.shape
    flat = pa.array(np.ascontiguousarray(maps, dtype=np.float16).reshape(-1))
    return pa.ListArray.from_arrays(pa.array(np.arange(k + 1, dtype=np.int32) * (h * w)), flat)


def label_classes(label: str) -> set[str]:
    """The classes of a multi-label label (`a|b`), by `name_key`."""
    return {name_key(part) for part in label.split(LABEL_SEPARATOR) if part.strip()}


def is_correct(
    label: str | None, names_by_rank: Mapping[int, str], predicted: Iterable[str] | None = None
) -> bool | None:
    """`correct`: the top-1 class is the label (compared by `name_key`).

    None without a label, or when the explained classes (`--classes`) leave the top-1 class unknown
    and the label's class is not among them; False when the label's class was explained at rank > 1.
    A multi-label run (`--activation sigmoid`) gives `predicted`, the names of every class at or above
    `--threshold`: then the label's classes (`a|b`) must be exactly those.
    """
    if label is None:
        return None
    if predicted is not None:
        return label_classes(label) == {name_key(name) for name in predicted}
    keys = {rank: name_key(name) for rank, name in names_by_rank.items()}
    if 1 in keys:
        return keys[1] == name_key(label)
    return False if name_key(label) in keys.values() else None


def newest_run(run_ids: Iterable[str]) -> str:
    """The newest of several runs: run ids begin with their UTC start time (`runner.pipeline.new_run_id`).

    Where a report holds an image under several runs (reports written before resume existed), the
    newest run's rows are the ones that count.
    """
    return max(run_ids)
