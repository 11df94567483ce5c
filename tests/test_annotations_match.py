"""`cambatch.annotations.match`: which annotation entry is which image, one identity per image, never a guess.

The step rules on hand-made entries, `annotate` on discovered images, and the reproduced bugs end to end: a
run over several INPUTs where a file name or a stem is shared gives every image its own ground truth.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import SAMPLES
from PIL import Image

from cambatch.annotations.match import annotate, match
from cambatch.annotations.model import Annotations, Box
from cambatch.annotations.readers import load_annotations
from cambatch.sources.discover import discover


def entries(*named: tuple[str, str], root: str = "/labels") -> Annotations:
    """Annotations with one box per (path as written, label)."""
    found = Annotations(f"{root}/boxes.csv", "csv", Path(root))
    for i, (path, label) in enumerate(named):
        found.add(path, Box(i, i, i + 1, i + 1, label))
    return found


def labels(truth, *images: tuple[str, str]) -> list[str | None]:
    return [None if truth.find(image) is None else truth.find(image).label for image in images]


def test_two_inputs_holding_one_name_take_their_own_entries_by_the_inputs_folder_name():
    a, b = ("/data/a", "x.png"), ("/data/b", "x.png")
    named = entries(("a/x.png", "cat"), ("b/x.png", "cup"))
    for root in ("/labels", "/data"):  # behind the INPUT's name; relative to the annotations' folder
        named.root = Path(root)
        truth = match(named, [a, b])
        assert labels(truth, a, b) == ["cat", "cup"] and not truth.conflicts


def test_a_split_per_input_keeps_train_and_val_apart():
    train, val = ("/d/train", "0001.jpg"), ("/d/val", "0001.jpg")
    truth = match(entries(("train/0001.jpg", "tabby"), ("val/0001.jpg", "cup")), [train, val])
    assert labels(truth, train, val) == ["tabby", "cup"]
    whole = match(entries(("train/0001.jpg", "tabby"), ("val/0001.jpg", "cup")), [("/d", "train/0001.jpg")])
    assert labels(whole, ("/d", "train/0001.jpg")) == ["tabby"]  # its path relative to its INPUT


def test_a_stem_never_falls_back_on_an_entry_another_image_matched():
    rocket, cat = ("/p", "a.jpg"), ("/p", "a.png")
    truth = match(entries(("a.jpg", "rocket")), [rocket, cat])
    assert labels(truth, rocket, cat) == ["rocket", None] and not truth.conflicts


def test_an_image_two_entries_could_be_is_an_error_naming_both():
    image = ("/elsewhere", "1.png")
    truth = match(entries(("x/1.png", "cat"), ("y/1.png", "dog")), [image])
    assert truth.find(image).label is None and truth.find(image).error == truth.conflicts[image]
    assert "'x/1.png' and 'y/1.png' both match this image (by file name)" in truth.conflicts[image]
    assert truth.conflicts[image].startswith("ambiguous ground truth in boxes.csv:")


def test_a_shared_name_whose_entries_other_images_took_is_no_error():
    images = [("/d", "x/1.png"), ("/d", "y/1.png"), ("/d", "z/1.png")]
    truth = match(entries(("x/1.png", "cat"), ("y/1.png", "dog")), images)
    assert labels(truth, *images) == ["cat", "dog", None] and not truth.conflicts
    # One of them left unmatched: the name is still shared, so the third image could be either.
    truth = match(entries(("x/1.png", "cat"), ("y/1.png", "dog")), images[::2])
    assert "'x/1.png' and 'y/1.png'" in truth.conflicts[("/d", "z/1.png")]


def test_an_entry_two_images_match_is_an_error_on_both():
    images = [("/in/a", "x.png"), ("/in/b", "x.png"), ("/in/c", "sub/cat.png"), ("/in/d", "cat.png")]
    truth = match(entries(("x.png", "cup"), ("deep/cat.png", "cat")), images)
    assert set(truth.conflicts) == set(images) and not any(truth.find(i).label for i in images)
    assert "entry 'x.png' matches 2 images: /in/a/x.png, /in/b/x.png (by path)" in truth.conflicts[images[0]]
    assert "entry 'deep/cat.png' matches 2 images" in truth.conflicts[images[2]]
    assert "(by file name)" in truth.conflicts[images[2]]


def test_fallbacks_by_file_name_then_stem_when_unambiguous():
    member, renamed = ("/shards", "s-000.tar/rotated.jpg"), ("/in", "sub/photo.png")
    truth = match(entries(("rotated.jpg", "tabby"), ("photo.jpg", "dog")), [member, renamed])
    assert labels(truth, member, renamed) == ["tabby", "dog"]


def test_paths_compare_as_posix_paths_absolute_and_relative():
    images = [("/data/photos", "a.jpg"), ("/data/photos", "b.jpg"), ("/data/photos", "c.jpg")]
    named = entries(("/data/photos/a.jpg", "abs"), (".\\photos\\b.jpg", "windows"), ("x/../c.jpg", "dots"))
    named.root = Path("/data")
    assert labels(match(named, images), *images) == ["abs", "windows", "dots"]


def test_voc_and_masks_name_their_image_without_its_extension(tmp_path):
    voc = tmp_path / "voc"
    voc.mkdir()
    box = "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>"
    (voc / "x1.xml").write_text(f"<annotation><filename>x1.jpg</filename>{box}</annotation>")
    (voc / "x2.xml").write_text(f"<annotation><filename>photo.jpg</filename>{box}</annotation>")
    found = load_annotations(voc)
    images = [("/in", "x1.jpg"), ("/in", "x1.png"), ("/in", "photo.jpg")]
    # x1.jpg is named whole by <filename>: x1.png, named only by the XML's stem, is not x1.xml's image.
    assert labels(match(found, images), *images) == ["dog", None, "dog"]
    assert labels(match(found, [("/in", "x2.png")]), ("/in", "x2.png")) == ["dog"]  # the XML's own name
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.new("L", (4, 4)).save(masks / "a.png")
    pair = [("/in", "a.jpg"), ("/in", "a.png")]
    truth = match(load_annotations(masks), pair)
    assert set(truth.conflicts) == set(pair)  # one mask, two pictures: which one it outlines is a guess
    assert match(load_annotations(masks), pair[:1]).find(pair[0]).masks == (str(masks / "a.png"),)


def test_annotate_labels_the_images_and_makes_an_ambiguous_one_an_error(tmp_path):
    for rel in ("a/x.png", "b/x.png", "c/1.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x0,y0,x1,y1,label\na/x.png,1,1,2,2,cat\nb/x.png,1,1,2,2,cup\nx/1.png,1,1,2,2,dog\n")
    boxes.write_text(boxes.read_text() + "y/1.png,1,1,2,2,owl\n")
    found = discover([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert annotate(found, None) == (found, None)
    labelled, truth = annotate(found, boxes)
    assert [(s.label, s.error) for s in labelled[:2]] == [("cat", None), ("cup", None)]
    assert labelled[2].label is None and "'x/1.png' and 'y/1.png'" in labelled[2].error
    assert truth.problems == [] and truth.find(labelled[0].key).box_array().tolist() == [[1, 1, 2, 2]]
    with pytest.raises(Exception, match="ambiguous ground truth"):
        labelled[2].read_bytes()  # the loader's read: the image's error row


def test_a_run_gives_every_image_its_own_ground_truth_or_an_error_row(tmp_path):
    """The reproduced bugs: `run a b` with a/x.png (a cat) and b/x.png (a cup); train/0001.jpg and val/0001.jpg
    given as two INPUTs; a/r.jpg (a rocket) beside a/r.png (a cat), only the rocket annotated; 1.png that
    entries x/1.png and y/1.png could both be."""
    from cambatch.config import RunConfig
    from cambatch.runner.pipeline import run

    photos = {
        "a/x.png": "chelsea.png",
        "b/x.png": "coffee.png",
        "a/r.jpg": "rocket.jpg",
        "a/r.png": "chelsea.png",
        "data/train/0001.jpg": "chelsea.png",
        "data/val/0001.jpg": "coffee.png",
        "c/1.png": "camera.png",
    }
    for rel, sample in photos.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(SAMPLES / sample).convert("RGB").save(tmp_path / rel)
    boxes = {
        "a/x.png": (60, 10, 420, 299, "tabby"),
        "b/x.png": (100, 50, 300, 250, "cup"),
        "a/r.jpg": (200, 0, 300, 400, "rocket"),
        "train/0001.jpg": (61, 11, 421, 298, "tabby"),
        "val/0001.jpg": (101, 51, 301, 251, "cup"),
        "x/1.png": (1, 1, 2, 2, "tripod"),
        "y/1.png": (3, 3, 4, 4, "tripod"),
    }
    (tmp_path / "labels").mkdir()
    csv = tmp_path / "labels" / "boxes.csv"  # its folder holds no image: entries name them by their INPUT's name
    csv.write_text("path,x0,y0,x1,y1,label\n" + "".join(f"{p},{','.join(map(str, b))}\n" for p, b in boxes.items()))
    inputs = [tmp_path / name for name in ("a", "b", "data/train", "data/val", "c")]
    result = run(RunConfig.create(inputs, tmp_path / "out", annotations=csv, topk=1, overlays=False, workers=0))
    report = pd.read_parquet(tmp_path / "out" / "report")
    got = {
        (Path(row.input_root).name, row.path): (
            None if pd.isna(row.label) else row.label,
            None if row.gt_box_coords is None else list(row.gt_box_coords),
        )
        for row in report[report.status == "ok"].itertuples()
    }
    assert got == {
        ("a", "x.png"): ("tabby", [60, 10, 420, 299]),
        ("b", "x.png"): ("cup", [100, 50, 300, 250]),
        ("a", "r.jpg"): ("rocket", [200, 0, 300, 400]),
        ("a", "r.png"): (None, None),
        ("train", "0001.jpg"): ("tabby", [61, 11, 421, 298]),
        ("val", "0001.jpg"): ("cup", [101, 51, 301, 251]),
    }
    (error,) = report[report.status == "error"].itertuples()
    assert (Path(error.input_root).name, error.path) == ("c", "1.png") and pd.isna(error.label)
    assert "ambiguous ground truth in boxes.csv: entries 'x/1.png' and 'y/1.png' both match" in error.error
    assert (result.ok, result.errors) == (6, 1)
