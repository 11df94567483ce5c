"""`cambatch.layout`: every path under OUT is built there and none climbs out of it."""

from __future__ import annotations

import unicodedata
from pathlib import Path, PurePosixPath

import pytest

from cambatch.layout import OutputLayout, image_dir, out_folder, root_tag, slug

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
    "rel, folder",
    [
        ("dogs/husky.jpg", "dogs/husky.jpg"),  # the extension stays: a.jpg and a.png get their own folders
        ("x.tar.gz", "x.tar.gz"),
        ("noext", "noext"),
        (".hidden", ".hidden"),
        ("x/a.png", "x/a.png"),
    ],
)
def test_image_dir_is_the_relative_path_itself_when_it_is_plain(rel, folder):
    assert image_dir(rel) == PurePosixPath(folder)


@pytest.mark.parametrize("rel", HOSTILE)
def test_image_dir_never_climbs_out(tmp_path, rel):
    key = image_dir(rel)
    assert not key.is_absolute() and ".." not in key.parts and key.parts
    assert (tmp_path / key).resolve().is_relative_to(tmp_path.resolve())


def test_image_dirs_are_one_to_one_even_on_case_and_normalization_insensitive_disks():
    nfc, nfd = unicodedata.normalize("NFC", "café.jpg"), unicodedata.normalize("NFD", "café.jpg")
    rels = ["x/a.jpg", "x/a.png", "x/A.png", "X/a.png", nfc, nfd, "A.JPG", "a.jpg", "a/b.jpg", "a/./b.jpg", *HOSTILE]
    roots = ["/data/photos", "/backup/photos", "/data/Photos"]
    dirs = [image_dir(rel, root).as_posix() for rel in rels for root in roots]
    dirs += [image_dir(rel).as_posix() for rel in rels]
    assert len(set(dirs)) == len(dirs)
    # What macOS / SMB / NTFS compare: NFC and case folded. Still all distinct.
    folded = {unicodedata.normalize("NFC", d).casefold() for d in dirs}
    assert len(folded) == len(dirs)
    # ... and no folder is a prefix folder of another image's (an image folder never holds another image's).
    assert not any(a != b and b.startswith(a + "/") for a in dirs for b in dirs)
    assert image_dir("x/A.png").as_posix().startswith("x/A.png~")  # readable: the name, then a hash
    assert root_tag("/data/photos").startswith("photos~") and root_tag("/data/photos") != root_tag("/backup/photos")


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
        layout.slices_file,
        layout.slice_members_file,
        layout.purge_lock,
        layout.lock_path(""),
        layout.lock_path("-shard0001of0004"),
        layout.manifest_path("20250101T000000Z-abcdef"),
        layout.report_dir / f"{layout.part_name('20250101T000000Z-abcdef', '')}-00000.parquet",
        root / layout.overlay_rel(rel, "../../evil/../name", 1),
        root / layout.overlay_rel(rel, "tabby", None),
        root / layout.overlay_rel(rel, "tabby", 1, input_root="/../.."),
        layout.gallery_dir / layout.gallery_rel("thumbs", rel),
        layout.gallery_dir / layout.gallery_rel("photos", rel),
    ]
    for path in paths:
        assert path.resolve().is_relative_to(root.resolve()), path
    assert layout.purge_lock.parent == layout.report_dir


def test_overlay_and_gallery_names():
    layout = OutputLayout(Path("/data/out"))
    assert layout.overlay_rel("kitchen/coffee.png", "espresso", 1) == "overlays/kitchen/coffee.png/top1_espresso.jpg"
    assert layout.overlay_rel("chelsea.png", "tiger cat", 3) == "overlays/chelsea.png/top3_tiger_cat.jpg"
    # --classes: no rank, the class index instead (ImageNet has two classes called 'crane': 134 and 517)
    assert layout.overlay_rel("chelsea.png", "Tabby", None, class_index=281) == "overlays/chelsea.png/c281_tabby.jpg"
    assert layout.overlay_rel("a.png", "crane", None, class_index=134) != layout.overlay_rel(
        "a.png", "crane", None, class_index=517
    )
    several = layout.overlay_rel("a.png", "tabby", 1, input_root="/data/photos")
    assert several.startswith("overlays/photos~") and several.endswith("/a.png/top1_tabby.jpg")
    assert layout.gallery_rel("thumbs", "a/b.png") == "thumbs/a/b.png.jpg"
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
