"""A report written by hand (maps known exactly, as from a model with hand-set weights) and the same
ground-truth boxes in every annotation format, for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cambatch.report import schema


def write_report(out: Path, rows: list[dict], settings: dict | None = None) -> Path:
    """`rows`: dicts with path, width, height, rank, class_index, class_name, map (2-D), and maybe label, bbox."""
    maps = np.stack([r["map"] for r in rows])
    columns = {
        "path": [r["path"] for r in rows],
        "input_root": [str(out / "images")] * len(rows),
        "width": [r["width"] for r in rows],
        "height": [r["height"] for r in rows],
        "rank": [r.get("rank", 1) for r in rows],
        "class_index": [r["class_index"] for r in rows],
        "class_name": [r["class_name"] for r in rows],
        "probability": [0.5] * len(rows),
        "status": ["ok"] * len(rows),
        "run_id": ["20260101T000000Z-test"] * len(rows),
        "label": [r.get("label") for r in rows],
        "map": schema.map_array(maps),
        "map_height": [maps.shape[1]] * len(rows),
        "map_width": [maps.shape[2]] * len(rows),
    }
    for i, side in enumerate(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")):
        columns[side] = np.array([r.get("bbox", (np.nan,) * 4)[i] for r in rows], dtype=np.float32)
    meta = {"run_id": "20260101T000000Z-test", "model": "hand-set", "options": {}, **(settings or {})}
    table = schema.table(columns, len(rows)).replace_schema_metadata({schema.METADATA_KEY: json.dumps(meta).encode()})
    (out / "report").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "report" / "part-20260101T000000Z-test-00000.parquet")
    return out


def write_formats(folder: Path, boxes: dict[str, list[tuple]], labels: dict[str, str], sizes: dict[str, tuple]):
    """The same boxes (image name -> [(x0, y0, x1, y1)]) as CSV, VOC XML, COCO JSON and WSOL metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    lines = ["path,x0,y0,x1,y1,label"]
    lines += [f"{name},{b[0]},{b[1]},{b[2]},{b[3]},{labels[name]}" for name, bs in boxes.items() for b in bs]
    paths["csv"] = folder / "boxes.csv"
    paths["csv"].write_text("\n".join(lines) + "\n")
    voc = folder / "voc"
    voc.mkdir()
    for name, bs in boxes.items():
        objects = "".join(
            f"<object><name>{labels[name]}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for b in bs
        )
        w, h = sizes[name]
        size = f"<size><width>{w}</width><height>{h}</height></size>"
        xml = f"<annotation><filename>{name}</filename>{size}{objects}</annotation>"
        (voc / f"{Path(name).stem}.xml").write_text(xml)
    paths["voc"] = voc
    categories = sorted(set(labels.values()))
    coco = {
        "images": [{"id": i, "file_name": n, "width": sizes[n][0], "height": sizes[n][1]} for i, n in enumerate(boxes)],
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(categories)],
        "annotations": [
            {
                "id": k,
                "image_id": i,
                "category_id": categories.index(labels[n]) + 1,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            }
            for k, (i, n, b) in enumerate((i, n, b) for i, n in enumerate(boxes) for b in boxes[n])
        ],
    }
    paths["coco"] = folder / "instances.json"
    paths["coco"].write_text(json.dumps(coco))
    wsol = folder / "wsol"
    wsol.mkdir()
    (wsol / "image_ids.txt").write_text("".join(f"{n}\n" for n in boxes))
    (wsol / "class_labels.txt").write_text("".join(f"{n},{labels[n]}\n" for n in boxes))
    (wsol / "image_sizes.txt").write_text("".join(f"{n},{sizes[n][0]},{sizes[n][1]}\n" for n in boxes))
    (wsol / "localization.txt").write_text(
        "".join(f"{n},{b[0]},{b[1]},{b[2]},{b[3]}\n" for n in boxes for b in boxes[n])
    )
    paths["wsol"] = wsol
    return paths
