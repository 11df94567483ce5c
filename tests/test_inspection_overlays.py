"""`cambatch overlays`: overlays of any subset rendered later from the report's maps, as `run` writes them."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import SAMPLES
from identity_support import two_folders_run
from inspecting_support import copy_run
from PIL import Image
from typer.testing import CliRunner

import cambatch
from cambatch.cli import app

runner = CliRunner()
# The one sample large enough for a reduced-scale JPEG decode: the model's input must not depend on the overlays.
DRAFTED = "hubble_deep_field.jpg"


def psnr(a, b) -> float:
    x = np.asarray(Image.open(a).convert("RGB"), float)
    y = np.asarray(Image.open(b).convert("RGB"), float)
    assert x.shape == y.shape
    mse = ((x - y) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory):
    """The sample images run again with --no-overlays."""
    out = tmp_path_factory.mktemp("bare") / "cams"
    cambatch.run(SAMPLES, out, overlays=False, workers=0, progress=False)
    return out


def jpgs(out) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in (out / "overlays").rglob("*.jpg") if p.is_file())


def test_overlays_after_a_no_overlays_run_equal_the_runs_own_for_the_selected_rows_only(sample_run, bare_run):
    assert not (bare_run / "overlays").exists()
    result = runner.invoke(app, ["overlays", str(bare_run), "--where", "rank <= 2"])
    assert result.exit_code == 0, result.output
    full = sample_run[1]
    expected = sorted(full.loc[full["rank"] <= 2, "overlay_path"])
    assert jpgs(bare_run) == expected  # the run's names, and only the selected rows
    ratios = {rel: psnr(sample_run[0].out / rel, bare_run / rel) for rel in expected}
    assert min(ratios.values()) > 40
    identical = sum((sample_run[0].out / rel).read_bytes() == (bare_run / rel).read_bytes() for rel in expected)
    assert identical >= len(expected) // 2  # most are the same bytes; the rest differ by float16 map rounding


def test_rerendering_a_runs_own_maps_matches_every_overlay_it_wrote(sample_run, tmp_path):
    out = copy_run(sample_run[0].out, tmp_path / "cams")
    shutil.rmtree(out / "overlays")
    made = cambatch.render_overlays(out)
    assert sorted(made.paths) == jpgs(sample_run[0].out) == jpgs(out)
    assert made.images == 7 and made.overlays == 21
    assert min(psnr(sample_run[0].out / rel, out / rel) for rel in made.paths) > 40


def test_the_drafted_jpegs_maps_are_the_same_with_and_without_overlays(sample_run, bare_run):
    """Why the identity above holds for every photo: the model's input never depends on the overlays."""
    top1 = int(sample_run[1].query("path == @DRAFTED").class_index.iloc[0])
    with_overlays, without = (cambatch.load_map(out, DRAFTED, top1) for out in (sample_run[0].out, bare_run))
    np.testing.assert_allclose(with_overlays, without, atol=2e-3 * float(np.abs(with_overlays).max()))


def test_class_limit_and_colormap_select_and_style(sample_run, tmp_path):
    out = copy_run(sample_run[0].out, tmp_path / "cams")
    shutil.rmtree(out / "overlays")
    top = sample_run[1][sample_run[1]["rank"] == 1]
    name = str(top["class_name"].iloc[0])
    made = cambatch.render_overlays(out, class_name=name.upper().replace(" ", "_"))
    assert made.paths == sorted(sample_run[1].loc[sample_run[1].class_name == name, "overlay_path"])
    shutil.rmtree(out / "overlays")
    result = runner.invoke(app, ["overlays", str(out), "--limit", "2", "--colormap", "viridis"])
    assert result.exit_code == 0, result.output
    first_two = sorted(set(sample_run[1].path))[:2]  # overlay folders keep the file's extension
    assert {rel.split("/")[1] for rel in jpgs(out)} == set(first_two) and len(jpgs(out)) == 6
    rel = jpgs(out)[0]
    assert psnr(sample_run[0].out / rel, out / rel) < 30  # another colormap: another picture


def test_moved_or_changed_photos_are_refused_with_one_line_and_nothing_written(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee.png", "rocket.jpg"):
        shutil.copy(SAMPLES / name, photos / name)
    out = tmp_path / "cams"
    cambatch.run(photos, out, overlays=False, workers=0, progress=False)
    stat = os.stat(photos / "coffee.png")
    os.utime(photos / "coffee.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = runner.invoke(app, ["overlays", str(out)])
    assert changed.exit_code == 2
    assert "1 of 2 photos moved or changed" in changed.stderr and len(changed.stderr.strip().splitlines()) == 1
    assert not (out / "overlays").exists()
    # Only the selected photos are checked: the unchanged one still renders.
    assert runner.invoke(app, ["overlays", str(out), "--where", "path == 'rocket.jpg'"]).exit_code == 0
    (photos / "rocket.jpg").rename(tmp_path / "rocket.jpg")
    moved = runner.invoke(app, ["overlays", str(out), "--where", "path == 'rocket.jpg'"])
    assert moved.exit_code == 2 and "is gone" in moved.stderr


def test_a_bad_where_is_one_line(sample_run):
    result = runner.invoke(app, ["overlays", str(sample_run[0].out), "--where", "no_such_column > 1"])
    assert result.exit_code == 2 and "cannot apply --where" in result.stderr


def test_two_inputs_holding_one_path_are_two_images_to_select_and_render(tmp_path):
    out = two_folders_run(tmp_path, overlays=False)
    made = cambatch.render_overlays(out, limit=1)  # the first image: INPUT one's x.png, both its classes
    assert made.images == 1 and made.overlays == 2 and len({p.split("/")[1] for p in made.paths}) == 1
    every = cambatch.render_overlays(out, where="rank == 1")
    assert every.images == 2 and len(set(every.paths)) == 2  # each INPUT's x.png its own overlay


def test_an_unknown_class_is_refused_in_one_line_not_zero_overlays(sample_run, tmp_path):
    out = copy_run(sample_run[0].out, tmp_path / "cams")
    before = jpgs(out)
    result = runner.invoke(app, ["overlays", str(out), "--class", "notaclass"])
    assert result.exit_code == 2 and "unknown class 'notaclass' (--class)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and jpgs(out) == before
    # A class the model has but no row explains is no error: nothing to render.
    known = runner.invoke(app, ["overlays", str(out), "--class", "goldfish"])
    assert known.exit_code == 0 and "0 overlays of 0 images" in known.stderr


def test_capital_and_clashing_names_are_rerendered_where_the_run_put_them(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("IMG_0001.JPG", "Coffee.png", "coffee.png"):  # the last two clash on a case-blind disk
        shutil.copy(SAMPLES / ("rocket.jpg" if name.endswith("JPG") else "coffee.png"), photos / name)
    out = tmp_path / "cams"
    cambatch.run(photos, out, topk=1, workers=0, progress=False)
    report = cambatch.load_report(out)
    folders = {
        path: overlay.split("/")[1] for path, overlay in zip(report["path"], report["overlay_path"], strict=True)
    }
    assert folders["IMG_0001.JPG"] == "IMG_0001.JPG"  # plain: nothing clashes with it
    assert folders["Coffee.png"].startswith("Coffee.png~") and folders["coffee.png"].startswith("coffee.png~")
    written = sorted(report["overlay_path"])
    shutil.rmtree(out / "overlays")
    assert cambatch.render_overlays(out).paths == sorted(written)
