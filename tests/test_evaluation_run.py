"""`cambatch evaluate` on a report written by hand (maps known exactly), every metric checked against values
computed by hand; the same boxes in every annotation format give identical rows."""

import numpy as np
import pandas as pd
import pytest
from evaluation_support import write_formats, write_report
from identity_support import PHOTOS, two_folders_run
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.errors import UsageError
from cambatch.evaluation.run import evaluate

S = 224  # maps at the evaluation size: the resize is the identity, every pixel known


def block(x0, y0, x1, y1, value=1.0, into=None):
    out = np.zeros((S, S), np.float32) if into is None else into
    out[y0 : y1 + 1, x0 : x1 + 1] = value
    return out


BOXES = {
    "a.jpg": [(50, 50, 99, 99)],
    "b.jpg": [(0, 0, 223, 111)],
    "c.jpg": [(150, 150, 199, 199)],
    "d.jpg": [(10, 10, 20, 20)],
}
LABELS = {"a.jpg": "cat", "b.jpg": "cat", "c.jpg": "dog", "d.jpg": "dog"}
SIZES = dict.fromkeys(BOXES, (S, S))


def rows():
    def row(path, rank, index, name, m, bbox=(np.nan,) * 4):
        return {
            "path": path,
            "width": S,
            "height": S,
            "rank": rank,
            "class_index": index,
            "class_name": name,
            "map": m,
            "bbox": bbox,
        }

    edge = (50 / S, 50 / S, 100 / S, 100 / S)
    return [
        # a: a core (1.0) at the box inside a halo (0.5): the box is the core from threshold 0.5 on.
        row("a.jpg", 1, 0, "cat", block(50, 50, 99, 99, 1.0, into=block(30, 30, 129, 129, 0.5)), edge),
        # b: top-1 wrong; the label's class (rank 2) covers the top half, the box.
        row("b.jpg", 1, 1, "dog", block(200, 200, 223, 223)),
        row("b.jpg", 2, 0, "cat", block(0, 0, 223, 111)),
        # c: a large decoy strip and the object, a small block: only "all regions" finds it.
        row("c.jpg", 1, 1, "dog", block(150, 150, 199, 199, into=block(0, 0, 223, 59))),
        # d: the label's class (dog) is not explained.
        row("d.jpg", 1, 0, "cat", np.zeros((S, S), np.float32)),
    ]


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    out = write_report(root / "out", rows())
    return out, write_formats(root / "truth", BOXES, LABELS, SIZES)


def test_every_metric_by_hand(annotated):
    out, paths = annotated
    result = evaluate(out, paths["csv"])
    m = result.metrics
    assert (m["images"], m["label_not_explained"], m["thresholds"]) == (4, 1, 100)
    # Largest region, IoU >= 0.5: b always, a from 0.5 on (core box 50..100: 2500/2601), c and d never.
    assert (m["MaxBoxAcc"], m["best_threshold"]) == (0.5, 0.5)
    # All regions: a (from 0.5), b and c (2500/2601) reach 0.3, 0.5 and 0.7 together.
    assert m["MaxBoxAccV2"] == pytest.approx(0.75)
    assert m["gt_known_loc@0.2"] == 0.25  # a's halo box: 2500 / 101^2 = 0.245
    assert m["gt_known_loc@best"] == 0.5
    assert m["top1_loc@0.2"] == 0.0  # b is found but its top-1 is wrong
    assert m["top1_loc@best"] == 0.25  # a
    assert m["pointing_acc"] == 0.5  # cat: a and b hit; dog: c's peak (0, 0) is on the decoy
    energy = [2500 / (2500 + 7500 * 0.5), 1.0, 2500 / (224 * 60 + 2500)]
    assert m["energy_in_gt"] == pytest.approx(np.mean(energy), rel=1e-6)
    per_class = result.per_class
    assert per_class.loc["cat", "images"] == 2 and per_class.loc["cat", "gt_known_loc@best"] == 1.0
    assert per_class.loc["dog", "gt_known_loc@best"] == 0.0


def test_per_row_columns_by_hand(annotated):
    out, paths = annotated
    r = evaluate(out, paths["csv"]).rows.set_index(["path", "rank"])
    assert r.loc[("a.jpg", 1), "gt_box_iou"] == pytest.approx(1.0)
    assert r.loc[("a.jpg", 1), "energy_in_gt"] == pytest.approx(0.4)
    assert r.loc[("b.jpg", 2), "energy_in_gt"] == pytest.approx(1.0)
    assert r.loc[("b.jpg", 1), "energy_in_gt"] == 0.0
    assert bool(r.loc[("a.jpg", 1), "pointing_hit"]) and not bool(r.loc[("c.jpg", 1), "pointing_hit"])
    assert (r["gt_boxes"] == 1).all()
    assert np.isnan(r.loc[("b.jpg", 1), "gt_box_iou"])  # no CAM box in that row


def test_the_same_boxes_in_every_format_give_identical_rows(annotated):
    out, paths = annotated
    results = {kind: evaluate(out, path) for kind, path in paths.items()}
    reference = results["csv"]
    for kind, result in results.items():
        pd.testing.assert_frame_equal(result.rows, reference.rows, obj=kind)
        same = {k: v for k, v in result.metrics.items() if k not in ("annotations", "format")}
        assert same == {k: v for k, v in reference.metrics.items() if k not in ("annotations", "format")}, kind
    assert {r.metrics["format"] for r in results.values()} == {"csv", "voc", "coco", "wsol"}


def test_a_malformed_line_makes_its_image_an_error_row(annotated, tmp_path):
    out, paths = annotated
    bad = tmp_path / "bad.csv"
    bad.write_text(paths["csv"].read_text() + "c.jpg,1,2,x,4,dog\n")
    result = evaluate(out, bad)
    assert result.problems == ["bad.csv:6: could not convert string to float: 'x'"]
    c = result.rows[result.rows["path"] == "c.jpg"]
    assert c["annotation_error"].str.contains("bad.csv:6").all() and c["gt_boxes"].isna().all()
    assert result.metrics["images"] == 3


def test_without_annotations_evaluate_says_so_in_one_line(annotated):
    out, _ = annotated
    with pytest.raises(UsageError, match="no annotations"):
        evaluate(out)
    result = CliRunner().invoke(app, ["evaluate", str(out)])
    assert result.exit_code == 2
    assert "has no annotations" in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_formats(annotated):
    import json

    out, paths = annotated
    result = CliRunner().invoke(app, ["evaluate", str(out), "--annotations", str(paths["voc"]), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["meta"]["MaxBoxAccV2"] == pytest.approx(0.75)
    assert {row["class"] for row in data["rows"]} == {"cat", "dog"}
    table = CliRunner().invoke(app, ["evaluate", str(out), "--annotations", str(paths["coco"])])
    assert table.exit_code == 0 and "MaxBoxAccV2" in table.stdout and "per class" in table.stdout


# Object boxes of the sample photos, by eye (displayed pixels), and the same boxes moved to the far corner.
OBJECTS = {
    "astronaut.png": (100, 20, 400, 511),
    "camera.png": (100, 50, 400, 450),
    "chelsea.png": (60, 10, 420, 299),
    "clock_motion.png": (50, 20, 350, 290),
    "coffee.png": (100, 20, 500, 380),
    "rocket.jpg": (250, 0, 400, 420),
}
SAMPLE_SIZES = {
    "astronaut.png": (512, 512),
    "camera.png": (512, 512),
    "chelsea.png": (451, 300),
    "clock_motion.png": (400, 300),
    "coffee.png": (600, 400),
    "rocket.jpg": (640, 427),
}


def moved(name, box):
    """The box's size shrunk to a fifth of the image, placed in the corner farthest from the box's centre."""
    w, h = SAMPLE_SIZES[name]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    bw, bh = w // 5, h // 5
    x0 = 0 if cx > w / 2 else w - 1 - bw
    y0 = 0 if cy > h / 2 else h - 1 - bh
    return (x0, y0, x0 + bw, y0 + bh)


def test_moving_every_box_to_a_wrong_place_lowers_energy_pointing_and_maxboxaccv2(sample_run, tmp_path):
    result, _ = sample_run
    right, wrong = tmp_path / "right.csv", tmp_path / "wrong.csv"
    right.write_text("path,x0,y0,x1,y1\n" + "".join(f"{n},{','.join(map(str, b))}\n" for n, b in OBJECTS.items()))
    wrong.write_text(
        "path,x0,y0,x1,y1\n" + "".join(f"{n},{','.join(map(str, moved(n, b)))}\n" for n, b in OBJECTS.items())
    )
    good, bad = evaluate(result.out, right).metrics, evaluate(result.out, wrong).metrics
    assert good["images"] == bad["images"] == len(OBJECTS)
    assert bad["energy_in_gt"] < good["energy_in_gt"] / 2
    assert bad["pointing_acc"] < good["pointing_acc"]
    assert bad["MaxBoxAccV2"] < good["MaxBoxAccV2"]


def test_run_with_annotations_fills_labels_and_writes_what_evaluate_computes(tmp_path):
    from conftest import make_folder

    import cambatch

    names = make_folder(tmp_path / "photos", 2)
    csv = tmp_path / "boxes.csv"
    csv.write_text(f"path,x0,y0,x1,y1,label\n{names[0]},10,10,80,60,tabby\n{names[1]},1,2,3\n")
    out = tmp_path / "out"
    done = cambatch.run(tmp_path / "photos", out, annotations=csv, topk=2, overlays=False, progress=False, workers=0)
    assert done.annotation_problems == ["boxes.csv:3: missing coordinates (need path,x0,y0,x1,y1)"] and done.errors == 0
    report = cambatch.load_report(out).sort_values(["path", "rank"]).reset_index(drop=True)
    first = report[report["path"] == names[0]]
    assert (first["label"] == "tabby").all() and (first["gt_boxes"] == 1).all()
    assert report[report["path"] == names[1]]["gt_boxes"].isna().all()
    rows = evaluate(out).rows.sort_values(["path", "rank"]).reset_index(drop=True)  # the run's --annotations
    for column in ("gt_box_iou", "energy_in_gt"):
        assert np.allclose(report[column].astype(float), rows[column].astype(float), equal_nan=True, atol=1e-6)
    assert report["pointing_hit"].astype("boolean").equals(rows["pointing_hit"])


def test_evaluate_maps_a_rotated_samples_truth_by_the_orientation_the_report_keeps(rotated_runs):
    import cambatch

    # cat_on_the_left (orientation 6) with the cat's box in stored pixels, as a file and in a tar shard (a sample
    # no file path reaches: it cannot be reopened)
    for given, result in rotated_runs[0].items():
        out = result.out
        report = cambatch.load_report(out).sort_values("rank").reset_index(drop=True)
        assert (report["orientation"] == 6).all()
        rows = evaluate(out).rows.sort_values("rank").reset_index(drop=True)
        assert np.allclose(report["gt_box_iou"].astype(float), rows["gt_box_iou"].astype(float), atol=1e-6), given
        assert report["pointing_hit"].astype("boolean").equals(rows["pointing_hit"]), given


def test_explain_label_row_is_scored_and_label_not_explained_is_no_longer_reported(tmp_path):
    # d's label class (dog) explained at its true rank (57) by --explain-label, its map on the box 10..20
    extra = {**rows()[-1], "rank": 57, "class_index": 1, "class_name": "dog", "map": block(10, 10, 20, 20)}
    out = write_report(tmp_path / "out", [*rows(), extra], {"explain_label": True})
    truth = write_formats(tmp_path / "truth", BOXES, LABELS, SIZES)["csv"]
    m = evaluate(out, truth).metrics
    assert "label_not_explained" not in m and m["images"] == 4
    # d's region box 10..21 (the protocol's x1 = left + width) has IoU 121/144 with 10..20 at every threshold
    assert (m["MaxBoxAcc"], m["best_threshold"]) == (0.75, 0.5)
    assert m["gt_known_loc@0.2"] == 0.5  # b and d
    assert m["top1_loc@best"] == 0.25  # d's top-1 (cat) is wrong: only a
    # without the row, the count stays (the run without --explain-label)
    assert evaluate(write_report(tmp_path / "plain", rows()), truth).metrics["label_not_explained"] == 1


def _png(path, mask):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def test_masks_give_mask_iou_and_pxap_by_hand(tmp_path):
    from pycocotools import mask as coco_mask

    def row(path, m):
        return {"path": path, "width": S, "height": S, "class_index": 0, "class_name": "cat", "map": m}

    # e: the map is the object exactly; f: a blank map (nothing above 20 % of a zero max)
    out = write_report(tmp_path / "out", [row("e.jpg", block(50, 50, 99, 99)), row("f.jpg", np.zeros((S, S)))])
    masks = {"e.jpg": block(50, 50, 99, 99) > 0, "f.jpg": block(0, 100, 49, 149) > 0}
    for name, mask in masks.items():
        _png(tmp_path / "masks" / name.replace(".jpg", ".png"), mask)
    result = evaluate(out, tmp_path / "masks")
    m = result.metrics
    assert m["MaxBoxAcc"] is None and m["masked_images"] == 2
    assert m["mask_iou"] == pytest.approx(0.5)  # 1 and 0
    # PxAP: e's 2500 object pixels score 1 (precision 1, recall 1/2); f's 2500 score 0 with every background pixel
    assert m["PxAP"] == pytest.approx(0.5 + 0.5 * 5000 / (2 * S * S))
    assert result.rows.set_index("path")["mask_iou"].to_dict() == {"e.jpg": 1.0, "f.jpg": 0.0}
    # the same masks as COCO polygons (e) and RLE (f) give the same rows and figures
    rle = coco_mask.encode(np.asfortranarray(masks["f.jpg"].astype(np.uint8)))
    coco = {
        "images": [
            {"id": 1, "file_name": "e.jpg", "width": S, "height": S},
            {"id": 2, "file_name": "f.jpg", "width": S, "height": S},
        ],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [50, 50, 50, 50],
                "segmentation": [[50, 50, 100, 50, 100, 100, 50, 100]],
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 1,
                "bbox": [0, 100, 50, 50],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            },
        ],
    }
    (tmp_path / "coco.json").write_text(__import__("json").dumps(coco))
    from_coco = evaluate(out, tmp_path / "coco.json")
    assert from_coco.metrics["PxAP"] == pytest.approx(m["PxAP"]) and from_coco.metrics["mask_iou"] == m["mask_iou"]
    assert from_coco.rows.set_index("path")["mask_iou"].to_dict() == {"e.jpg": 1.0, "f.jpg": 0.0}
    assert from_coco.metrics["MaxBoxAcc"] == 0.5  # its boxes are scored too: e's, not f's


def test_run_writes_mask_iou_gt_box_coords_and_the_label_row(tmp_path):
    import json

    from conftest import make_folder

    import cambatch

    names = make_folder(tmp_path / "photos", 2)  # 160 x 120
    polygon = [[20, 10, 100, 10, 100, 90, 20, 90]]
    coco = {
        "images": [{"id": i, "file_name": n, "width": 160, "height": 120} for i, n in enumerate(names)],
        "categories": [{"id": 1, "name": "goldfish"}],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [20, 10, 80, 80], "segmentation": polygon}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    cambatch.run(
        tmp_path / "photos",
        out,
        annotations=tmp_path / "coco.json",
        topk=2,
        explain_label=True,
        overlays=False,
        progress=False,
        workers=0,
    )
    report = cambatch.load_report(out).sort_values(["path", "rank"]).reset_index(drop=True)
    first = report[report["path"] == names[0]]
    assert len(first) == 3 and first["class_name"].iloc[2] == "goldfish" and first["rank"].iloc[2] > 2
    assert all(list(b) == [20.0, 10.0, 100.0, 90.0] for b in first["gt_box_coords"])
    assert first["mask_iou"].between(0, 1).all()
    rows = evaluate(out).rows.sort_values(["path", "rank"]).reset_index(drop=True)
    assert np.allclose(report["mask_iou"].astype(float), rows["mask_iou"].astype(float), equal_nan=True, atol=1e-6)
    m = evaluate(out).metrics
    assert "label_not_explained" not in m and m["masked_images"] == 1 and 0 <= m["PxAP"] <= 1


def test_two_inputs_holding_one_path_are_evaluated_as_two_images(tmp_path):
    import cambatch

    out = two_folders_run(tmp_path, overlays=False)
    result = evaluate(out)  # the run's --annotations: one/x.png and two/x.png
    assert result.metrics["images"] == 2 and result.metrics["gt_known_loc@0.2"] is not None
    key = ["input_root", "path", "rank"]
    rows = result.rows.sort_values(key).reset_index(drop=True)
    report = cambatch.load_report(out).sort_values(key).reset_index(drop=True)
    assert list(rows[key].itertuples(index=False)) == list(report[key].astype(object).itertuples(index=False))
    assert np.allclose(rows["gt_box_iou"], report["gt_box_iou"].astype(float), atol=1e-6)  # each its own box
    assert rows.groupby("input_root")["gt_box_iou"].nunique().to_dict() == {str(tmp_path / f): 2 for f in PHOTOS}
    # Given later, annotations naming x.png three ways: one/x.png by its INPUT, the other could be p/ or q/x.png.
    (tmp_path / "labels").mkdir()
    csv = tmp_path / "labels" / "ambiguous.csv"
    csv.write_text("path,x0,y0,x1,y1,label\none/x.png,60,10,420,299,tabby\np/x.png,1,1,9,9,cup\nq/x.png,2,2,8,8,mug\n")
    again = evaluate(out, csv)
    errors = again.rows.groupby("input_root")["annotation_error"].first().to_dict()
    assert pd.isna(errors[str(tmp_path / "one")]) and again.metrics["images"] == 1
    assert "entries 'one/x.png', 'p/x.png' and 'q/x.png' all match this image" in errors[str(tmp_path / "two")]


def test_a_box_past_the_photo_scores_as_its_visible_part_and_one_wholly_outside_is_a_problem(tmp_path):
    # chelsea.png is 451 x 300; its map and its CAM box cover the visible part of the box (100, 50, 450, 299).
    size = {"width": 451, "height": 300, "class_index": 0, "class_name": "tabby"}
    cam_box = (100 / 451, 50 / 300, 1.0, 1.0)
    rows = [
        {"path": "chelsea.png", **size, "map": block(50, 38, 223, 223), "bbox": cam_box},
        {"path": "x.png", **size, "map": block(0, 0, 10, 10)},
    ]
    out = write_report(tmp_path / "out", rows)
    past, visible = tmp_path / "past.csv", tmp_path / "visible.csv"
    past.write_text("path,x0,y0,x1,y1\nchelsea.png,100,50,900,700\nx.png,500,320,900,700\n")
    visible.write_text("path,x0,y0,x1,y1\nchelsea.png,100,50,450,299\n")
    clipped, seen = evaluate(out, past), evaluate(out, visible)
    assert clipped.metrics["MaxBoxAcc"] == seen.metrics["MaxBoxAcc"] == 1.0
    assert (
        clipped.metrics["energy_in_gt"] == pytest.approx(seen.metrics["energy_in_gt"]) and seen.metrics["images"] == 1
    )
    columns = ["gt_box_iou", "energy_in_gt", "pointing_hit"]
    both = [r.rows.set_index("path").loc[["chelsea.png"], columns] for r in (clipped, seen)]
    assert both[0].equals(both[1]) and both[0]["gt_box_iou"].item() == pytest.approx(1.0)  # IoU agrees with energy
    assert clipped.problems == ["past.csv:3: box 500,320,900,700 lies wholly outside the 451x300 image (x.png)"]
    assert clipped.rows.set_index("path").loc["x.png", "annotation_error"].startswith("bad annotation: past.csv:3")
