"""Readers of every annotation format: what each yields, how images are matched, and malformed entries."""

import json

import pytest

from cambatch.annotations.readers import load_annotations
from cambatch.errors import UsageError


def test_csv_boxes_labels_and_a_bad_line(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("path,x0,y0,x1,y1,label\nsub/a.jpg,1,2,3,4,cat\nsub/a.jpg,5,6,7,8,cat\nb.jpg,9,9,1,1,dog\n")
    found = load_annotations(path)
    a = found.find("sub/a.jpg")
    assert a.box_array().tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and a.label == "cat"
    assert found.problems == ["b.csv:4: box 9,9,1,1 has x1 < x0 or y1 < y0"]
    assert "b.csv:4" in found.find("b.jpg").error


def test_csv_without_the_needed_columns_is_a_usage_error(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("file,x\na.jpg,1\n")
    with pytest.raises(UsageError, match="missing columns"):
        load_annotations(path)


def test_voc_xml_by_stem_and_filename_with_size(tmp_path):
    (tmp_path / "x1.xml").write_text(
        "<annotation><filename>photo.jpg</filename><size><width>50</width><height>40</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>20</ymax></bndbox></object>"
        "</annotation>"
    )
    (tmp_path / "broken.xml").write_text("<annotation><object>")
    found = load_annotations(tmp_path)
    truth = found.find("photo.jpg")
    assert truth is found.find("x1.jpg")
    assert truth.box_array().tolist() == [[1, 2, 30, 20]] and truth.label == "dog" and truth.size == (50, 40)
    assert len(found.problems) == 1 and found.problems[0].startswith("broken.xml: not XML")
    assert found.find("broken.png").error


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
    truth = found.find("a.jpg")
    assert truth.box_array().tolist() == [[10, 20, 40, 60]] and truth.label == "cat" and truth.size == (100, 80)
    assert found.problems == ["instances.json: annotations[1]: unknown image_id 99"]


def test_wsol_metadata_folder(tmp_path):
    (tmp_path / "image_ids.txt").write_text("val/a.JPEG\nval/b.JPEG\n")
    (tmp_path / "class_labels.txt").write_text("val/a.JPEG,12\nval/b.JPEG,3\n")
    (tmp_path / "image_sizes.txt").write_text("val/a.JPEG,500,375\nval/b.JPEG,500\n")
    (tmp_path / "localization.txt").write_text("val/a.JPEG,156,163,318,230\nval/a.JPEG,1,1,2,2\nval/b.JPEG,1,2\n")
    found = load_annotations(tmp_path)
    a = found.find("val/a.JPEG")
    assert a.box_array().tolist() == [[156, 163, 318, 230], [1, 1, 2, 2]]
    assert (a.label, a.size) == ("12", (500, 375))
    assert found.problems == ["image_sizes.txt:2: expected 3 comma-separated fields, got 2"]
    assert found.find("val/b.JPEG").masks == (str(tmp_path / "1"),)


def test_mask_folder_by_stem(tmp_path):
    from PIL import Image

    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    found = load_annotations(tmp_path)
    assert found.find("photos/a.jpg").masks == (str(tmp_path / "a.png"),)


def test_unknown_or_missing_path(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_annotations(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="cannot tell"):
        load_annotations(tmp_path)
