"""Seconds and peak memory of `summarize`, `compare` and `gallery` on a report of a million images.

    python benchmarks/inspection_scale.py --source OUT [--images 1000000] [--work /tmp/inspection-scale]
        [--commands summarize compare gallery] [--class-copies 1]

The report is made from a real run's report (`--source`, e.g. a `cambatch run` of 2,000 photos made by
`benchmarks/photos.py`): its parts are copied again and again, each copy's paths rewritten under
`copy0000/`, `copy0001/`, ... (and with `--class-copies K`, its class names and labels under K names
each, to have K times the classes), until the report holds `--images` images. The copies are written
a part at a time: making the report takes the memory of one part. A second report, the same copies with
another run id, is the other side of `compare`. The photos are not copied (the gallery has no pictures
to make thumbnails from). Each command runs as the CLI in a process of its own, under
`/usr/bin/time -v`: its wall time, CPU time (user + system) and peak resident memory are printed with the
load average before it (the machine may be shared: the CPU time is the figure that load does not inflate).
With `--browser` the gallery is then opened in Chromium: first cards, the next page, a class, a search.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cambatch.report.parts import report_parts
from cambatch.report.schema import METADATA_KEY


def build(source: Path, out: Path, images: int, run_id: str, class_copies: int) -> Path:
    """`out/report/` with `images` images: copies of the source's parts, paths (and classes) rewritten."""
    marker = out / f".built-{images}-{class_copies}"
    if marker.exists():
        return out
    (out / "report").mkdir(parents=True, exist_ok=True)
    parts = [pq.read_table(p) for p in report_parts(source)]
    per_copy = sum(len(set(t.column("path").to_pylist())) for t in parts)
    written = 0
    copy = 0
    while written < images:
        for number, table in enumerate(parts):
            paths = table.column("path").to_pylist()
            names = list(dict.fromkeys(paths))
            room = images - written
            if room <= 0:
                break
            if len(names) > room:
                table = table.filter(pc.is_in(table.column("path"), pa.array(names[:room])))
                names = names[:room]
            table = _rewritten(table, copy, class_copies, run_id)
            pq.write_table(table, out / "report" / f"part-{run_id}-c{copy:05d}-{number:05d}.parquet")
            written += len(names)
        copy += 1
    marker.touch()
    print(f"built {out}: {written:,} images in {copy} copies of {per_copy:,}", flush=True)
    return out


def _rewritten(table: pa.Table, copy: int, class_copies: int, run_id: str) -> pa.Table:
    prefix = pa.scalar(f"copy{copy:05d}/")
    columns = {"path": pc.binary_join_element_wise(prefix, table.column("path"), "")}
    if class_copies > 1:
        tag = pa.scalar(f" #{copy % class_copies}")
        for name in ("class_name", "label"):
            if name in table.column_names:
                columns[name] = pc.binary_join_element_wise(table.column(name), tag, "")
    columns["run_id"] = pa.array([run_id] * table.num_rows, pa.string())
    for name, values in columns.items():
        table = table.set_column(table.column_names.index(name), name, values)
    settings = json.loads(table.schema.metadata[METADATA_KEY])
    settings["run_id"] = run_id
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(settings).encode()})


def timed(args: list[str]) -> dict:
    """One CLI command under /usr/bin/time -v: its wall seconds, peak RSS and the load before it."""
    load = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "cambatch", *args], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", done.stderr))
    lines = [line for line in done.stderr.splitlines() if line.startswith(("cambatch", "  "))][:4]
    return {
        "rc": done.returncode,
        "seconds": seconds,
        "cpu": cpu,
        "peak_rss_mb": rss / 1024,
        "load": load,
        "said": lines,
    }


def browse(index: Path) -> None:
    """Open the gallery in Debian's Chromium (playwright): cards, the next page, a class, a search; page errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        steps = []
        started = time.perf_counter()
        page.goto(index.as_uri())
        page.wait_for_selector(".card", timeout=120_000)
        steps.append(f"first cards {time.perf_counter() - started:.1f} s ({page.locator('.card').count()} cards)")
        started = time.perf_counter()
        page.click("#next")
        steps.append(f"next page {time.perf_counter() - started:.1f} s ({page.inner_text('#count')})")
        name = page.eval_on_selector(".card", "c => c.dataset.class")
        started = time.perf_counter()
        page.select_option("#f-class", name)
        page.wait_for_function("!document.querySelector('#count').textContent.startsWith('loading')", timeout=120_000)
        steps.append(f"class {name!r} loaded {time.perf_counter() - started:.1f} s ({page.inner_text('#count')})")
        path = page.eval_on_selector(".card", "c => c.dataset.path")
        started = time.perf_counter()
        page.fill("#f-text", path)
        page.wait_for_function("document.querySelectorAll('.card').length === 1", timeout=60_000)
        steps.append(f"search {time.perf_counter() - started:.1f} s (1 card)")
        browser.close()
    print("    chromium: " + "; ".join(steps) + f"; page errors: {len(errors)} {errors[:1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a real run's output folder")
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/inspection-scale"))
    parser.add_argument("--class-copies", type=int, default=1)
    parser.add_argument("--commands", nargs="+", default=["summarize", "compare", "gallery"])
    parser.add_argument("--browser", action="store_true", help="open the gallery in Chromium after building it")
    args = parser.parse_args()
    tag = f"{args.images}-{args.class_copies}"
    a = build(args.source, args.work / f"a-{tag}", args.images, "20260101T000000Z-aaaaaa", args.class_copies)
    needs_b = "compare" in args.commands
    b = (
        build(args.source, args.work / f"b-{tag}", args.images, "20260102T000000Z-bbbbbb", args.class_copies)
        if needs_b
        else None
    )
    commands = {
        "summarize": ["summarize", str(a), "--format", "csv"],
        "compare": ["compare", str(a), str(b), "--format", "csv"],
        "gallery": ["gallery", str(a)],
    }
    for name in args.commands:
        found = timed(commands[name])
        load = ", ".join(f"{x:.2f}" for x in found["load"])
        print(
            f"{name}: {args.images:,} images, {found['seconds']:.1f} s wall, {found['cpu']:.1f} s CPU, "
            f"peak RSS {found['peak_rss_mb']:.0f} MB, "
            f"exit {found['rc']} (load average before: {load})",
            flush=True,
        )
        for line in found["said"]:
            print(f"    {line}", flush=True)
        if name == "gallery" and args.browser:
            browse(a / "gallery" / "index.html")


if __name__ == "__main__":
    main()
