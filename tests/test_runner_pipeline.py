"""`cambatch.runner.pipeline`: the whole job, on the real default model over real photos.

Resume after kill -9 and SIGINT, incremental reruns, shards, lists and labels, manifests; what a run
over the sample images reports and draws; EXIF orientation and broken files end to end; a messy,
hostile corpus (generated here) where every good image gets its rows, every bad one exactly one
readable error row, and the run neither crashes, hangs nor eats memory.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
import unicodedata
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLES, make_folder
from PIL import Image
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.config import RunConfig
from cambatch.data.preprocess import ImageFiles
from cambatch.errors import UsageError
from cambatch.report.parts import published_parts as parts
from cambatch.report.parts import read_settings
from cambatch.runner.inputs import find_sources
from cambatch.runner.job import build_stages, new_run_id, preprocess, resolve_classes
from cambatch.runner.pipeline import run

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}

# The column contract analysts rely on, with Arrow types.
CONTRACT = {
    "path": pa.string(),
    "input_root": pa.string(),
    "width": pa.int32(),
    "height": pa.int32(),
    "rank": pa.int16(),
    "class_index": pa.int32(),
    "class_name": pa.string(),
    "probability": pa.float32(),
    "logit": pa.float32(),
    "cam_max": pa.float32(),
    "cam_mean": pa.float32(),
    "cam_std": pa.float32(),
    "peak_x": pa.float32(),
    "peak_y": pa.float32(),
    "centroid_x": pa.float32(),
    "centroid_y": pa.float32(),
    "active_area": pa.float32(),
    "bbox_x0": pa.float32(),
    "bbox_y0": pa.float32(),
    "bbox_x1": pa.float32(),
    "bbox_y1": pa.float32(),
    "border_energy": pa.float32(),
    "entropy": pa.float32(),
    "overlay_path": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "model": pa.string(),
    "method": pa.string(),
    "run_id": pa.string(),
}


GOOD = {
    "cmyk.jpg",
    "gray16.png",
    "grayscale.png",
    "rgba.png",
    "palette.gif",
    "animated.gif",
    "orient3.jpg",
    "orient6.jpg",
    "orient8.jpg",
    "tiny8.png",
    "wide4000x40.png",
    "unicode café 猫.jpg",
    "name with  spaces.JPEG",
    "UPPER.PNG",
    "sub/deeper/nested.webp",
}
PEAK_MEMORY_WRAPPER = """
import re, sys
from cambatch.cli import main
sys.argv = ["cambatch", *sys.argv[1:]]
try:
    main()
finally:
    status = open("/proc/self/status").read()
    print("VmHWM_kB=" + re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
"""
BAD = {
    "truncated.jpg": "truncated",
    "zero.jpg": "empty file",
    "text.jpg": "not a readable image",
    "bomb.png": "decompression-bomb",
}


# ---- resume, reruns, shards, lists, labels, manifests ----


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cambatch", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for_parts(report: Path, count: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if report.is_dir() and len(parts(report)) >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no report part was published in time")


def assert_exactly_once(out: Path, names: list[str], topk: int) -> pd.DataFrame:
    df = pd.read_parquet(out / "report")
    assert sorted(df.path.unique()) == sorted(names)
    assert (df.groupby("path").size() == topk).all(), df.groupby("path").size()
    assert not df.duplicated(["path", "rank"]).any()
    for overlay in df.overlay_path.dropna():
        assert (out / overlay).is_file(), overlay
    return df


def test_kill_9_then_rerun_gives_every_image_exactly_once(tmp_path):
    names = make_folder(tmp_path / "photos", 16)
    out = tmp_path / "out"
    args = [
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "--images-per-part",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--topk",
        "2",
    ]
    proc = cli(*args)
    wait_for_parts(out / "report", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    published = pd.read_parquet(out / "report")
    first_run = set(published.run_id)
    assert len(first_run) == 1 and 0 < published.path.nunique() < len(names)

    rerun = cli(*args)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert f"{published.path.nunique()} already done" in stderr
    df = assert_exactly_once(out, names, topk=2)
    kept = df[df.path.isin(published.path)]
    assert set(kept.run_id) == first_run  # finished work was not redone


def test_sigint_finishes_in_flight_work_exits_130_and_resumes(tmp_path):
    names = make_folder(tmp_path / "photos", 24)
    out = tmp_path / "out"
    args = [
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "--images-per-part",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--topk",
        "1",
    ]
    proc = cli(*args)
    wait_for_parts(out / "report", 1, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "interrupted by SIGINT" in stderr and "Traceback" not in stderr
    partial = pd.read_parquet(out / "report")
    assert 0 < partial.path.nunique() < len(names)
    assert (partial.groupby("path").size() == 1).all()
    runs = list((out / "runs").glob("*.json"))
    assert len(runs) == 1 and '"status": "interrupted"' in runs[0].read_text()

    rerun = cli(*args)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert_exactly_once(out, names, topk=1)


def test_incremental_rerun_processes_only_new_and_changed_images(tmp_path):
    photos = tmp_path / "photos"
    names = make_folder(photos, 4)
    out = tmp_path / "out"
    config = RunConfig.create(inputs=[photos], out=out, workers=0, topk=2)
    first = run(config)
    assert (first.ok, first.skipped) == (4, 0)

    Image.open(SAMPLES / "coffee.png").convert("RGB").resize((120, 80)).save(photos / "new.jpg")
    second = run(config)
    assert (second.ok, second.skipped) == (1, 4)

    Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((90, 60)).save(photos / names[0])  # changed content
    third = run(config)
    assert (third.ok, third.skipped) == (1, 4)
    df = assert_exactly_once(out, names + ["new.jpg"], topk=2)
    assert set(df[df.path == names[0]].run_id) == {third.run_id}
    assert set(df[df.path == names[0]].width) == {90}

    again = run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=2, overwrite=True))
    assert (again.ok, again.skipped) == (5, 0)
    assert set(assert_exactly_once(out, names + ["new.jpg"], topk=2).run_id) == {again.run_id}


def test_errors_are_retried_only_when_asked(tmp_path):
    photos = tmp_path / "photos"
    make_folder(photos, 2)
    (photos / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    assert run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=1)).errors == 1
    assert run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=1)).skipped == 3
    retried = run(RunConfig.create(inputs=[photos], out=out, workers=0, topk=1, retry_errors=True))
    assert (retried.errors, retried.skipped) == (1, 2)
    df = pd.read_parquet(out / "report")
    assert (df.path == "broken.jpg").sum() == 1 and set(df[df.path == "broken.jpg"].run_id) == {retried.run_id}


def test_shards_union_equals_a_single_run(tmp_path):
    photos = tmp_path / "photos"
    make_folder(photos, 9, side=96)
    common = dict(inputs=[photos], workers=0, topk=2, overlays=False)
    full = pd.read_parquet(run(RunConfig.create(out=tmp_path / "full", **common)).report)
    results = [run(RunConfig.create(out=tmp_path / "sharded", shard=f"{i}/3", **common)) for i in range(3)]
    assert sum(r.ok for r in results) == 9 and all(r.ok > 0 for r in results)
    sharded = pd.read_parquet(tmp_path / "sharded" / "report")
    key = ["path", "rank", "class_index"]
    assert not sharded.duplicated(["path", "rank"]).any()
    pd.testing.assert_frame_equal(
        sharded[key].sort_values(key).reset_index(drop=True), full[key].sort_values(key).reset_index(drop=True)
    )
    assert len({p.name for p in parts(tmp_path / "sharded" / "report")}) == 3


def test_list_inputs_labels_and_correct(tmp_path):
    photos = tmp_path / "data"
    photos.mkdir()
    for name in ["coffee.png", "chelsea.png"]:
        (photos / name).write_bytes((SAMPLES / name).read_bytes())
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,label\ndata/coffee.png,Espresso\ndata/chelsea.png,tabby\ndata/missing.jpg,cup\n../escape.png,\n"
    )
    (tmp_path.parent / "escape.png").write_bytes((SAMPLES / "camera.png").read_bytes())
    out = tmp_path / "out"
    result = run(RunConfig.create(inputs=[], from_list=listing, out=out, workers=0, topk=2))
    df = pd.read_parquet(out / "report")
    assert result.ok == 3 and result.errors == 1
    assert set(df.input_root) == {str(tmp_path)}
    coffee = df[df.path == "data/coffee.png"]
    assert set(coffee.label) == {"Espresso"} and coffee.correct.all()  # case-blind match on every row
    assert not df[df.path == "data/chelsea.png"].correct.any()  # top-1 is another cat class
    missing = df[df.path == "data/missing.jpg"].iloc[0]
    assert missing.status == "error" and "No such file" in missing.error and missing.label == "cup"
    escaped = df[df.path.str.endswith("escape.png")]
    assert escaped.correct.isna().all() and escaped.label.isna().all()
    for overlay in escaped.overlay_path:
        assert (out / overlay).resolve().is_relative_to(out.resolve())  # never outside OUT

    txt = tmp_path / "list.txt"
    txt.write_text("# a comment\ndata/coffee.png\n\n")
    assert run(RunConfig.create(inputs=[], from_list=txt, out=tmp_path / "out_txt", workers=0)).ok == 1


def test_a_multi_label_densenet_reports_sigmoids_ranked_by_logit_and_correct_by_label_set(tmp_path):
    """CheXNet's setting: densenet121 with 14 sigmoid outputs (random init here), labels `a|b`."""
    findings = [f"finding_{i}" for i in range(14)]
    (tmp_path / "classes.txt").write_text("\n".join(findings) + "\n")
    for name in ["coffee.png", "chelsea.png"]:
        (tmp_path / name).write_bytes((SAMPLES / name).read_bytes())
    everything = "|".join(reversed(findings))  # the set, in any order
    (tmp_path / "list.csv").write_text(f"path,label\ncoffee.png,{everything}\nchelsea.png,finding_0|finding_3\n")
    options = dict(model="densenet121", weights="none", num_classes=14, class_names=tmp_path / "classes.txt")
    result = run(
        RunConfig.create(
            inputs=[],
            from_list=tmp_path / "list.csv",
            out=tmp_path / "out",
            workers=0,
            overlays=False,
            topk=14,
            activation="sigmoid",
            threshold=0.0,
            **options,  # every class predicted: the full set is correct
        )
    )
    assert result.ok == 2 and result.multi_label
    df = pd.read_parquet(tmp_path / "out" / "report").sort_values(["path", "rank"])
    for _, rows in df.groupby("path"):
        assert set(rows.class_name) == set(findings)
        assert abs(rows.probability.sum() - 1) > 0.1  # per-class probabilities, not a softmax
        np.testing.assert_allclose(rows.probability, 1 / (1 + np.exp(-rows.logit)), rtol=1e-5)
        assert (np.diff(rows.logit.to_numpy()) <= 0).all() and list(rows["rank"]) == list(range(1, 15))
    assert df.groupby("path").correct.all().to_dict() == {"chelsea.png": False, "coffee.png": True}
    assert read_settings(tmp_path / "out")["activation"] == "sigmoid"
    assert read_settings(tmp_path / "out")["threshold"] == 0.0


def test_labels_from_dirs(tmp_path):
    for label, name in [("espresso", "coffee.png"), ("Egyptian_cat", "chelsea.png"), ("dog", "camera.png")]:
        (tmp_path / "train" / label).mkdir(parents=True)
        (tmp_path / "train" / label / name).write_bytes((SAMPLES / name).read_bytes())
    out = tmp_path / "out"
    run(RunConfig.create(inputs=[tmp_path / "train"], out=out, workers=0, labels_from_dirs=True, overlays=False))
    df = pd.read_parquet(out / "report")
    per_image = df.groupby("path").agg(label=("label", "first"), correct=("correct", "all"))
    assert per_image.to_dict("index") == {
        "Egyptian_cat/chelsea.png": {"label": "Egyptian_cat", "correct": True},
        "dog/camera.png": {"label": "dog", "correct": False},
        "espresso/coffee.png": {"label": "espresso", "correct": True},
    }


def test_explain_label_adds_the_label_class_at_its_true_rank(tmp_path, default_model):
    for name in ["coffee.png", "chelsea.png", "camera.png"]:
        (tmp_path / name).write_bytes((SAMPLES / name).read_bytes())
    listing = tmp_path / "list.csv"
    # coffee's label is its top-1 class (no extra row); chelsea's and camera's are far down their predictions
    listing.write_text("path,label\ncoffee.png,espresso\nchelsea.png,goldfish\ncamera.png,tabby\n")
    out = tmp_path / "out"
    run(RunConfig.create(inputs=[], from_list=listing, out=out, workers=0, topk=2, explain_label=True))
    df = pd.read_parquet(out / "report")
    assert df.groupby("path").size().to_dict() == {"camera.png": 3, "chelsea.png": 3, "coffee.png": 2}
    for path, label in [("chelsea.png", "goldfish"), ("camera.png", "tabby")]:
        extra = df[(df.path == path) & (df["rank"] > 2)]
        assert len(extra) == 1 and extra.class_name.iloc[0] == label
        row = extra.iloc[0]
        index = default_model.class_names.index(label)
        assert row.class_index == index and not row.correct
        top = df[(df.path == path) & (df["rank"] == 1)].iloc[0]
        assert row.probability < top.probability and row["rank"] > 2
        bias = float(default_model.head.bias.detach()[index])
        assert abs(float(np.asarray(row["map"], np.float32).mean()) + bias - row.logit) < 0.02  # its own class's CAM
        assert (out / row.overlay_path).is_file() and f"top{row['rank']}_" in row.overlay_path
    assert read_settings(out)["explain_label"] is True
    # a rerun without the option would keep rows made with it: refused
    with pytest.raises(UsageError, match=r"explain_label \(--explain-label\): True there, False now"):
        run(RunConfig.create(inputs=[], from_list=listing, out=out, workers=0, topk=2))
    with pytest.raises(UsageError, match="needs labels"):
        run(RunConfig.create([SAMPLES / "coffee.png"], tmp_path / "nolabel", workers=0, explain_label=True))


def test_runs_lists_manifests(tmp_path):
    make_folder(tmp_path / "photos", 2)
    out = tmp_path / "out"
    first = run(RunConfig.create(inputs=[tmp_path / "photos"], out=out, workers=0, overlays=False))
    manifest = (out / "runs" / f"{first.run_id}.json").read_text()
    for field in ['"status": "completed"', '"ok": 2', '"torchvision"', '"weights_sha256"', '"images_per_s"']:
        assert field in manifest
    listing = CliRunner().invoke(app, ["runs", str(out)], env={"COLUMNS": "250"})
    assert listing.exit_code == 0 and first.run_id in listing.output and "completed" in listing.output


# ---- the sample images: predictions, the report contract, overlays ----


def top1(df, path):
    rows = df[(df.path == path) & (df["rank"] == 1)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_known_top1_predictions(sample_run):
    _, df = sample_run
    assert top1(df, "coffee.png").class_name == "espresso"
    assert top1(df, "chelsea.png").class_name in CAT_CLASSES
    assert top1(df, "camera.png").class_name == "tripod"


def test_one_row_per_image_and_class(sample_run):
    result, df = sample_run
    images = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in {".png", ".jpg"})
    assert result.ok == len(images) and result.errors == 0
    assert sorted(df.path.unique()) == images
    assert len(df) == 3 * len(images)
    for _, group in df.groupby("path"):
        assert list(group.sort_values("rank")["rank"]) == [1, 2, 3]
        probs = group.sort_values("rank").probability.to_numpy()
        assert np.all(np.diff(probs) <= 0)  # ranks follow probability
    assert (df.status == "ok").all() and df.error.isna().all()
    assert set(df.model) == {"efficientnet_lite0"} and set(df.method) == {"cam"}
    assert set(df.run_id) == {result.run_id}
    assert set(df.input_root) == {str(SAMPLES)}


def test_column_contract_and_types(sample_run):
    result, _ = sample_run
    schema = pq.read_schema(next(result.report.glob("*.parquet")))
    for name, arrow_type in CONTRACT.items():
        assert schema.field(name).type == arrow_type, name


def test_statistics_are_in_range(sample_run):
    _, df = sample_run
    for col in [
        "peak_x",
        "peak_y",
        "centroid_x",
        "centroid_y",
        "active_area",
        "border_energy",
        "entropy",
        "bbox_x0",
        "bbox_y0",
        "bbox_x1",
        "bbox_y1",
    ]:
        assert df[col].between(0, 1).all(), col
    assert (df.bbox_x0 < df.bbox_x1).all() and (df.bbox_y0 < df.bbox_y1).all()
    assert (df.cam_max >= df.cam_mean).all()
    assert np.allclose(df.probability.groupby(df.path).sum().le(1.0 + 1e-6), True)


def test_cam_mean_plus_bias_is_logit_in_report(sample_run, default_model):
    _, df = sample_run
    bias = default_model.head.bias.detach().numpy()[df.class_index.to_numpy()]
    np.testing.assert_allclose(df.cam_mean + bias, df.logit, atol=2e-3, rtol=1e-4)


def test_overlays_exist_at_photo_size(sample_run):
    result, df = sample_run
    for row in df.itertuples():
        path = result.out / row.overlay_path
        assert path.is_file()
        with Image.open(path) as overlay:
            assert overlay.size == (row.width, row.height)  # all samples are under the 1024 cap
        assert re.fullmatch(rf"overlays/{re.escape(row.path)}/top{row.rank}_[a-z0-9_]+\.jpg", row.overlay_path)
    coffee = df[(df.path == "coffee.png") & (df["rank"] == 1)].iloc[0]
    assert coffee.overlay_path == "overlays/coffee.png/top1_espresso.jpg"


def test_heat_sits_on_the_object(sample_run):
    """The cat fills chelsea.png's middle; the espresso cup sits in coffee.png's upper middle."""
    _, df = sample_run
    cat = top1(df, "chelsea.png")
    assert 0.2 < cat.centroid_x < 0.8 and 0.2 < cat.centroid_y < 0.8
    cup = top1(df, "coffee.png")
    assert 0.25 < cup.peak_x < 0.75 and cup.peak_y < 0.6
    assert cup.bbox_x0 > 0.05 and cup.bbox_x1 < 0.95  # the box holds the cup, not the whole table


def test_kept_maps_are_raw_and_match_the_report(sample_run, default_model):
    result, df = sample_run
    for row in df[df.path == "coffee.png"].itertuples():
        assert (row.map_height, row.map_width) == (7, 7) and row.map.dtype == np.float16 and row.map.shape == (49,)
        cam = row.map.astype(np.float32)
        bias = float(default_model.head.bias.detach()[row.class_index])
        assert abs(float(cam.mean()) + bias - row.logit) < 0.02
        assert abs(float(cam.max()) - row.cam_max) < 0.02


def test_parquet_metadata_records_the_run(sample_run):
    result, _ = sample_run
    settings = read_settings(result.report)
    assert settings["model"] == "efficientnet_lite0"
    assert settings["method"] == "cam" and settings["topk"] == 3
    assert settings["input_size"] == 224 and settings["mean"] == [0.5, 0.5, 0.5]
    assert settings["interpolation"] == "bilinear"  # the embedded Lite0 weights' resize
    assert len(settings["class_names"]) == 1000 and settings["class_names"][967] == "espresso"
    assert settings["run_id"] == result.run_id and settings["torch_version"] and settings["cambatch_version"]


# ---- decoding end to end: EXIF orientation, broken files ----


def test_exif_rotation_gives_a_portrait_overlay_that_lines_up(rotated_runs):
    # cat_on_the_left, orientation 6: displayed turned 90 deg clockwise, left -> top
    result = rotated_runs[0]["photos"]
    out = result.out
    row = pd.read_parquet(out / "report").query("rank == 1").iloc[0]
    assert (row.width, row.height) == (200, 600)
    assert row.class_name in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
    assert row.centroid_y < 0.5 and row.peak_y < 0.5  # the cat is at the top of the upright photo
    overlay = np.asarray(Image.open(out / row.overlay_path).convert("RGB"), dtype=np.float32)
    assert overlay.shape == (600, 200, 3)
    # Jet makes heat red and cold blue; the upright photo's hot half is its top.
    redness = overlay[..., 0] - overlay[..., 2]
    assert redness[:300].mean() > redness[300:].mean() + 20
    assert result.ok == 1


def test_ground_truth_of_a_rotated_sample_is_oriented_from_the_decode_without_a_second_read(rotated_runs):
    # the cat's box, 0,0,299,199 in stored pixels, of the sample as a file (photos) and in a tar shard (shards)
    results, reads = rotated_runs
    coords = {}
    for given, result in results.items():
        row = pd.read_parquet(result.out / "report").query("rank == 1").iloc[0]
        coords[given] = list(row.gt_box_coords)
    # Turned 90 deg clockwise, the stored left half (x 0-299 of 600, y 0-199) is the displayed top (200 x 300).
    assert coords["photos"] == coords["shards"] == [0.0, 0.0, 199.0, 299.0]
    assert reads == ["rotated.jpg", "s.tar/rotated.jpg"]  # each sample read once, by the loader


def test_broken_files_are_one_error_row_each_and_the_rest_succeed(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ["coffee.png", "chelsea.png"]:
        (photos / name).write_bytes((SAMPLES / name).read_bytes())
    whole = (SAMPLES / "rocket.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.JPG").write_text("this is text, not a picture")
    (photos / "README.txt").write_text("not an image extension: skipped silently")
    out = tmp_path / "out"
    result = run(RunConfig.create(inputs=[photos], out=out, workers=1, batch_size=2))
    df = pd.read_parquet(out / "report")
    assert result.ok == 2 and result.errors == 3
    errors = df[df.status == "error"].set_index("path")
    assert sorted(errors.index) == ["empty.png", "notes.JPG", "truncated.jpg"]
    assert errors.loc["empty.png", "error"] == "empty file (0 bytes)"
    assert "not a readable image" in errors.loc["notes.JPG", "error"]
    assert "truncated" in errors.loc["truncated.jpg", "error"]
    assert errors.class_name.isna().all() and errors.overlay_path.isna().all()
    ok = df[df.status == "ok"]
    assert sorted(ok.path.unique()) == ["chelsea.png", "coffee.png"] and len(ok) == 6
    assert ok[ok["rank"] == 1].set_index("path").loc["coffee.png", "class_name"] == "espresso"


# ---- a hostile corpus ----


def png_bomb(side: int) -> bytes:
    """A black 1-bit PNG of side x side pixels in a few hundred kilobytes, streamed (never held
    whole): decoding it would need side^2 bytes as grayscale, three times that as RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def build_corpus(root: Path) -> None:
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((200, 133))
    cat.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.asarray(cat.convert("L"), dtype=np.uint16) * 257).save(root / "gray16.png")
    cat.convert("L").save(root / "grayscale.png")
    cat.convert("RGBA").save(root / "rgba.png")
    cat.convert("P").save(root / "palette.gif")
    frames = [cat, cat.rotate(180)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        cat.save(root / f"orient{orientation}.jpg", exif=exif)
    cat.resize((8, 8)).save(root / "tiny8.png")
    cat.resize((4000, 40)).save(root / "wide4000x40.png")
    cat.save(root / "unicode café 猫.jpg")
    cat.save(root / "name with  spaces.JPEG", format="JPEG")
    cat.save(root / "UPPER.PNG", format="PNG")
    (root / "sub" / "deeper").mkdir(parents=True)
    cat.save(root / "sub" / "deeper" / "nested.webp")
    data = (SAMPLES / "rocket.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("just some text pretending to be a photo\n")
    (root / "bomb.png").write_bytes(png_bomb(40000))
    (root / "notes.md").write_text("not an image: skipped")
    os.symlink(root, root / "sub" / "loop")  # a symlink loop back to the top


def test_hostile_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    build_corpus(corpus)
    out = corpus / "cams"  # --out inside the input
    # Decode in the process itself (--workers 0) and report its own peak memory (VmHWM) at exit.
    command = [
        sys.executable,
        "-c",
        PEAK_MEMORY_WRAPPER,
        "run",
        str(corpus),
        "--out",
        str(out),
        "--topk",
        "2",
        "--workers",
        "0",
        "--batch-size",
        "4",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    peak_mb = int(first.stderr.rsplit("VmHWM_kB=", 1)[1].split()[0]) / 1024
    assert peak_mb < 1800, f"peak RSS {peak_mb:.0f} MB: something decoded the bomb"

    df = pd.read_parquet(out / "report")
    ok, errors = df[df.status == "ok"], df[df.status == "error"]
    assert set(ok.path) == GOOD and (ok.groupby("path").size() == 2).all()
    assert set(errors.path) == set(BAD) and len(errors) == len(BAD)
    for path, reason in BAD.items():
        assert reason in errors.set_index("path").loc[path, "error"]
    for overlay in ok.overlay_path:
        assert (out / overlay).is_file()

    sizes = ok.groupby("path")[["width", "height"]].first()
    assert tuple(sizes.loc["orient6.jpg"]) == (133, 200) and tuple(sizes.loc["orient8.jpg"]) == (133, 200)
    assert tuple(sizes.loc["orient3.jpg"]) == (200, 133) and tuple(sizes.loc["wide4000x40.png"]) == (4000, 40)
    with Image.open(out / ok[ok.path == "wide4000x40.png"].overlay_path.iloc[0]) as wide:
        assert wide.size == (1024, 10)

    # A rerun reads nothing back from its own output folder and finds everything done.
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and f"{len(GOOD) + len(BAD)} already done" in second.stderr
    assert len(pd.read_parquet(out / "report")) == len(df)


# ---- settings refused before any work; run ids, classes, sources ----


def test_run_refuses_bad_speed_options_before_any_work(tmp_path):
    from cambatch.config import RunConfig
    from cambatch.runner.pipeline import run

    for options, message in (
        ({"precision": "fp64"}, "precision"),
        ({"gpu_decode": "always"}, "gpu-decode"),
        ({"threads": 0}, "threads"),
    ):
        with pytest.raises(UsageError, match=message):
            run(RunConfig.create(inputs=[SAMPLES], out=tmp_path / "out", **options))
    assert not (tmp_path / "out").exists()


def test_run_ids_start_with_the_utc_start_time_and_sort_by_age():
    first = new_run_id(datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert re.fullmatch(r"20250102T030405Z-[0-9a-f]{6}", first)
    later = new_run_id(datetime(2025, 1, 10, 0, 0, 0, tzinfo=timezone.utc))
    assert sorted([later, first]) == [first, later]
    assert len({new_run_id(datetime(2025, 1, 2, tzinfo=timezone.utc)) for _ in range(20)}) == 20  # same second


def test_resolve_classes_by_name_or_index():
    names = ["tabby", "tiger cat", "espresso", "12"]
    assert resolve_classes(("Espresso", "0", "Tiger_Cat"), names) == [2, 0, 1]
    assert resolve_classes(("tabby", "0", "TABBY"), names) == [0]  # one class, asked three ways: once
    assert resolve_classes(("12",), names) == [3]  # not an index (only 4 classes): the name
    for unknown in ("unicorn", "4"):
        with pytest.raises(UsageError, match=f"unknown class '{unknown}'.*an index below 4"):
            resolve_classes((unknown,), names)


def test_a_class_name_several_classes_share_is_refused_with_their_indices():
    names = ["tabby", "crane", "espresso", "Crane"]  # ImageNet: 134 the bird, 517 the machine
    with pytest.raises(UsageError, match="class name 'crane' .* names 2 classes, indices 1, 3: give the index"):
        resolve_classes(("crane",), names)
    assert resolve_classes(("3", "1"), names) == [3, 1]  # each by its index


def test_find_sources_takes_the_inputs_and_the_list_but_never_the_output_folder(tmp_path):
    photos = tmp_path / "photos"
    make_folder(photos / "cats", 1, side=32)
    make_folder(photos / "dogs", 1, side=32)
    out = photos / "cams"
    make_folder(out / "overlays", 1, side=32)  # a run's own output inside the input
    listing = tmp_path / "list.txt"
    listing.write_text("extra/one.jpg\n")
    config = RunConfig.create([photos], out, from_list=listing, labels_from_dirs=True)
    found = find_sources(config, out)
    assert [(s.rel, s.label) for s in found] == [
        ("cats/img_000.jpg", "cats"),
        ("dogs/img_000.jpg", "dogs"),
        ("extra/one.jpg", None),  # listed images keep the list's labels (none here)
    ]
    assert found[-1].input_root == tmp_path
    only_list = find_sources(RunConfig.create(None, out, from_list=listing), out)
    assert [s.rel for s in only_list] == ["extra/one.jpg"]


def _similarity(overlay_file: Path, photo: Image.Image) -> float:
    """Pearson r of the overlay and a photo, in gray, at the overlay's size: its own photo shows through."""
    with Image.open(overlay_file) as drawn:
        drawn.load()
        a = np.asarray(drawn.convert("L"), dtype=np.float64).ravel()
        b = np.asarray(photo.convert("L").resize(drawn.size), dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_outputs_are_one_to_one_with_inputs_across_extensions_roots_case_and_normalization(tmp_path):
    """x/a.jpg and x/a.png in one INPUT, x/a.png in another, names that differ by case or NFC/NFD:
    one overlay folder each, and every row's overlay is drawn over its own photo."""
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB")
    nfc, nfd = (unicodedata.normalize(form, "caf\u00e9.png") for form in ("NFC", "NFD"))
    photos = {
        ("one", "x/a.jpg"): cat,
        ("one", "x/a.png"): cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        ("two", "x/a.png"): cat.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        ("two", "x/A.png"): cat.transpose(Image.Transpose.ROTATE_180),
        ("two", nfc): cat.crop((0, 0, 300, 300)),
        ("two", nfd): cat.crop((150, 0, 451, 300)),
    }
    for (root, rel), picture in photos.items():
        (tmp_path / root / rel).parent.mkdir(parents=True, exist_ok=True)
        picture.save(tmp_path / root / rel, quality=95)
    out = tmp_path / "out"
    run(RunConfig.create(inputs=[tmp_path / "one", tmp_path / "two"], out=out, topk=2, workers=0))
    df = pd.read_parquet(out / "report")
    assert len(df) == 2 * len(photos) and (df.status == "ok").all()
    assert df.overlay_path.is_unique
    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / "overlays").rglob("*") if p.is_file())
    assert on_disk == sorted(df.overlay_path)  # nothing overwritten, nothing left over
    folded = {unicodedata.normalize("NFC", p).casefold() for p in on_disk}
    assert len(folded) == len(on_disk)  # distinct on a case- and normalization-insensitive disk too
    for row in df.itertuples():
        root = Path(row.input_root).name
        own = _similarity(out / row.overlay_path, photos[(root, row.path)])
        others = [_similarity(out / row.overlay_path, p) for key, p in photos.items() if key != (root, row.path)]
        assert own > max(others) + 0.05, (row.overlay_path, own, others)


def test_predictions_depend_only_on_the_image_and_the_model_settings(tmp_path):
    """Overlays or not, another --max-side, batch size 1 or 16: the same probabilities and statistics."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, side in enumerate((64, 200, 333, 700, 1280, 2100)):
        picture = Image.open(SAMPLES / "chelsea.png" if i % 2 else SAMPLES / "rocket.jpg").convert("RGB")
        picture.resize((side, int(side * (0.6 + 0.15 * i)))).save(photos / f"size_{side}.jpg", quality=85)
    variants = {
        "overlays": {},
        "no_overlays": {"overlays": False},
        "max_side_300": {"max_side": 300},
        "batch_1": {"batch_size": 1},
        "batch_16": {"batch_size": 16, "overlays": False},
    }
    reports = {}
    for name, options in variants.items():
        out = tmp_path / name
        run(RunConfig.create(inputs=[SAMPLES, photos], out=out, workers=0, threads=1, **options))
        reports[name] = pd.read_parquet(out / "report").sort_values(["input_root", "path", "rank"]).reset_index()
    reference = reports["overlays"]
    assert len(reference) == 3 * 13 and (reference.status == "ok").all()
    statistics = ["logit", "cam_max", "cam_mean", "cam_std", "peak_x", "peak_y", "centroid_x", "centroid_y"]
    statistics += ["active_area", "border_energy", "entropy", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]
    for name, df in reports.items():
        assert df.class_index.tolist() == reference.class_index.tolist(), name
        worst = float(np.abs(df.probability - reference.probability).max())
        assert worst <= 1e-5, (name, worst)
        for column in statistics:
            np.testing.assert_allclose(df[column], reference[column], rtol=1e-4, atol=1e-4, err_msg=f"{name} {column}")


def test_a_timm_models_input_is_timms_own_eval_transform_without_its_crop(tmp_path):
    """ViT-tiny's config: bicubic, mean = std = 0.5. cambatch resizes the whole image (no crop): timm's
    transform with crop_pct 1 and crop_mode squash. The same PIL resize of the same pixels, so the two
    differ only by float32 rounding of the normalization (x - 127.5) / 127.5 vs (x / 255 - 0.5) / 0.5,
    about 6e-8 (measured); a bilinear resize would differ by up to ~0.26. Both photos decode at full
    scale for 224 (a larger JPEG would decode at a reduced scale, which timm's transform does not do).
    """
    from timm.data import create_transform, resolve_data_config

    config = RunConfig.create(
        SAMPLES, tmp_path / "out", model="timm:vit_tiny_patch16_224", weights="none", method="gradcam", device="cpu"
    )
    stages = build_stages(config)
    prep = preprocess(config, stages)
    assert prep.interpolation == "bicubic" and prep.image_size == 224
    timm_config = {**resolve_data_config(model=stages.model.network), "crop_pct": 1.0, "crop_mode": "squash"}
    theirs = create_transform(**timm_config)
    bilinear = create_transform(**{**timm_config, "interpolation": "bilinear"})
    sources = [s for s in find_sources(config, tmp_path / "out") if s.rel in ("chelsea.png", "rocket.jpg")]
    files = ImageFiles(sources, prep)
    for index, source in enumerate(sources):
        ours = stages.engine.normalize(files[index].pixels[None])[0]
        photo = Image.open(source.path).convert("RGB")
        assert (ours - theirs(photo)).abs().max() < 1e-6, source.rel
        assert (ours - bilinear(photo)).abs().max() > 0.02, source.rel
