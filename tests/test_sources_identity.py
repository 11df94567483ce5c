"""`cambatch.sources.identity`: an image named twice is one image, and two labels for it are one error row."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pandas as pd
from conftest import SAMPLES

from cambatch.sources.discover import discover
from cambatch.sources.identity import distinct
from cambatch.sources.lists import read_list


def test_the_same_file_by_another_spelling_or_through_a_link_is_one_image(tmp_path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "a.png").write_bytes(b"x")
    os.symlink(tmp_path / "gen", tmp_path / "link")
    (tmp_path / "list.txt").write_text("gen/a.png\n./gen/a.png\ngen/../gen/a.png\nlink/a.png\n")
    found = discover([tmp_path / "gen", tmp_path / "gen", tmp_path / "link"]) + read_list(tmp_path / "list.txt")
    assert len(found) == 7
    (kept,) = distinct(found)
    assert (kept.input_root, kept.rel) == (tmp_path / "gen", "a.png")  # the first met keeps its identity


def test_copies_agree_on_a_label_or_the_image_is_an_error_naming_both(tmp_path):
    (one,) = discover([SAMPLES / "chelsea.png"])
    assert distinct([one, replace(one, label="Tabby"), replace(one, label="tabby")]) == [replace(one, label="Tabby")]
    (conflict,) = distinct([replace(one, label="cat"), one, replace(one, label="dog")])
    assert (
        conflict.label is None
        and conflict.error == "conflicting labels: the image is given 3 times, as 'cat' and 'dog'"
    )
    others = discover([SAMPLES])
    assert distinct(others) == others  # nothing named twice: nothing changes


def test_a_run_processes_a_twice_named_image_once_and_a_twice_labelled_one_as_an_error(tmp_path):
    """`cambatch run gen gen --from-list list.csv`, the list naming both images twice (`gen/a.png`, `./gen/a.png`):
    one row per image, cards and counts once each; `b.png`, listed as `espresso` and as `cup`, is an error row
    (before: its rows twice, one counted right, accuracy 1.0)."""
    import cambatch

    gen = tmp_path / "gen"
    gen.mkdir()
    shutil.copyfile(SAMPLES / "chelsea.png", gen / "a.png")
    shutil.copyfile(SAMPLES / "coffee.png", gen / "b.png")
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,label\ngen/a.png,Egyptian cat\n./gen/a.png,Egyptian cat\ngen/b.png,espresso\n./gen/b.png,cup\n"
    )
    out = tmp_path / "out"
    result = cambatch.run([gen, gen], out, from_list=listing, topk=1, progress=False, workers=0)
    assert (result.images, result.ok, result.errors) == (2, 1, 1)
    report = cambatch.load_report(out)
    assert sorted(zip(report["path"], report["status"].astype(str), strict=True)) == [
        ("a.png", "ok"),
        ("b.png", "error"),
    ]
    assert set(report["input_root"]) == {str(gen)}
    error = report.loc[report["status"] == "error", "error"].item()
    assert error == "conflicting labels: the image is given 4 times, as 'espresso' and 'cup'"
    summary = cambatch.summarize_run(out)
    assert (summary.images, summary.errors) == (1, 1)
    assert summary.table["images"].to_dict() == {"Egyptian cat": 1}
    assert summary.table["accuracy"].to_dict() == {"Egyptian cat": 1.0}
    made = cambatch.build_gallery(out)
    assert (made.images, made.errors) == (1, 1)
    assert pd.isna(report.loc[report["status"] == "error", "label"].item())
