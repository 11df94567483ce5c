"""`cambatch.runner.resume`: what the report already holds, what is left to do, and the purge of redone images."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_folder
from typer.testing import CliRunner

from cambatch.cli import app
from cambatch.layout import OutputLayout
from cambatch.report.parts import published_parts
from cambatch.report.schema import SCHEMA, table
from cambatch.report.writer import ReportWriter
from cambatch.runner.resume import SettingsChanged, check_settings, plan, purge, report_settings, sweep
from cambatch.sources.discover import ImageSource
from cambatch.sources.shard import Shard

ROOT = Path("/data/photos")


def src(rel: str, size: int = 100, mtime: int = 5, root: Path = ROOT) -> ImageSource:
    return ImageSource(root / rel, root, rel, size, mtime)


def write_part(report: Path, name: str, rows: list[tuple]) -> Path:
    """rows: (input_root, path, file_size, mtime_ns, status), two report rows for an ok image."""
    expanded = [r for r in rows for _ in range(2 if r[4] == "ok" else 1)]
    columns = dict(
        zip(("input_root", "path", "file_size", "mtime_ns", "status"), zip(*expanded, strict=True), strict=True)
    )
    report.mkdir(parents=True, exist_ok=True)
    pq.write_table(table({k: list(v) for k, v in columns.items()}, len(expanded)), report / name)
    return report / name


def test_plan_with_no_report_does_everything(tmp_path):
    todo = plan([src("a.jpg"), src("b.jpg")], tmp_path / "report")
    assert [s.rel for s in todo.todo] == ["a.jpg", "b.jpg"] and todo.skipped == 0 and not todo.purge_keys


def test_plan_skips_unchanged_images_and_redoes_new_changed_and_retried_ones(tmp_path):
    report = tmp_path / "report"
    root = str(ROOT)
    write_part(report, "part-1-00000.parquet", [(root, "same.jpg", 100, 5, "ok"), (root, "bigger.jpg", 100, 5, "ok")])
    write_part(report, "part-2-00000.parquet", [(root, "touched.jpg", 100, 5, "ok"), (root, "bad.jpg", 7, 5, "error")])
    (report / ".part-3-00000.parquet.tmp").write_bytes(b"torn")  # a part being written: not read
    sources = [
        src("same.jpg"),
        src("bigger.jpg", size=101),
        src("touched.jpg", mtime=6),
        src("bad.jpg", size=7),
        src("new.jpg"),
        src("same.jpg", root=Path("/other/root")),  # the same name under another input: another image
    ]
    done = plan(sources, report)
    assert [(str(s.input_root), s.rel) for s in done.todo] == [
        (root, "bigger.jpg"),
        (root, "touched.jpg"),
        (root, "new.jpg"),
        ("/other/root", "same.jpg"),
    ]
    assert done.skipped == 2  # same.jpg, and bad.jpg: a failure is not retried unless asked
    assert done.errors_kept == 1  # ... and still failed: `--fail-on-error` counts it
    assert done.purge_keys == {f"{root}\x00bigger.jpg", f"{root}\x00touched.jpg"}  # their old rows go first
    retried = plan(sources, report, retry_errors=True)
    assert "bad.jpg" in [s.rel for s in retried.todo] and f"{root}\x00bad.jpg" in retried.purge_keys
    assert retried.errors_kept == 0
    assert retried.skipped == 1


def test_an_object_with_another_etag_is_redone_and_a_missing_etag_redoes_nothing(tmp_path):
    root, names = str(ROOT), ["same.jpg", "rewritten.jpg", "row_without.jpg", "listing_without.jpg"]
    rows = {"input_root": [root] * 4, "path": names, "file_size": [100] * 4, "mtime_ns": [5] * 4}
    rows |= {"status": ["ok"] * 4, "etag": ["e1", "e1", None, "e1"]}  # a row without: written before ETags were kept
    (tmp_path / "report").mkdir()
    pq.write_table(table(rows, 4), tmp_path / "report" / "part-1-00000.parquet")
    sources = [
        replace(src("same.jpg"), etag="e1"),
        replace(src("rewritten.jpg"), etag="e2"),  # same size, same second: only the ETag tells
        replace(src("row_without.jpg"), etag="e3"),
        src("listing_without.jpg"),
    ]
    done = plan(sources, tmp_path / "report")
    assert [s.rel for s in done.todo] == ["rewritten.jpg"] and done.skipped == 3
    assert done.purge_keys == {f"{root}\x00rewritten.jpg"}


def test_purge_drops_only_the_keys_rows_and_rewrites_parts_in_place(tmp_path):
    layout = OutputLayout(tmp_path)
    root = str(ROOT)
    mixed = write_part(
        layout.report_dir, "part-1-00000.parquet", [(root, "a.jpg", 1, 1, "ok"), (root, "b.jpg", 1, 1, "ok")]
    )
    only_a = write_part(layout.report_dir, "part-2-00000.parquet", [(root, "a.jpg", 1, 1, "ok")])
    untouched = write_part(layout.report_dir, "part-3-00000.parquet", [("/elsewhere", "a.jpg", 1, 1, "ok")])
    before = untouched.stat().st_mtime_ns
    assert purge(layout, keys={f"{root}\x00a.jpg"}) == 4
    assert published_parts(layout.report_dir) == [mixed, untouched]  # a part left empty is removed
    assert pq.read_table(mixed).column("path").to_pylist() == ["b.jpg", "b.jpg"]
    assert pq.read_table(untouched).column("input_root").to_pylist() == ["/elsewhere"] * 2
    assert untouched.stat().st_mtime_ns == before  # nothing to drop: not rewritten
    assert not only_a.exists()
    assert sorted(p.name for p in layout.report_dir.iterdir()) == [  # no temporary file left
        ".purge.lock",
        "part-1-00000.parquet",
        "part-3-00000.parquet",
    ]
    assert purge(layout, keys={"nothing\x00here.jpg"}) == 0


def test_purge_of_a_shard_drops_every_row_it_owns(tmp_path):
    layout = OutputLayout(tmp_path)
    names = [f"img_{n:02d}.jpg" for n in range(20)]
    part = write_part(layout.report_dir, "part-1-00000.parquet", [(str(ROOT), n, 1, 1, "ok") for n in names])
    shard = Shard(1, 3)
    owned = [n for n in names if shard.owns(n)]
    assert 0 < len(owned) < len(names)
    assert purge(layout, shard=shard) == 2 * len(owned)
    assert sorted(set(pq.read_table(part).column("path").to_pylist())) == [n for n in names if not shard.owns(n)]


# ---- a resume refuses other settings: real runs through the CLI ----


@pytest.fixture(scope="module")
def resumed_out(tmp_path_factory):
    """One resnet18 run (a weights file, gradcam, top-2, overlays) over one photo, and its CLI arguments."""
    import torch
    import torchvision

    base = tmp_path_factory.mktemp("settings")
    make_folder(base / "photos", 2, side=96)
    for seed, name in ((0, "w1.pt"), (1, "w2.pt")):
        torch.manual_seed(seed)
        torch.save(torchvision.models.resnet18().state_dict(), base / name)
    args = ["run", str(base / "photos"), "--out", str(base / "out"), "--model", "resnet18"]
    args += ["--weights", str(base / "w1.pt")]
    args += ["--method", "gradcam", "--topk", "2", "--workers", "0", "--quiet"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    return base, args


def _with(args: list[str], **changes: str) -> list[str]:
    args = list(args)
    for option, value in changes.items():
        spelled = "--" + option.replace("_", "-")
        if spelled in args:
            args[args.index(spelled) + 1] = value
        else:
            args += [spelled, value] if value else [spelled]
    return args


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"model": "resnet34", "weights": "none"}, "model (--model): resnet18 there, resnet34 now"),
        ({"weights": "W2"}, "weights_sha256 (--weights)"),
        ({"method": "gradcampp"}, "method (--method): gradcam there, gradcampp now"),
        ({"layer": "layer3"}, "layer (--layer): layer4 there, layer3 now"),
        ({"topk": "3"}, "topk (--topk): 2 there, 3 now"),
        ({"classes": "1,2"}, "classes (--classes): none there, [1, 2] now"),
        ({"image_size": "192"}, "input_size (--image-size): 224 there, 192 now"),
        ({"colormap": "viridis"}, "colormap (--colormap): jet there, viridis now"),
        ({"max_side": "64"}, "max_side (--max-side): 1024 there, 64 now"),
        ({"embeddings": ""}, "embeddings (--embeddings): False there, True now"),
    ],
)
def test_a_resume_with_another_setting_is_refused_naming_it(resumed_out, changes, named):
    base, args = resumed_out
    changes = {k: str(base / "w2.pt") if v == "W2" else v for k, v in changes.items()}
    before = sorted(p.name for p in (base / "out" / "report").glob("*.parquet"))
    refused = CliRunner().invoke(app, _with(args, **changes))
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], refused.output
    assert "another --out" in lines[0] and "--overwrite" in lines[0]
    assert sorted(p.name for p in (base / "out" / "report").glob("*.parquet")) == before  # nothing was done


def test_overlay_settings_count_only_when_overlays_are_written_and_overwrite_starts_over(resumed_out):
    base, args = resumed_out
    report_only = CliRunner().invoke(app, [*_with(args, colormap="viridis"), "--no-overlays"])
    assert report_only.exit_code == 0 and "2 already done" in report_only.output, report_only.output
    again = CliRunner().invoke(app, _with(args, topk="3", overwrite=""))
    assert again.exit_code == 0, again.output
    df = pd.read_parquet(base / "out" / "report")
    assert len(df) == 6 and set(df["rank"]) == {1, 2, 3} and df.run_id.nunique() == 1


def test_sweep_removes_the_temporary_parts_of_its_shard_only(tmp_path):
    layout = OutputLayout(tmp_path)
    published = write_part(
        layout.report_dir, "part-20261201T000000Z-aaaaaa-00000.parquet", [("r", "a.jpg", 1, 1, "ok")]
    )
    open_parts = {}
    for shard, worker in ((Shard(0, 1), None), (Shard(0, 1), "1a2b3c4d"), (Shard(1, 4), None), (Shard(2, 4), "9f")):
        writer = ReportWriter(layout.report_dir, layout.part_name("20261202T010203Z-b1c2d3", shard.tag, worker), {})
        writer.add_image(table({"path": ["x.jpg"], "status": ["ok"]}, 1))  # open: a temporary file, as a kill leaves it
        open_parts.setdefault(shard.tag, []).append(writer._part.temp_path.name)
    assert _temporary(layout) == sorted(sum(open_parts.values(), []))
    assert all(layout.temp_part_shard(name) == tag for tag, found in open_parts.items() for name in found)

    assert sweep(layout, Shard(1, 4)) == 1  # only shard 1's part: the other shards may be running
    assert _temporary(layout) == sorted(open_parts[""] + open_parts["-shard0002of0004"])
    assert sweep(layout, Shard(0, 1)) == 2  # the whole-dataset run's, its Ray workers' included
    assert _temporary(layout) == open_parts["-shard0002of0004"] and published.is_file()
    assert layout.temp_part_shard(published.name) is None and layout.temp_part_shard(".purge.lock") is None


def _temporary(layout: OutputLayout) -> list[str]:
    return sorted(p.name for p in layout.report_dir.iterdir() if p.name.endswith(".tmp"))


def test_overwrite_of_one_shard_is_judged_by_the_rows_it_keeps_and_says_what_would_work(tmp_path):
    report, root = tmp_path / "report", str(ROOT)
    halves = Shard(0, 2), Shard(1, 2)
    names = [f"img_{i}.jpg" for i in range(8)]
    mine = [n for n in names if halves[0].owns(n)]
    theirs = [n for n in names if halves[1].owns(n)]
    write_part(report, "part-a-shard0000of0002-00000.parquet", [(root, n, 1, 1, "ok") for n in mine])
    write_part(report, "part-b-shard0001of0002-00000.parquet", [(root, n, 1, 1, "ok") for n in theirs])
    assert mine and theirs and len(report_settings(report)) == 2
    kept = report_settings(report, beyond=halves[0])  # what shard 0's --overwrite leaves: shard 1's part
    assert len(kept) == 1 and report_settings(report, beyond=Shard(0, 1)) == []  # a whole run keeps nothing
    earlier, now = {"model": "m", "topk": 3}, {"model": "m", "topk": 1}
    with pytest.raises(SettingsChanged) as refused:
        check_settings([earlier], now, tmp_path, overwrite=halves[0])
    assert str(refused.value) == (
        f"{tmp_path} holds other shards' results made with other settings (topk (--topk): 3 there, 1 now), and "
        f"--overwrite redoes only shard 0/2: give this run another --out, or delete {tmp_path} and rerun every "
        "shard to start them all over"
    )
    with pytest.raises(SettingsChanged, match="or add --overwrite to redo every image"):
        check_settings([earlier], now, tmp_path)


def test_the_ground_truth_is_a_compared_setting(tmp_path):
    shown = "annotations (--annotations): none there, /data/boxes.csv now"
    with pytest.raises(SettingsChanged, match=re.escape(shown)):
        check_settings(
            [{"model": "m", "annotations": None}], {"model": "m", "annotations": "/data/boxes.csv"}, tmp_path
        )
    check_settings([{"model": "m"}], {"model": "m", "annotations": "/data/boxes.csv"}, tmp_path)  # an older part


def test_a_finished_image_with_a_new_label_is_redone_and_no_label_now_keeps_its_rows(tmp_path):
    report, root = tmp_path / "report", str(ROOT)
    write_part(report, "part-1-00000.parquet", [(root, "a.jpg", 100, 5, "ok"), (root, "b.jpg", 100, 5, "ok")])
    pq.write_table(
        pq.read_table(report / "part-1-00000.parquet").set_column(
            SCHEMA.get_field_index("label"), "label", pa.array(["cat", "cat", None, None], pa.string())
        ),
        report / "part-1-00000.parquet",
    )
    labelled = [replace(src("a.jpg"), label="cat"), replace(src("b.jpg"), label="dog")]
    done = plan(labelled, report)
    assert [s.rel for s in done.todo] == ["b.jpg"] and done.relabelled == 1 and done.skipped == 1
    assert done.purge_keys == {f"{root}\x00b.jpg"}  # its unlabelled rows go first
    assert plan([replace(src("a.jpg"), label="tabby")], report).relabelled == 1  # a changed label too
    unlabelled = plan([src("a.jpg"), src("b.jpg")], report)  # a rerun without labels redoes nothing
    assert unlabelled.todo == [] and unlabelled.skipped == 2 and unlabelled.relabelled == 0
