"""`cambatch.sources.remote`: INPUTs as fsspec URLs. A local S3 server (moto, on 127.0.0.1, started and
stopped here) holds the photos: a run over `s3://bucket/photos` gives the rows of the local run, a
rerun skips everything, an added object is the only one processed; a bad URL, missing credentials
or an unreachable endpoint is one line with exit 2."""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import boto3
import pandas as pd
import pytest
from conftest import PHOTOS, SAMPLES, aws_env
from sources_support import assert_same_rows, by_image, write_shard
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.config import RunConfig
from cambatch.errors import UsageError
from cambatch.runner.pipeline import run
from cambatch.sources.discover import discover
from cambatch.sources.remote import is_url, store_error, version


@pytest.fixture
def bucket(s3_bucket):
    """A fresh bucket holding the sample photos under `photos/`."""
    name, fs = s3_bucket
    for photo in PHOTOS:
        fs.put_file(str(photo), f"{name}/photos/{photo.name}")
    return name, fs


def test_urls_and_versions():
    assert is_url("s3://b/k") and is_url("file:///tmp") and not is_url("photos") and not is_url("C:\\x")
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert version({"size": 5, "LastModified": when}) == (5, int(when.timestamp()) * 10**9)
    assert version({"size": 5, "mtime": 1.5}) == (5, 1_500_000_000)
    assert version({"size": 5, "updated": "2026-01-02T00:00:00Z"}) == (5, int(when.timestamp()) * 10**9)
    assert version({"size": 5}) == (5, -1)


def test_a_url_input_stays_a_url_in_the_config(tmp_path):
    config = RunConfig.create(["s3://bucket/photos", str(SAMPLES)], tmp_path)
    assert config.inputs == ("s3://bucket/photos", SAMPLES)


def test_file_urls_list_and_read_like_the_folder(tmp_path):
    write_shard(tmp_path / "in" / "s.tar", PHOTOS[:2])
    (tmp_path / "in" / "a.png").write_bytes(PHOTOS[2].read_bytes())
    found = discover([f"file://{tmp_path}/in"])
    assert [s.rel for s in found] == ["a.png", f"s.tar/{PHOTOS[0].name}", f"s.tar/{PHOTOS[1].name}"]
    assert {s.input_root for s in found} == {f"file://{tmp_path}/in"}
    assert [s.read_bytes() for s in found] == [PHOTOS[2].read_bytes(), PHOTOS[0].read_bytes(), PHOTOS[1].read_bytes()]
    assert found[0].size == PHOTOS[2].stat().st_size and found[0].mtime_ns > 0


def test_an_s3_prefix_runs_like_the_local_folder_then_resumes_by_object_version(tmp_path, bucket, sample_run):
    name, fs = bucket
    _, folder_rows = sample_run
    url = f"s3://{name}/photos"
    out = tmp_path / "out"
    cli = CliRunner().invoke(app, ["run", url, "--out", str(out), "--workers", "2", "--quiet"])
    assert cli.exit_code == 0, cli.output
    rows = pd.read_parquet(out / "report")
    assert set(rows["path"]) == {p.name for p in PHOTOS} and set(rows["input_root"]) == {url}
    assert_same_rows(by_image(rows, str), by_image(folder_rows, str))
    assert (out / f"overlays/{PHOTOS[0].name}").is_dir()
    etags = {p.name: fs.info(f"{name}/photos/{p.name}")["ETag"].strip('"') for p in PHOTOS}
    assert rows.groupby("path")["etag"].first().to_dict() == etags  # each object's version, kept for resume

    again = run(RunConfig.create(url, out, workers=0))
    assert (again.processed, again.skipped) == (0, len(PHOTOS))

    fs.put_file(str(PHOTOS[0]), f"{name}/photos/new/{PHOTOS[0].name}")
    added = run(RunConfig.create(url, out, workers=0))
    assert (added.processed, added.skipped) == (1, len(PHOTOS))
    rows = pd.read_parquet(out / "report")
    assert rows.groupby("path").size().to_dict() == {p: 3 for p in [*(p.name for p in PHOTOS), f"new/{PHOTOS[0].name}"]}


def test_one_s3_object_and_an_s3_shard(tmp_path, bucket):
    name, fs = bucket
    shard = write_shard(tmp_path / "s.tar", PHOTOS[:2])
    fs.put_file(str(shard), f"{name}/shards/s.tar")
    one = discover([f"s3://{name}/photos/{PHOTOS[3].name}"])
    assert [(s.input_root, s.rel) for s in one] == [(f"s3://{name}/photos", PHOTOS[3].name)]
    members = discover([f"s3://{name}/shards"])
    assert [s.rel for s in members] == [f"s.tar/{p.name}" for p in PHOTOS[:2]]
    assert [s.read_bytes() for s in members] == [p.read_bytes() for p in PHOTOS[:2]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _one_line_exit_2(tmp_path, url: str) -> str:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", url, "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("cambatch: error:"), result.output
    assert not (out / "report").exists()  # refused before any work
    return lines[0]


def test_a_bad_url_is_one_line_with_exit_2(tmp_path, s3_server, monkeypatch):
    aws_env(monkeypatch, s3_server)
    assert "nosuch" in _one_line_exit_2(tmp_path, "nosuch://bucket/photos")
    assert "no such object or prefix" in _one_line_exit_2(tmp_path, "s3://no-bucket-here/photos")


def test_missing_credentials_are_one_line_with_exit_2(tmp_path, bucket, monkeypatch, s3_server):
    name, _ = bucket
    aws_env(monkeypatch, s3_server, credentials=False)
    assert "no credentials found" in _one_line_exit_2(tmp_path, f"s3://{name}/photos")


def test_an_unreachable_endpoint_is_one_line_with_exit_2(tmp_path, monkeypatch):
    aws_env(monkeypatch, f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries would only make the test slower
    assert "endpoint unreachable" in _one_line_exit_2(tmp_path, "s3://bucket/photos")


def test_store_errors_name_the_cause():
    assert "no such object" in str(store_error("s3://b/k", FileNotFoundError("b/k")))
    assert "access denied" in str(store_error("s3://b/k", PermissionError("Forbidden")))
    assert isinstance(store_error("s3://b/k", RuntimeError("boom")), UsageError)


def test_a_second_listing_in_one_process_sees_objects_another_client_added(bucket, s3_server):
    name, _ = bucket
    url = f"s3://{name}/photos"
    assert len(discover([url])) == len(PHOTOS)
    client = boto3.client("s3", endpoint_url=s3_server)  # not through fsspec, so its listing cache knows nothing
    client.put_object(Bucket=name, Key=f"photos/late/{PHOTOS[0].name}", Body=PHOTOS[0].read_bytes())
    assert f"late/{PHOTOS[0].name}" in [s.rel for s in discover([url])]
