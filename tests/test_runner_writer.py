"""`cambatch.runner.writer`: one image's overlays on disk and its report rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cambatch.annotations.readers import load_annotations
from cambatch.data.preprocess import Sample
from cambatch.layout import ImageNames, OutputLayout
from cambatch.report.schema import SCHEMA
from cambatch.runner.engine import BatchResult
from cambatch.runner.writer import ImageWriter, overlay_count
from cambatch.sources.discover import ImageSource

NAMES = ["tabby", "tiger cat", "jack-o'-lantern", "espresso"]


def batch_result() -> BatchResult:
    """Two images x two classes: image 1 explains classes 2 and 0, its maps hot on the left."""
    maps = np.zeros((2, 2, 2, 3), np.float16)
    maps[1, :, :, 0] = 4.0
    display = np.zeros((2, 2, 2, 3), np.uint8)
    display[1, :, :, 0] = 255
    columns = {
        "class_index": np.array([[0, 1], [2, 0]]),
        "rank": np.array([[1, 2], [1, 2]]),
        "probability": np.array([[0.6, 0.3], [0.7, 0.2]], np.float32),
        "logit": np.array([[2.0, 1.0], [3.0, 0.5]], np.float32),
        "cam_max": np.array([[0.0, 0.0], [4.0, 4.0]], np.float32),
        "centroid_x": np.array([[np.nan, np.nan], [0.1, 0.1]], np.float32),
    }
    return BatchResult(columns=columns, maps=maps, display=display)


def writer(tmp_path, **changes) -> ImageWriter:
    (tmp_path / "out").mkdir(exist_ok=True)  # a run's OUT exists (its lock is in it); a vanished one is an error
    options = dict(
        layout=OutputLayout(tmp_path / "out"),
        model_name="tiny",
        method="gradcam",
        run_id="20250101T000000Z-abcdef",
        class_names=NAMES,
        colormap="jet",
        alpha=1.0,
        overlays=True,
        named_by_rank=True,
    )
    return ImageWriter(**{**options, **changes})


def source(tmp_path, label=None) -> ImageSource:
    return ImageSource(tmp_path / "in" / "pumpkins/p1.jpg", tmp_path / "in", "pumpkins/p1.jpg", 1234, 99, label)


def sample(width=60, height=40) -> Sample:
    return Sample(
        1, torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(height, width, 3, dtype=torch.uint8), 600, 400
    )


def test_ok_rows_have_the_images_columns_and_classes(tmp_path):
    rows = writer(tmp_path).ok_rows(source(tmp_path, label="Jack-O'-Lantern"), sample(), batch_result(), 1)
    assert rows.schema == SCHEMA and rows.num_rows == 2
    got = rows.to_pylist()
    assert [r["class_name"] for r in got] == ["jack-o'-lantern", "tabby"] and [r["rank"] for r in got] == [1, 2]
    assert [r["class_index"] for r in got] == [2, 0] and got[0]["probability"] == pytest.approx(0.7)
    for r in got:
        assert (r["path"], r["input_root"], r["file_size"], r["mtime_ns"]) == (
            "pumpkins/p1.jpg",
            str(tmp_path / "in"),
            1234,
            99,
        )
        assert (r["width"], r["height"], r["status"], r["error"]) == (600, 400, "ok", None)
        assert (r["model"], r["method"], r["run_id"]) == ("tiny", "gradcam", "20250101T000000Z-abcdef")
        assert r["label"] == "Jack-O'-Lantern" and r["correct"] is True  # top-1 matches, case-blind
        assert (r["map_height"], r["map_width"]) == (2, 3)
        assert r["bbox_x0"] is None and r["masked_probability"] is None  # columns not given: null
    assert got[0]["centroid_x"] == pytest.approx(0.1) and got[0]["cam_max"] == 4.0
    assert np.array(got[0]["map"], np.float32).reshape(2, 3)[:, 0].tolist() == [4.0, 4.0]


def test_the_embedding_is_kept_once_per_image_on_its_best_ranked_row(tmp_path):
    result = batch_result()
    result.embeddings = np.array([[1, 2, 3], [4.5, 5, 6]], np.float16)
    rows = writer(tmp_path, overlays=False).ok_rows(source(tmp_path), sample(), result, 1)
    assert rows.column("embedding").to_pylist() == [[4.5, 5.0, 6.0], None]  # rank 1, then rank 2
    chosen = BatchResult(
        {**result.columns, "class_index": np.array([[0, 1], [3, 2]]), "rank": np.array([[5, 2], [9, 4]])},
        result.maps,
        None,
        embeddings=result.embeddings,
    )
    rows = writer(tmp_path, overlays=False, named_by_rank=False).ok_rows(source(tmp_path), sample(), chosen, 1)
    assert rows.column("embedding").to_pylist() == [None, [4.5, 5.0, 6.0]]  # --classes: the best rank, 4
    plain = writer(tmp_path, overlays=False).ok_rows(source(tmp_path), sample(), batch_result(), 1)
    assert plain.column("embedding").null_count == 2  # without --embeddings: null


def test_overlays_are_saved_at_the_photos_size_under_their_names(tmp_path):
    rows = writer(tmp_path).ok_rows(source(tmp_path), sample(60, 40), batch_result(), 1)
    paths = rows.column("overlay_path").to_pylist()
    assert paths == ["overlays/pumpkins/p1.jpg/top1_jack_o_lantern.jpg", "overlays/pumpkins/p1.jpg/top2_tabby.jpg"]
    assert overlay_count(rows) == 2
    with Image.open(tmp_path / "out" / paths[0]) as image:
        assert image.size == (60, 40)
        pixels = np.asarray(image.convert("RGB"), dtype=int)
    assert pixels[:, :5, 0].mean() > 100 > pixels[:, -5:, 0].mean()  # the map's hot column is on the left
    assert rows.column("correct").to_pylist() == [None, None]  # no label


def test_a_redone_image_removes_the_temp_files_a_killed_run_left_in_its_folder(tmp_path):
    folder = tmp_path / "out" / "overlays" / "pumpkins" / "p1.jpg"
    folder.mkdir(parents=True)
    torn = [folder / ".top1_jack_o_lantern.jpg.140213.tmp", folder / ".top3_espresso.jpg.99.tmp"]
    for path in torn:
        path.write_bytes(b"\xff\xd8 half a JPEG")
    rows = writer(tmp_path).ok_rows(source(tmp_path), sample(), batch_result(), 1)
    assert sorted(p.name for p in folder.iterdir()) == ["top1_jack_o_lantern.jpg", "top2_tabby.jpg"]
    assert overlay_count(rows) == 2


def test_a_first_run_lists_no_overlay_folder(tmp_path, monkeypatch):
    listed = []
    original = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: listed.append(self) or original(self, pattern))
    writer(tmp_path).ok_rows(source(tmp_path), sample(), batch_result(), 1)
    assert listed == [] and len(list((tmp_path / "out" / "overlays" / "pumpkins" / "p1.jpg").iterdir())) == 2


def test_chosen_classes_are_named_without_rank_and_correct_follows_rank_one(tmp_path):
    rows = writer(tmp_path, named_by_rank=False).ok_rows(source(tmp_path, label="tabby"), sample(), batch_result(), 1)
    assert rows.column("overlay_path").to_pylist() == [
        "overlays/pumpkins/p1.jpg/c2_jack_o_lantern.jpg",
        "overlays/pumpkins/p1.jpg/c0_tabby.jpg",
    ]
    assert rows.column("correct").to_pylist() == [False, False]  # tabby explained at rank 2: wrong


def test_no_overlays_no_files(tmp_path):
    rows = writer(tmp_path, overlays=False).ok_rows(source(tmp_path), sample(), batch_result(), 0)
    assert rows.column("overlay_path").null_count == 2 and overlay_count(rows) == 0
    assert not any((tmp_path / "out").iterdir())  # nothing written
    no_photo = Sample(0, torch.zeros(3, 8, 8, dtype=torch.uint8), None, 600, 400)
    rows = writer(tmp_path).ok_rows(source(tmp_path), no_photo, batch_result(), 0)
    assert rows.column("overlay_path").null_count == 2


def test_error_row(tmp_path):
    row = writer(tmp_path).error_row(source(tmp_path, label="cat"), "corrupt or truncated image data").to_pylist()
    assert len(row) == 1
    (r,) = row
    assert (r["status"], r["error"], r["path"], r["label"]) == (
        "error",
        "corrupt or truncated image data",
        "pumpkins/p1.jpg",
        "cat",
    )
    assert r["class_name"] is None and r["rank"] is None and r["width"] is None and r["overlay_path"] is None
    assert r["correct"] is None and r["run_id"] == "20250101T000000Z-abcdef"


def test_a_vanished_out_is_an_error_never_recreated(tmp_path):
    images = writer(tmp_path)
    (tmp_path / "out").rmdir()
    with pytest.raises(FileNotFoundError):
        images.ok_rows(source(tmp_path), sample(), batch_result(), 1)
    assert not (tmp_path / "out").exists()


def with_boxes(result: BatchResult) -> BatchResult:
    """`result` with a CAM box on every row (the ground-truth columns compare it with the truth's)."""
    boxes = {
        f"bbox_{side}": np.full((2, 2), value, np.float32)
        for side, value in zip(("x0", "y0", "x1", "y1"), (0, 0, 1, 1), strict=True)
    }
    return BatchResult(columns={**result.columns, **boxes}, maps=result.maps, display=result.display)


def test_a_box_past_the_edge_is_clipped_and_one_wholly_outside_is_a_problem_line(tmp_path):
    csv = tmp_path / "boxes.csv"
    csv.write_text("path,x0,y0,x1,y1\npumpkins/p1.jpg,100,50,900,700\npumpkins/p2.jpg,700,500,900,700\n")
    images = writer(tmp_path, truth=load_annotations(csv), overlays=False)
    rows = images.ok_rows(source(tmp_path), sample(), with_boxes(batch_result()), 1).to_pylist()  # 600 x 400
    assert rows[0]["gt_box_coords"] == [100, 50, 599, 399] and rows[0]["gt_boxes"] == 1
    assert rows[0]["gt_box_iou"] == pytest.approx(500 * 350 / (600 * 400))  # the CAM box is the whole image
    assert images.problems == []
    other = ImageSource(tmp_path / "in" / "pumpkins/p2.jpg", tmp_path / "in", "pumpkins/p2.jpg", 1, 1)
    rows = images.ok_rows(other, sample(), with_boxes(batch_result()), 1).to_pylist()
    assert all(r["gt_boxes"] is None and r["gt_box_iou"] is None and r["energy_in_gt"] is None for r in rows)
    assert images.problems == [
        "boxes.csv:3: box 700,500,900,700 lies wholly outside the 600x400 image (pumpkins/p2.jpg)"
    ]


def test_overlay_folders_get_a_hash_only_when_the_run_has_a_clashing_name(tmp_path):
    capital = ImageSource(tmp_path / "in" / "IMG_0001.JPG", tmp_path / "in", "IMG_0001.JPG", 1, 1)
    plain = writer(tmp_path, names=ImageNames.of([capital.key])).ok_rows(capital, sample(), batch_result(), 1)
    assert plain.column("overlay_path").to_pylist()[0] == "overlays/IMG_0001.JPG/top1_jack_o_lantern.jpg"
    names = ImageNames.of([capital.key, (str(tmp_path / "in"), "img_0001.jpg")])
    hashed = writer(tmp_path, names=names).ok_rows(capital, sample(), batch_result(), 1)
    assert hashed.column("overlay_path").to_pylist()[0].startswith("overlays/IMG_0001.JPG~")
