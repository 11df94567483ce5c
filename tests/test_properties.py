"""Properties of whole runs over generated folder trees: names in every case, both Unicode forms (NFC, NFD),
several extensions, names near the file system's limit, one INPUT or two.

- every image has exactly one result per class explained;
- every row's overlay belongs to its image: one folder per image, the one `ImageNames` gives it, distinct
  from every other image's even on a case- and normalization-insensitive disk, each name within 255 bytes;
- a refused command leaves OUT as it was.

A tiny random-init model keeps each run to a second or two; few examples, no deadline.
"""

from __future__ import annotations

import hashlib
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from cambatch.config import RunConfig
from cambatch.errors import UsageError
from cambatch.layout import NAME_BYTES, ImageNames
from cambatch.report.reader import load_report
from cambatch.runner.pipeline import run
from cambatch.sources.shard import parse_shard

TINY = dict(model="resnet18", weights="none", image_size=64, workers=0, batch_size=4)
EXAMPLES = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Letters that fold together on macOS, SMB or NTFS: case, and é as one code point (NFC) or two (NFD).
LETTERS = ["a", "A", "b", "B", "é", "É", unicodedata.normalize("NFD", "é"), unicodedata.normalize("NFD", "É")]
CHARS = st.sampled_from([*LETTERS, "_", "1", "-", " "])


def words(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Text of `CHARS` (an NFD letter is two code points: no `st.text`, which wants single characters)."""
    return st.lists(CHARS, min_size=min_size, max_size=max_size).map("".join)


EXTENSIONS = st.sampled_from([".jpg", ".JPG", ".jpeg", ".png", ".PNG"])


@st.composite
def file_names(draw) -> str:
    extension = draw(EXTENSIONS)
    stem = draw(words(1, 6))
    if draw(st.booleans()):  # near the limit: the name fits the disk, not always with a suffix after it
        room = NAME_BYTES - len(extension.encode()) - draw(st.integers(0, 12))
        while len((stem + stem).encode()) <= room:
            stem += stem
        stem = stem.encode()[:room].decode(errors="ignore") or "x"
    return stem + extension


@st.composite
def trees(draw) -> list[tuple[int, str]]:
    """(INPUT number, relative path) of each image: folders of letters, file names with an extension."""
    folder = st.lists(words(1, 4), max_size=2).map(lambda parts: "/".join(parts))
    inputs = draw(st.integers(1, 2))
    images = st.tuples(st.integers(0, inputs - 1), st.tuples(folder, file_names()))
    drawn = draw(st.lists(images, min_size=1, max_size=6))
    unique = {(i, f"{f}/{name}" if f else name) for i, (f, name) in drawn}
    return sorted(unique)


# Always tried: names that clash on a case- or normalization-insensitive disk, the same name under two INPUTs,
# and a name that fits the disk but not with a hash after it.
CLASHING = [
    (0, "A.jpg"),
    (0, "a.jpg"),
    (0, "é/x.png"),
    (0, unicodedata.normalize("NFD", "é") + "/x.png"),
    (1, "A.jpg"),
    (0, "B" + "b" * 245 + ".JPG"),
]


def make_tree(root: Path, images: list[tuple[int, str]]) -> dict[tuple[str, str], Path]:
    """Write tiny pictures, one colour each; their (input root, path) keys."""
    made = {}
    for n, (i, rel) in enumerate(images):
        base = root / f"in{i}"
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        colour = tuple(int(c) for c in np.random.default_rng(n).integers(0, 255, 3))
        fmt = "PNG" if rel.lower().endswith(".png") else "JPEG"
        Image.new("RGB", (12, 9), colour).save(path, format=fmt)
        made[(str(base), rel)] = path
    return made


def inputs_of(root: Path, images: list[tuple[int, str]]) -> list[Path]:
    return [root / f"in{i}" for i in sorted({i for i, _ in images})]


@EXAMPLES
@given(trees())
@example(CLASHING)
def test_every_image_has_one_result_per_class_and_its_own_overlay_folder(images):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = make_tree(root, images)
        result = run(RunConfig.create(inputs_of(root, images), root / "out", topk=2, **TINY))
        assert (result.ok, result.errors) == (len(made), 0)
        df = load_report(root / "out")
        keys = list(zip(df["input_root"], df["path"].astype(str), strict=True))
        assert set(keys) == set(made)
        # One result per image and class explained, all of them ok.
        assert (df.groupby(["input_root", "path"], observed=True).size() == 2).all()
        assert not df.duplicated(["input_root", "path", "class_index"]).any() and (df["status"] == "ok").all()
        # Each row's overlay is in its image's folder, the one the run's naming gives it, on the disk.
        names = ImageNames.of(made)
        folders = {}
        for key, overlay in zip(keys, df["overlay_path"], strict=True):
            folder, leaf = overlay.rsplit("/", 1)
            assert folder == f"overlays/{names.folder(*key).as_posix()}", (key, overlay)
            assert folders.setdefault(key, folder) == folder and (root / "out" / overlay).is_file()
            assert all(len(part.encode()) <= NAME_BYTES for part in PurePosixPath(overlay).parts)
        assert len(set(df["overlay_path"])) == len(df)
        # Distinct even where case and Unicode form do not count, and no image's folder inside another's.
        folded = {unicodedata.normalize("NFC", f).casefold() for f in folders.values()}
        assert len(folded) == len(folders) == len(made)
        assert not any(a != b and b.startswith(a + "/") for a in folded for b in folded)


def snapshot(out: Path) -> dict[str, str]:
    """OUT's files and their contents. The lock files are left out: a refused run takes its shard's lock (the
    file is made if missing) and leaves it empty, as every run does; they hold no result.
    """
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    assert all(p.read_bytes() == b"" for name, p in files.items() if name.startswith(".lock"))  # none held
    return {
        name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items() if not name.startswith(".lock")
    }


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
@example(CLASHING)
def test_a_refused_command_leaves_out_as_it_was(images):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = make_tree(root, images)
        inputs, out = inputs_of(root, images), root / "out"
        for shard in ("0/2", "1/2"):
            run(RunConfig.create(inputs, out, topk=1, shard=shard, **TINY))
        before = snapshot(out)
        refused = [
            RunConfig.create(inputs, out, topk=2, **TINY),  # other settings, no --overwrite
            RunConfig.create([out], out, **TINY),  # OUT as its own INPUT: no images
            RunConfig.create([root / "missing"], out, **TINY),
        ]
        if not all(parse_shard("0/2").owns(rel) for _, rel in made):  # shard 1/2 has results to keep
            refused.append(RunConfig.create(inputs, out, topk=2, shard="0/2", overwrite=True, **TINY))
        for config in refused:
            with pytest.raises(UsageError):
                run(config)
            assert snapshot(out) == before, config
