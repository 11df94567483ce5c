"""Readers of every annotation format: what each yields (entries by the path they name), and malformed entries.
Which entry is which image: tests/test_annotations_match.py."""

import json

import pytest

from cambatch.annotations.readers import load_annotations
from cambatch.errors import UsageError


def test_csv_boxes_labels_and_a_bad_line(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("path,x0,y0,x1,y1,label\nsub/a.jpg,1,2,3,4,cat\nsub/a.jpg,5,6,7,8,cat\nb.jpg,9,9,1,1,dog\n")
    found = load_annotations(path)
    a = found.images["sub/a.jpg"]
    assert a.box_array().tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and a.label == "cat"
    assert found.problems == ["b.csv:4: box 9,9,1,1 has x1 < x0 or y1 < y0"]
    assert "b.csv:4" in found.images["b.jpg"].error
    assert found.root == tmp_path  # the entries' paths start from the file's folder


def test_csv_without_the_needed_columns_is_a_usage_error(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("file,x\na.jpg,1\n")
    with pytest.raises(UsageError, match="missing columns"):
        load_annotations(path)


def test_voc_xml_named_by_its_own_path_and_its_filename_with_size(tmp_path):
    (tmp_path / "x1.xml").write_text(
        "<annotation><filename>photo.jpg</filename><size><width>50</width><height>40</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>20</ymax></bndbox></object>"
        "</annotation>"
    )
    (tmp_path / "broken.xml").write_text("<annotation><object>")
    found = load_annotations(tmp_path)
    truth = found.images["x1"]
    assert found.aliases == {"x1": ("photo.jpg",)} and found.root == tmp_path
    assert truth.box_array().tolist() == [[1, 2, 30, 20]] and truth.label == "dog" and truth.size == (50, 40)
    assert len(found.problems) == 1 and found.problems[0].startswith("broken.xml: not XML")
    assert found.images["broken"].error


def test_coco_bbox_is_x_y_width_height(tmp_path):
    path = tmp_path / "instances.json"
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 20, 30, 40]},
            {"id": 2, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]},
        ],
    }
    path.write_text(json.dumps(data))
    found = load_annotations(path)
    truth = found.images["a.jpg"]
    assert truth.box_array().tolist() == [[10, 20, 40, 60]] and truth.label == "cat" and truth.size == (100, 80)
    assert found.problems == ["instances.json: annotations[1]: unknown image_id 99"]


def test_wsol_metadata_folder(tmp_path):
    (tmp_path / "image_ids.txt").write_text("val/a.JPEG\nval/b.JPEG\n")
    (tmp_path / "class_labels.txt").write_text("val/a.JPEG,12\nval/b.JPEG,3\n")
    (tmp_path / "image_sizes.txt").write_text("val/a.JPEG,500,375\nval/b.JPEG,500\n")
    (tmp_path / "localization.txt").write_text("val/a.JPEG,156,163,318,230\nval/a.JPEG,1,1,2,2\nval/b.JPEG,1,2\n")
    found = load_annotations(tmp_path)
    a = found.images["val/a.JPEG"]
    assert a.box_array().tolist() == [[156, 163, 318, 230], [1, 1, 2, 2]]
    assert (a.label, a.size) == ("12", (500, 375))
    assert found.problems == ["image_sizes.txt:2: expected 3 comma-separated fields, got 2"]
    assert found.images["val/b.JPEG"].masks == (str(tmp_path / "1"),)


def test_mask_folder_names_each_image_by_the_masks_path_without_png(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "sub" / "a.png")
    found = load_annotations(tmp_path)
    assert found.images["sub/a"].masks == (str(tmp_path / "sub" / "a.png"),)


def test_unknown_or_missing_path(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_annotations(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="cannot tell"):
        load_annotations(tmp_path)


def test_a_csv_saved_by_a_spreadsheet_reads_like_a_plain_one(tmp_path):
    """Excel's "CSV UTF-8" writes a BOM first, a hand-typed header has spaces, Windows ends lines with CRLF."""
    plain = tmp_path / "plain.csv"
    plain.write_text("path,x0,y0,x1,y1,label\nsub/a.jpg,1,2,3,4,cat\nb.jpg,5,6,7,8,dog\n", encoding="utf-8")
    for name, text in {
        "bom.csv": "\ufeffpath,x0,y0,x1,y1,label\nsub/a.jpg,1,2,3,4,cat\nb.jpg,5,6,7,8,dog\n",
        "spaces.csv": "path, x0, y0, x1, y1, label\nsub/a.jpg, 1, 2, 3, 4, cat\nb.jpg, 5, 6, 7, 8, dog\n",
        "crlf.csv": "\ufeffpath,x0,y0,x1,y1,label\r\nsub/a.jpg,1,2,3,4,cat\r\nb.jpg,5,6,7,8,dog\r\n",
    }.items():
        (tmp_path / name).write_bytes(text.encode("utf-8"))
        found = load_annotations(tmp_path / name)
        assert found.images == load_annotations(plain).images and not found.problems, name


def test_wsol_and_coco_files_with_a_bom_and_crlf(tmp_path):
    wsol = tmp_path / "wsol"
    wsol.mkdir()
    (wsol / "image_ids.txt").write_bytes("\ufeffval/a.JPEG\r\n".encode())
    (wsol / "class_labels.txt").write_bytes("\ufeffval/a.JPEG,12\r\n".encode())
    (wsol / "localization.txt").write_bytes("\ufeffval/a.JPEG,1,2,3,4\r\n".encode())
    found = load_annotations(wsol)
    assert list(found.images) == ["val/a.JPEG"] and found.images["val/a.JPEG"].label == "12" and not found.problems
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "bbox": [1, 2, 3, 4]}]}
    (tmp_path / "coco.json").write_bytes(("\ufeff" + json.dumps(coco)).encode())
    assert load_annotations(tmp_path / "coco.json").images["a.jpg"].box_array().tolist() == [[1, 2, 4, 6]]
