"""What the source tests share: the sample photos packed as a WebDataset shard or a `datasets`-style
Parquet file, and the comparison of two reports' rows with their paths aside."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cambatch.report.schema import IMAGE_COLUMNS, PREDICTION_COLUMNS, STATISTIC_COLUMNS

# What a run computes from an image's bytes: the rows of two runs over the same images must agree on all of it.
# (Not where it was found, nor its version.)
WHERE = {"path", "input_root", "file_size", "mtime_ns", "etag"}
COMPUTED = [c.name for c in (*IMAGE_COLUMNS, *PREDICTION_COLUMNS, *STATISTIC_COLUMNS) if c.name not in WHERE]
COMPUTED += ["status", "map"]


def write_shard(target: Path, photos: list[Path], *, extra: dict[str, bytes] | None = None) -> Path:
    """A WebDataset shard: `<stem>.<ext>` per photo (the stem is the sample's `__key__`), plus `extra` members."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w") as tar:
        for photo in photos:
            tar.add(photo, arcname=photo.name)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def write_datasets_parquet(target: Path, photos: list[Path], labels: list[int], names: list[str], **kw) -> Path:
    """A Parquet file as Hugging Face `datasets` writes an `Image` + `ClassLabel` dataset."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in photos], image),
            "label": pa.array(labels, pa.int64()),
        }
    )
    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), target, **kw)
    return target


def by_image(df: pd.DataFrame, name_of) -> pd.DataFrame:
    """The rows with `image` (the photo's name, from `name_of(path)`) for a key, sorted by image and rank."""
    rows = df.assign(image=df["path"].map(name_of))
    return rows.sort_values(["image", "rank"]).reset_index(drop=True)


def assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Rows keyed by `image` agree on every computed column (maps included), to rounding."""
    assert list(got["image"]) == list(expected["image"])
    for column in COMPUTED:
        a, b = got[column].to_numpy(), expected[column].to_numpy()
        rtol = 1e-4
        if column == "map":  # stored as float16: a last-digit difference in float32 may flip its last bit
            a, b, rtol = np.stack(a).astype(np.float32), np.stack(b).astype(np.float32), 2e-3
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-5, err_msg=column)
        else:
            assert list(a) == list(b), column
