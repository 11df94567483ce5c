"""Readers of ground-truth files: VOC/ImageNet XML folders, COCO instances JSON, CSV, mask PNG folders and
the WSOL protocol's metadata folder. Torch-free. A malformed entry is one problem line, never a crash.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import UsageError
from ..sources.text import csv_table, open_text, text_lines
from .masks import CocoMask
from .model import Annotations, Box

WSOL_FILES = ("image_ids.txt", "localization.txt")
MASK_SUFFIXES = (".png",)


def load_annotations(path: Path | str) -> Annotations:
    """Read `path`, its format told by what it is: a `.json` (COCO), a `.csv`, a folder with `image_ids.txt`
    and `localization.txt` (WSOL metadata), a folder of `.xml` (VOC / ImageNet) or of `.png` masks.
    """
    path = Path(path).expanduser().absolute()  # the entries' paths start from its folder (`match`)
    if path.is_file() and path.suffix.lower() == ".json":
        return read_coco(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_csv(path)
    if path.is_dir() and all((path / name).is_file() for name in WSOL_FILES):
        return read_wsol(path)
    if path.is_dir() and any(path.rglob("*.xml")):
        return read_voc(path)
    if path.is_dir() and any(p.suffix.lower() in MASK_SUFFIXES for p in path.rglob("*")):
        return read_masks(path)
    if not path.exists():
        raise UsageError(f"annotations not found: {path}")
    raise UsageError(
        f"cannot tell the annotation format of {path}: expected a COCO .json, a .csv, a folder of VOC .xml, "
        "a folder of mask .png, or a WSOL metadata folder (image_ids.txt, localization.txt)"
    )


def _box(values, where: str, label: str | None = None) -> Box:
    """A box from four numbers; ValueError naming what is wrong."""
    numbers = [float(v) for v in values]
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError("coordinates must be finite numbers")
    x0, y0, x1, y1 = numbers
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {x0:g},{y0:g},{x1:g},{y1:g} has x1 < x0 or y1 < y0")
    if min(numbers) < 0:
        raise ValueError("negative coordinate")
    return Box(x0, y0, x1, y1, label or None, where)


def read_csv(path: Path) -> Annotations:
    """`path,x0,y0,x1,y1[,label]`, a header line and one box per line, pixel coordinates of the stored image."""
    found = Annotations(str(path), "csv", path.parent)
    with csv_table(path) as reader:
        missing = {"path", "x0", "y0", "x1", "y1"} - set(reader.fieldnames)
        if missing:
            raise UsageError(f"{path}: missing columns {', '.join(sorted(missing))} (need path,x0,y0,x1,y1[,label])")
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            key = (row.get("path") or "").strip()
            if not key:
                found.problem(where, "no path")
                continue
            values = [row.get(c) for c in ("x0", "y0", "x1", "y1")]
            if any(v is None or not str(v).strip() for v in values):
                found.problem(where, "missing coordinates (need path,x0,y0,x1,y1)", key)
                continue
            try:
                found.add(key, _box(values, where, (row.get("label") or "").strip()))
            except (TypeError, ValueError) as exc:
                found.problem(where, str(exc) or "bad number", key)
    return found


def read_voc(folder: Path) -> Annotations:
    """One Pascal VOC / ImageNet XML per image, named by its own path without `.xml` and by its `<filename>`."""
    found = Annotations(str(folder), "voc", folder)
    for xml in sorted(folder.rglob("*.xml")):
        where = str(xml.relative_to(folder))
        key = xml.relative_to(folder).with_suffix("").as_posix()
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            found.problem(where, f"not XML ({exc})", key)
            continue
        size = _voc_size(root)
        for index, obj in enumerate(root.iter("object")):
            label = (obj.findtext("name") or "").strip() or None
            try:
                bnd = obj.find("bndbox")
                box = _box(
                    [bnd.findtext(t) for t in ("xmin", "ymin", "xmax", "ymax")], f"{where}: object {index + 1}", label
                )
            except (AttributeError, TypeError, ValueError) as exc:
                found.problem(f"{where}: object {index + 1}", str(exc) or "bad <bndbox>", key)
                continue
            found.add(key, box, size=size)
        if key not in found.images:
            found.add(key, size=size)  # an image with no object: known, and every map misses
        if (root.findtext("filename") or "").strip():
            found.alias(key, root.findtext("filename").strip())
    return found


def _voc_size(root) -> tuple[int, int] | None:
    try:
        width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
    except (TypeError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def read_coco(path: Path) -> Annotations:
    """A COCO instances JSON: `bbox` [x, y, w, h] becomes x0=x, y0=y, x1=x+w, y1=y+h; the category name is the label.

    A `segmentation` (polygons or RLE) becomes a mask (`masks.CocoMask`, decoded by pycocotools when scored).
    """
    found = Annotations(str(path), "coco", path.parent)
    try:
        with open_text(path) as handle:
            data = json.load(handle)
        images = {img["id"]: img for img in data["images"]}
        categories = {c["id"]: c.get("name") for c in data.get("categories", [])}
        annotations = data["annotations"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a COCO instances file ({exc})") from None
    for img in images.values():
        size = (img.get("width"), img.get("height"))
        found.add(str(img.get("file_name")), size=size if all(isinstance(s, int) and s > 0 for s in size) else None)
    for index, ann in enumerate(annotations):
        where = f"{path.name}: annotations[{index}]"
        image = images.get(ann.get("image_id"))
        if image is None:
            found.problem(where, f"unknown image_id {ann.get('image_id')!r}")
            continue
        key = str(image.get("file_name"))
        try:
            x, y, w, h = ann["bbox"]
            found.add(
                key,
                _box([x, y, float(x) + float(w), float(y) + float(h)], where, categories.get(ann.get("category_id"))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            found.problem(where, f"bad bbox ({exc})", key)
            continue
        segmentation = ann.get("segmentation")
        if segmentation:
            width, height = image.get("width"), image.get("height")
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                found.problem(where, "a segmentation needs the image's width and height", key)
                continue
            found.add(key, masks=[CocoMask(segmentation, width, height)])
    return found


def read_wsol(folder: Path) -> Annotations:
    """The WSOL protocol's metadata: `image_ids.txt`, `class_labels.txt` (id,class index), `image_sizes.txt`
    (id,width,height) and `localization.txt` (id,x0,y0,x1,y1 per box, or id,mask,ignore for masks).
    """
    found = Annotations(str(folder), "wsol", folder)
    for _number, line in text_lines(folder / "image_ids.txt"):
        found.add(line)
    for _where, parts in _rows(folder, "class_labels.txt", 2, found):
        found.add(parts[0], label=parts[1])
    for where, parts in _rows(folder, "image_sizes.txt", 3, found):
        try:
            found.add(parts[0], size=(int(parts[1]), int(parts[2])))
        except ValueError:
            found.problem(where, "width and height must be integers", parts[0])
    for where, parts in _rows(folder, "localization.txt", None, found):
        if len(parts) == 5:
            try:
                found.add(parts[0], _box(parts[1:], where))
            except ValueError as exc:
                found.problem(where, str(exc) or "bad number", parts[0])
        elif len(parts) in (2, 3):
            found.add(parts[0], masks=[str(folder / parts[1])])
        else:
            found.problem(where, f"expected id,x0,y0,x1,y1 or id,mask[,ignore], got {len(parts)} fields", parts[0])
    return found


def _rows(folder: Path, name: str, fields: int | None, found: Annotations):
    path = folder / name
    if not path.is_file():
        return
    for number, line in text_lines(path):
        parts = [p.strip() for p in line.split(",")]
        where = f"{name}:{number}"
        if fields is not None and len(parts) != fields:
            found.problem(where, f"expected {fields} comma-separated fields, got {len(parts)}", parts[0])
            continue
        yield where, parts


def read_masks(folder: Path) -> Annotations:
    """A folder of mask images, one per image, named by its path without `.png`; non-zero pixels are the object."""
    found = Annotations(str(folder), "masks", folder)
    for mask in sorted(p for p in folder.rglob("*") if p.suffix.lower() in MASK_SUFFIXES):
        found.add(mask.relative_to(folder).with_suffix("").as_posix(), masks=[str(mask)])
    return found
