"""`cambatch.sources.discover`: the images under the inputs, in a stable order, the output folder left out."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from cambatch.errors import UsageError
from cambatch.layout import OutputLayout
from cambatch.sources.discover import ImageSource, discover, folder_label, is_image_name


def test_discover_is_sorted_case_blind_and_skips_the_output_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.PNG").write_bytes(b"x")
    (tmp_path / "b" / "c.jpeg").write_bytes(b"x")
    (tmp_path / "b" / "d.txt").write_bytes(b"x")
    (tmp_path / "cams" / "overlays").mkdir(parents=True)
    (tmp_path / "cams" / "overlays" / "old.jpg").write_bytes(b"x")
    found = discover([tmp_path], exclude=tmp_path / "cams")
    assert [s.rel for s in found] == ["a.PNG", "b/c.jpeg"]
    assert all(s.input_root == tmp_path for s in found)
    single = discover([tmp_path / "b" / "c.jpeg"])
    assert single[0].rel == "c.jpeg" and single[0].input_root == tmp_path / "b"


def test_image_names_by_extension_case_blind():
    for name in ("a.jpg", "b.JPEG", "c.Png", "d.webp", "e.bmp", "f.gif", "g.tif", "h.TIFF"):
        assert is_image_name(name), name
    for name in ("notes.txt", "jpg", "archive.jpg.zip", ".png.bak", "README"):
        assert not is_image_name(name), name


def test_sources_record_size_mtime_and_keys(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.tar.png").write_bytes(b"12345")
    (found,) = discover([tmp_path])
    stat = (tmp_path / "sub" / "x.tar.png").stat()
    assert (found.size, found.mtime_ns) == (5, stat.st_mtime_ns)
    assert found.path == tmp_path / "sub" / "x.tar.png" and found.path.is_absolute()
    assert found.key == (str(tmp_path), "sub/x.tar.png") and found.stem_rel == "sub/x.tar"
    assert ImageSource(tmp_path, tmp_path, "noext").stem_rel == "noext"


def test_labels_from_dirs_follow_imagefolder_the_first_folder_under_the_input(tmp_path):
    root = tmp_path / "train"
    for rel in ("cat/a.jpg", "espresso/nested/x.jpg", "top.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "dog").mkdir()
    for rel in ("dog/shard.tar", "loose.tar"):  # a tar's members take the tar's place
        with tarfile.open(root / rel, "w") as tar:
            member = tarfile.TarInfo("inner/k.jpg")
            member.size = 1
            tar.addfile(member, io.BytesIO(b"x"))
    labels = {s.rel: s.label for s in discover([root], labels_from_dirs=True)}
    assert labels == {
        "cat/a.jpg": "cat",
        "dog/shard.tar/inner/k.jpg": "dog",
        "espresso/nested/x.jpg": "espresso",  # not `nested`
        "loose.tar/inner/k.jpg": None,
        "top.jpg": None,  # not the INPUT's name
    }
    assert {s.label for s in discover([root])} == {None}
    assert folder_label("a.parquet#3") is None and folder_label("cats/a.parquet#3") == "cats"


def test_every_cambatch_output_folder_is_skipped_not_only_this_runs(tmp_path):
    photos = tmp_path / "photos"
    (photos / "cams" / "overlays" / "a.jpg").mkdir(parents=True)
    (photos / "a.jpg").write_bytes(b"x")
    (photos / "cams" / "overlays" / "a.jpg" / "top1_cat.jpg").write_bytes(b"x")
    (photos / "cams" / "gallery" / "maps").mkdir(parents=True)
    (photos / "cams" / "gallery" / "maps" / "00000_cat.png").write_bytes(b"x")
    OutputLayout(photos / "cams").marker.write_text("x")
    assert [s.rel for s in discover([photos], exclude=photos / "cams2")] == ["a.jpg"]
    assert discover([photos / "cams"]) == []  # an OUT given as INPUT holds no photo either


def test_an_unreadable_tar_in_a_folder_is_one_sample_that_fails_and_the_folder_goes_on(tmp_path):
    (tmp_path / "bad.tar").write_text("x\n")
    (tmp_path / "coffee.png").write_bytes(b"x")
    found = {s.rel: s for s in discover([tmp_path])}
    assert sorted(found) == ["bad.tar", "coffee.png"]
    assert found["bad.tar"].size == 2 and found["bad.tar"].path == tmp_path / "bad.tar"
    with pytest.raises(OSError, match="cannot read tar shard .*bad.tar"):
        found["bad.tar"].read_bytes()
    with pytest.raises(UsageError, match="cannot read tar shard"):  # named as the INPUT itself: refused
        discover([tmp_path / "bad.tar"])


def test_symlink_loops_are_walked_once_and_linked_folders_followed(tmp_path):
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.jpg").write_bytes(b"x")
    os.symlink(root, root / "a" / "loop")  # back to the top
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "two.png").write_bytes(b"x")
    os.symlink(elsewhere, root / "linked")
    assert [s.rel for s in discover([root])] == ["a/one.jpg", "linked/two.png"]


def test_several_inputs_keep_their_own_roots(tmp_path):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.jpg").write_bytes(b"x")
    found = discover([tmp_path / "y", tmp_path / "x"])
    assert [(s.input_root.name, s.rel) for s in found] == [("y", "same.jpg"), ("x", "same.jpg")]  # as given
    assert len({s.key for s in found}) == 2  # the same name under two inputs: two images


def test_a_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="input not found: .*nope"):
        discover([tmp_path / "nope"])
