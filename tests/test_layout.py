"""`cambatch.layout`: every path under OUT is built there and none climbs out of it."""

from __future__ import annotations

import unicodedata
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cambatch.layout import (
    NAME_BYTES,
    ImageNames,
    OutputLayout,
    clash_key,
    folded_paths,
    image_dir,
    is_out_folder,
    out_folder,
    root_tag,
    slug,
)

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
    several = ImageNames.of((root, rel) for rel in rels for root in roots)
    one = ImageNames.of(("/data/photos", rel) for rel in rels)
    dirs = [several.folder(root, rel).as_posix() for rel in rels for root in roots]
    assert several.several_roots and not one.several_roots
    for run in ([d for d in dirs], [one.folder("/data/photos", rel).as_posix() for rel in rels]):
        assert len(set(run)) == len(run)
        # What macOS / SMB / NTFS compare: NFC and case folded. Still all distinct.
        assert len({unicodedata.normalize("NFC", d).casefold() for d in run}) == len(run)
        # ... and no folder is a prefix folder of another image's (an image folder never holds another image's).
        assert not any(a != b and b.startswith(a + "/") for a in run for b in run)
    assert one.folder("/data/photos", "x/A.png").as_posix().startswith("x/A.png~")  # readable: the name, a hash
    assert root_tag("/data/photos").startswith("photos~") and root_tag("/data/photos") != root_tag("/backup/photos")


def test_a_capital_letter_alone_adds_no_hash_only_a_real_collision_does():
    names = ImageNames.of([("/r", "IMG_0001.JPG"), ("/r", "IMG_0002.JPG"), ("/r", "x/Café.jpg"), ("/r", "b.jpg")])
    assert names.clashing == frozenset()
    assert names.folder("/r", "IMG_0001.JPG") == PurePosixPath("IMG_0001.JPG")
    assert names.folder("/r", "x/Café.jpg") == PurePosixPath("x/Café.jpg")
    # The same names under two INPUTs never clash: each INPUT has its own top folder.
    assert ImageNames.of([("/r", "A.jpg"), ("/s", "a.jpg")]).clashing == frozenset()
    clash = ImageNames.of([("/r", "A.jpg"), ("/r", "a.jpg"), ("/r", "a.jpg")])  # a duplicate is one image
    assert clash.clashing == {("/r", "A.jpg"), ("/r", "a.jpg")}
    assert clash.folder("/r", "A.jpg") != clash.folder("/r", "a.jpg")
    assert clash.folder("/r", "A.jpg").as_posix().startswith("A.jpg~")


@pytest.mark.parametrize(
    "rel",
    [
        "A" + "b" * 245 + ".png",  # fits the disk, not with a hash or the gallery's `.jpg`
        "d/" + "é" * 127 + ".jpg",  # 258 bytes of two-byte characters: cut between characters
        "x" * 300 + "/" + "y" * 300 + ".jpg",  # a store's keys may be longer than any file name
    ],
)
def test_every_output_name_of_a_long_image_name_fits_the_file_system(tmp_path, rel):
    twin = rel[:-5] + "c.jpg"  # the same long beginning: the cut names still differ
    names = ImageNames.of([("/r", rel), ("/r", twin), ("/r", rel.upper())])
    layout = OutputLayout(tmp_path)
    folders = {names.folder("/r", r) for r in (rel, twin, rel.upper())}
    assert len(folders) == 3
    for folder in folders:
        paths = [layout.overlay_rel(folder, "x" * 400, 1), layout.gallery_rel("thumbs", folder)]
        for path in paths:
            assert all(len(part.encode()) <= NAME_BYTES for part in PurePosixPath(path).parts), path
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_bytes(b"made")  # the file system takes it
            temp = tmp_path / path
            (temp.parent / f".{temp.name}.140234567890123.tmp").write_bytes(b"")  # and the writer's temp name


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
        root / layout.overlay_rel(image_dir(rel), "../../evil/../name", 1),
        root / layout.overlay_rel(image_dir(rel, clash=True), "tabby", None),
        root / layout.overlay_rel(image_dir(rel, "/../.."), "tabby", 1),
        layout.gallery_dir / layout.gallery_rel("thumbs", image_dir(rel)),
        layout.gallery_dir / layout.gallery_rel("photos", image_dir(rel)),
    ]
    for path in paths:
        assert path.resolve().is_relative_to(root.resolve()), path
    assert layout.purge_lock.parent == layout.report_dir


def test_overlay_and_gallery_names():
    layout = OutputLayout(Path("/data/out"))
    folder = PurePosixPath("chelsea.png")
    assert layout.overlay_rel(image_dir("kitchen/coffee.png"), "espresso", 1) == (
        "overlays/kitchen/coffee.png/top1_espresso.jpg"
    )
    assert layout.overlay_rel(folder, "tiger cat", 3) == "overlays/chelsea.png/top3_tiger_cat.jpg"
    # --classes: no rank, the class index instead (ImageNet has two classes called 'crane': 134 and 517)
    assert layout.overlay_rel(folder, "Tabby", None, class_index=281) == "overlays/chelsea.png/c281_tabby.jpg"
    assert layout.overlay_rel(folder, "crane", None, class_index=134) != layout.overlay_rel(
        folder, "crane", None, class_index=517
    )
    several = layout.overlay_rel(ImageNames(several_roots=True).folder("/data/photos", "a.png"), "tabby", 1)
    assert several.startswith("overlays/photos~") and several.endswith("/a.png/top1_tabby.jpg")
    assert layout.gallery_rel("thumbs", image_dir("a/b.png")) == "thumbs/a/b.png.jpg"
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


def test_an_out_folder_is_known_by_its_marker(tmp_path):
    layout = OutputLayout(tmp_path / "cams")
    assert layout.marker.parent == layout.root and not is_out_folder(layout.root)
    layout.root.mkdir()
    layout.marker.write_text("x")
    assert is_out_folder(layout.root) and not is_out_folder(tmp_path)


@given(st.lists(st.one_of(st.none(), st.text(), st.text(alphabet="aAzZ09._/-ßİıﬁÉé\u0301\u212a"))))
def test_folded_paths_fold_as_the_run_folds_each_name(paths):
    # Arrow lowers the ASCII names, Python folds the others: together exactly `clash_key`'s folding, nulls kept.
    expected = [None if p is None else clash_key("", p)[1] for p in paths]
    assert folded_paths(pa.array(paths, pa.string())).to_pylist() == expected
