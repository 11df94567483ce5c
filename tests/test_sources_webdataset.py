"""`cambatch.sources.webdataset`: tar shards listed by their headers, members read by offset, and a run
over shards giving the same rows as the same photos in a folder."""

from __future__ import annotations

import tarfile

import pandas as pd
import pytest
from conftest import PHOTOS
from fsspec.implementations.local import LocalFileSystem
from sources_support import assert_same_rows, by_image, write_shard

from cambatch.config import RunConfig
from cambatch.errors import UsageError
from cambatch.runner.pipeline import run
from cambatch.sources.discover import discover
from cambatch.sources.webdataset import TarMember, shard_members


def test_members_are_read_by_offset_alone(tmp_path):
    shard = write_shard(tmp_path / "s.tar", PHOTOS[:3], extra={"coffee.cls": b"967"})
    members = shard_members(LocalFileSystem(), str(shard), str(shard))
    assert [name for name, _, _ in members] == [p.name for p in PHOTOS[:3]] + ["coffee.cls"]
    for (name, size, reader), photo in zip(members, PHOTOS[:3], strict=False):
        assert size == photo.stat().st_size and reader.read() == photo.read_bytes(), name
    with pytest.raises(OSError, match="truncated"):
        TarMember(str(shard), shard.stat().st_size - 10, 100).read()


def test_a_folder_of_shards_lists_each_image_member_once(tmp_path):
    write_shard(tmp_path / "shards" / "a-000.tar", PHOTOS[:2], extra={"x.json": b"{}", "sub/y.txt": b"t"})
    write_shard(tmp_path / "shards" / "a-001.tar", PHOTOS[2:3])
    found = discover([tmp_path / "shards"])
    assert [s.rel for s in found] == [f"a-000.tar/{PHOTOS[0].name}", f"a-000.tar/{PHOTOS[1].name}"] + [
        f"a-001.tar/{PHOTOS[2].name}"
    ]
    shard_mtime = (tmp_path / "shards" / "a-000.tar").stat().st_mtime_ns
    assert found[0].input_root == tmp_path / "shards" and found[0].mtime_ns == shard_mtime
    assert found[0].size == PHOTOS[0].stat().st_size
    assert found[0].read_bytes() == PHOTOS[0].read_bytes()


def test_a_compressed_shard_is_refused_with_its_name(tmp_path):
    target = tmp_path / "z.tar"
    with tarfile.open(target, "w:gz") as tar:
        tar.add(PHOTOS[0], arcname=PHOTOS[0].name)
    with pytest.raises(UsageError, match="cannot read tar shard .*z.tar"):
        discover([target])


def test_shards_give_the_rows_of_the_same_photos_in_a_folder(tmp_path, sample_run):
    _, folder_rows = sample_run
    shards = tmp_path / "shards"
    write_shard(shards / "photos-000.tar", PHOTOS[:4], extra={f"{PHOTOS[0].stem}.cls": b"1"})
    write_shard(shards / "photos-001.tar", PHOTOS[4:])
    out = tmp_path / "out"
    result = run(RunConfig.create(inputs=[shards], out=out, workers=1))  # a worker process reads the members
    assert (result.ok, result.errors) == (len(PHOTOS), 0)
    rows = pd.read_parquet(out / "report")
    assert set(rows["path"]) == {f"photos-00{int(i >= 4)}.tar/{p.name}" for i, p in enumerate(PHOTOS)}
    assert_same_rows(by_image(rows, lambda p: p.split("/")[-1]), by_image(folder_rows, lambda p: p))
    assert (out / f"overlays/photos-000.tar/{PHOTOS[0].name}").is_dir()
    again = run(RunConfig.create(inputs=[shards], out=out, workers=0))
    assert (again.processed, again.skipped) == (0, len(PHOTOS))
