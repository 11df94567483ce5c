"""What keeping the raw maps in the report costs: bytes per row of the `map` column, on disk.

    python benchmarks/map_bytes.py [--images 256]

Runs cambatch (`--no-overlays`, top-3) on generated photos twice: the default model (7 x 7 maps)
and resnet18 with random weights and Grad-CAM on `layer3` (14 x 14 maps). Each report is written
again with the same Parquet settings with and without `map`, `map_height` and `map_width`; the
difference over the row count is the cost of a map.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from photos import generate

import cambatch
from cambatch.report.parts import published_parts
from cambatch.report.schema import MAP_NAMES

CASES = (
    ("efficientnet_lite0, cam (7 x 7)", {}),
    (
        "resnet18 random init, gradcam on layer3 (14 x 14)",
        {"model": "resnet18", "weights": "none", "method": "gradcam", "layer": "layer3"},
    ),
)


def parquet_bytes(table: pa.Table) -> int:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)  # the ReportWriter's settings: pyarrow's defaults (snappy)
    return sink.getvalue().size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        generate(photos, args.images)
        print(f"{args.images} photos, top-3, rows = images x 3")
        print("| maps | rows | report bytes/row | of which the map | raw float16 |")
        print("|---|---:|---:|---:|---:|")
        for label, options in CASES:
            out = Path(tmp) / label.split(",")[0]
            cambatch.run(photos, out, topk=3, overlays=False, progress=False, **options)
            table = pa.concat_tables(pq.read_table(p) for p in published_parts(out / "report"))
            whole, without = parquet_bytes(table), parquet_bytes(table.drop_columns(list(MAP_NAMES)))
            h, w = table.column("map_height")[0].as_py(), table.column("map_width")[0].as_py()
            rows = table.num_rows
            print(f"| {label} | {rows} | {whole / rows:.0f} | {(whole - without) / rows:.0f} | {2 * h * w} |")


if __name__ == "__main__":
    main()
