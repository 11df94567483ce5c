"""`cambatch.layout`: every path under OUT is built there and none climbs out of it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from cambatch.layout import OutputLayout, image_key, out_folder, slug

HOSTILE = [
    "../../etc/passwd.jpg",
    "/abs/x.png",
    "a/./b/../c.jpg",
    "dir/../../up.png",
    "..",
    "../",
    "./",
    "",
    "..jpg",
    "a/...jpg",
    "a//b.jpg",
    "../escape.png",
]


@pytest.mark.parametrize(
    "rel, key",
    [
        ("dogs/husky.jpg", "dogs/husky"),
        ("x.tar.gz", "x.tar"),  # only the last extension goes
        ("noext", "noext"),
        (".hidden", ".hidden"),
        ("../../etc/passwd.jpg", "etc/passwd"),
        ("/abs/x.png", "abs/x"),
        ("a/./b/../c.jpg", "a/b/c"),
        ("", "image"),
        ("..", "image"),
        ("..jpg", "image"),  # the stem would be '.'
    ],
)
def test_image_key_drops_the_extension_and_every_way_out(rel, key):
    assert image_key(rel) == PurePosixPath(key)


@pytest.mark.parametrize("rel", HOSTILE)
def test_image_key_never_climbs_out(tmp_path, rel):
    key = image_key(rel)
    assert not key.is_absolute() and ".." not in key.parts and key.parts
    assert (tmp_path / key).resolve().is_relative_to(tmp_path.resolve())


@pytest.mark.parametrize(
    "name, expected",
    [
        ("jack-o'-lantern", "jack_o_lantern"),
        ("Egyptian cat", "egyptian_cat"),
        ("__A__B__", "a_b"),
        ("Café au lait", "caf_au_lait"),  # only [0-9a-z] survive
        ("!!!", "class"),  # nothing left: still a usable name
        ("", "class"),
    ],
)
def test_slug(name, expected):
    assert slug(name) == expected


@pytest.mark.parametrize("rel", ["dogs/husky.jpg", *HOSTILE])
def test_every_output_layout_path_stays_under_root(tmp_path, rel):
    root = tmp_path / "out"
    layout = OutputLayout(root)
    paths = [
        layout.report_dir,
        layout.overlays_dir,
        layout.runs_dir,
        layout.gallery_dir,
        layout.purge_lock,
        layout.lock_path(""),
        layout.lock_path("-shard0001of0004"),
        layout.manifest_path("20250101T000000Z-abcdef"),
        layout.report_dir / f"{layout.part_name('20250101T000000Z-abcdef', '')}-00000.parquet",
        root / layout.overlay_rel(rel, "../../evil/../name", 1),
        root / layout.overlay_rel(rel, "tabby", None),
        layout.gallery_dir / layout.gallery_rel("thumbs", rel),
        layout.gallery_dir / layout.gallery_rel("photos", rel),
    ]
    for path in paths:
        assert path.resolve().is_relative_to(root.resolve()), path
    assert layout.purge_lock.parent == layout.report_dir


def test_overlay_and_gallery_names():
    layout = OutputLayout(Path("/data/out"))
    assert layout.overlay_rel("kitchen/coffee.png", "espresso", 1) == "overlays/kitchen/coffee/top1_espresso.jpg"
    assert layout.overlay_rel("chelsea.png", "tiger cat", 3) == "overlays/chelsea/top3_tiger_cat.jpg"
    assert layout.overlay_rel("chelsea.png", "Tabby", None) == "overlays/chelsea/tabby.jpg"  # --classes: no rank
    assert layout.gallery_rel("thumbs", "a/b.png") == "thumbs/a/b.jpg"
    assert layout.part_name("RUN", "-shard0000of0002") == "part-RUN-shard0000of0002"
    assert layout.lock_path("-shard0000of0002") == Path("/data/out/.lock-shard0000of0002")
    assert layout.manifest_path("RUN") == Path("/data/out/runs/RUN.json")


def test_out_folder_from_the_folder_its_report_or_one_part(tmp_path):
    out = tmp_path / "cams"
    part = out / "report" / "part-x-00000.parquet"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"")
    assert out_folder(out) == out
    assert out_folder(out / "report") == out
    assert out_folder(part) == out
    # A run folder that happens to be called "report" (it holds report/ itself) is kept.
    named_report = tmp_path / "report"
    (named_report / "report").mkdir(parents=True)
    assert out_folder(named_report) == named_report
