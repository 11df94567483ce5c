"""`cambatch.sources.discover`: the images under the inputs, in a stable order, the output folder left out."""

from __future__ import annotations

import os

import pytest

from cambatch.errors import UsageError
from cambatch.sources.discover import ImageSource, discover, is_image_name


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


def test_labels_from_dirs_name_the_parent_folder(tmp_path):
    root = tmp_path / "train"
    for rel in ("cat/a.jpg", "dog/puppies/b.jpg", "top.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    labels = {s.rel: s.label for s in discover([root], labels_from_dirs=True)}
    assert labels == {"cat/a.jpg": "cat", "dog/puppies/b.jpg": "puppies", "top.jpg": "train"}
    assert {s.label for s in discover([root])} == {None}


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
