"""cambatch side by side with the model's own limit and with its peers, as one printed table.

    python benchmarks/bench.py [IMAGES] [--images N] [--model M --weights W] [--precision P]

Without IMAGES, N varied photos are generated from sample_images/ (random crops, scales, JPEG
qualities; see photos.py). Every number is measured in this run, on the same images, model and
settings:

- L: the model's forward pass alone on random input, at its best batch size and memory format;
- cambatch in-process steady state (top-k, overlays on; then --no-overlays), images/s and / L;
- whole processes on the same folder: `cambatch run` vs torchcam's CAM loop vs pytorch-grad-cam's
  GradCAM loop (benchmarks/peers/, installed by `pip install -e ".[bench]"`);
- peak RSS of `cambatch run` (the process and its decoding workers) on 1x and 10x the images;
- wall time of `cambatch --help` and `cambatch --version`.

`--breakdown` adds where the time goes (each stage alone); `--tune` tries thread/worker/batch
settings in-process (how cambatch/tuning.py's defaults were chosen).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import photos  # noqa: E402


def main() -> None:
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="cambatch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = args.images_dir or work / f"photos{args.images}"
    if args.images_dir is None:
        log(f"generating {args.images} photos under {folder}")
        photos.generate(folder, args.images)
    count = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    log(f"{count} images in {folder}; machine: {machine()}; load before: {load()}")

    from cambatch.runner.engine import resolve_device
    from cambatch.runner.tuning import plan

    device = resolve_device(args.device)
    rows: list[tuple[str, str, str]] = []
    results: dict = {
        "images": count,
        "machine": machine(),
        "device": device_name(device),
        "model": args.model,
        "precision": args.precision,
        "load_before": load(),
    }

    if args.tune:
        tune(folder, args, device)
        return

    # L before and after the cambatch runs; the larger is the limit (conservative ratios).
    limit = forward_limit(args, device)
    log(f"L: {limit['rate']:.1f} img/s ({limit['config']})")
    overlays = steady_state(folder, work / "inproc_overlays", args, overlays=True)
    log(f"cambatch in-process, overlays: {overlays['rate']:.1f} img/s")
    plain = steady_state(folder, work / "inproc_plain", args, overlays=False)
    log(f"cambatch in-process, --no-overlays: {plain['rate']:.1f} img/s")
    limit2 = forward_limit(args, device)
    log(f"L again: {limit2['rate']:.1f} img/s ({limit2['config']})")
    if limit2["rate"] > limit["rate"]:
        limit = limit2
    L = limit["rate"]
    p = plan(device)
    rows.append(("L: model forward alone, random input (" + limit["config"] + ")", f"{L:.1f} img/s", "1.00x L"))
    rows.append(
        (
            f"cambatch in-process steady state, top-{args.topk}, overlays ({settings(p)})",
            f"{overlays['rate']:.1f} img/s",
            f"{overlays['rate'] / L:.2f}x L  (target >= 0.65x)",
        )
    )
    rows.append(
        (
            "cambatch in-process steady state, --no-overlays",
            f"{plain['rate']:.1f} img/s",
            f"{plain['rate'] / L:.2f}x L  (target >= 0.75x)",
        )
    )
    results.update(L=limit, overlays=overlays, no_overlays=plain)

    if not args.skip_processes:
        peer_folder = (
            subset(folder, work / f"peers{args.peer_images}", args.peer_images) if args.peer_images else folder
        )
        peer_count = count if not args.peer_images else min(args.peer_images, count)
        whole = timed_process(cambatch_cmd(peer_folder, work / "proc_cambatch", args), sample_rss=True)
        cb_rate = peer_count / whole["wall_s"]
        label = f"whole process, {peer_count} images: "
        rows.append((label + "`cambatch run`", f"{cb_rate:.1f} img/s", f"{whole['wall_s']:.1f} s wall"))
        results["process_cambatch"] = whole | {"rate": cb_rate}
        log(f"cambatch whole process: {cb_rate:.1f} img/s")
        for name, script, target in (
            ("torchcam CAM loop", "torchcam_loop.py", 2),
            ("pytorch-grad-cam GradCAM loop", "gradcam_loop.py", 8),
        ):
            if args.skip_peers:
                break
            cmd = [sys.executable, str(HERE / "peers" / script), str(peer_folder), str(work / f"proc_{script[:-3]}")]
            cmd += peer_model_args(args, device)
            peer = timed_process(cmd)
            if peer["rc"] != 0:
                rows.append((label + name, "failed", peer["stderr_tail"][-120:].replace("\n", " ")))
                continue
            rate = peer_count / peer["wall_s"]
            rows.append(
                (label + name, f"{rate:.1f} img/s", f"cambatch {cb_rate / rate:.1f}x faster (target >= {target}x)")
            )
            results[script[:-3]] = peer | {"rate": rate}
            log(f"{name}: {rate:.1f} img/s")

    if not args.skip_rss:
        one = results.get("process_cambatch") if not args.peer_images else None
        if one is None:
            one = timed_process(cambatch_cmd(folder, work / "rss_1x", args), sample_rss=True)
        many_folder = photos.replicate(folder, work / f"photos_x{args.rss_times}", args.rss_times)
        many = timed_process(cambatch_cmd(many_folder, work / "rss_many", args), sample_rss=True)
        ratio = many["peak_rss_mib"] / one["peak_rss_mib"]
        rows.append(
            (
                f"peak RSS of `cambatch run` (process + workers), 1x = {count} images",
                f"{one['peak_rss_mib']:.0f} MiB",
                "",
            )
        )
        rows.append(
            (
                f"peak RSS, {args.rss_times}x = {count * args.rss_times} images",
                f"{many['peak_rss_mib']:.0f} MiB",
                f"{ratio:.2f}x the 1x run  (target <= 1.2x)",
            )
        )
        results.update(rss_1x=one, rss_many=many, rss_ratio=ratio)

    for flag in ("--help", "--version"):
        wall = cli_wall(flag)
        rows.append((f"`cambatch {flag}` wall time (median of 5)", f"{wall:.2f} s", "target < 0.5 s"))
        results[f"cli{flag}"] = wall

    results["load_after"] = load()
    print_table(rows, results)
    if args.breakdown:
        breakdown(folder, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "images_dir", nargs="?", type=Path, help="a folder of images (default: generate --images photos)"
    )
    parser.add_argument("--images", type=int, default=256, help="photos to generate when no folder is given")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None, help="as `cambatch run --weights` (e.g. none)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument(
        "--peer-images", type=int, default=0, help="run the whole-process comparison on the first M images only"
    )
    parser.add_argument("--rss-times", type=int, default=10)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-processes", action="store_true", help="no whole-process rows (cambatch or peers)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="also print where the time goes, stage by stage")
    parser.add_argument("--breakdown-images", type=int, default=512, help="images for --breakdown (the first ones)")
    parser.add_argument("--tune", action="store_true", help="only try threads/workers/batch settings in-process")
    parser.add_argument("--seconds", type=float, default=1.5, help="time per forward-pass configuration for L")
    parser.add_argument("--work", default=None, help="folder for generated photos and outputs (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    return parser.parse_args()


# ---------------------------------------------------------------- measurements


def forward_limit(args, device) -> dict:
    """The model's forward alone on random input: best images/s over batch sizes, memory formats and
    (on a CPU) 1 or all threads."""
    import torch

    from cambatch.model.accel import Execution
    from cambatch.model.build import load_model

    model = load_model(args.model, args.weights)
    network = model.network.eval().to(device)
    size = model.input_size
    batches = (32, 64, 128, 256) if device.type == "cuda" else (1, 4, 8, 16, 32)
    dtype = Execution(device.type, args.precision).dtype
    best = {"rate": 0.0, "config": ""}
    cores = torch.get_num_threads()
    thread_counts = sorted({1, cores}) if device.type == "cpu" else [cores]
    configs = [(fmt, bs, t) for fmt in ("contiguous", "channels_last") for bs in batches for t in thread_counts]
    for fmt, bs, threads in configs:
        if fmt == "channels_last":
            network = network.to(memory_format=torch.channels_last)
        torch.set_num_threads(threads)
        x = torch.randn(bs, 3, size, size, device=device)
        if fmt == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            for _ in range(2):
                network(x)
            sync(device)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                network(x)
                n += bs
            sync(device)
            rate = n / (time.perf_counter() - start)
        if rate > best["rate"]:
            best = {"rate": rate, "config": f"batch {bs}, {fmt}, {args.precision}, {threads} thread(s)"}
    torch.set_num_threads(cores)
    return best


class _Clock:
    """A progress reporter that notes when each batch is done."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []
        self.done = 0

    def start(self, total: int) -> None:
        self.marks = [(time.perf_counter(), 0)]

    def advance(self, count: int) -> None:
        self.done += count
        self.marks.append((time.perf_counter(), self.done))

    def stop(self) -> None:
        pass


def run_inprocess(folder: Path, out: Path, args, overlays: bool, **options) -> dict:
    from cambatch.config import RunConfig
    from cambatch.runner.pipeline import run

    shutil.rmtree(out, ignore_errors=True)
    clock = _Clock()
    config = RunConfig.create(
        inputs=[folder],
        out=out,
        model=args.model,
        weights=args.weights,
        topk=args.topk,
        overlays=overlays,
        precision=args.precision,
        device=args.device,
        **options,
    )
    result = run(config, clock)
    end = time.perf_counter()
    # Steady state: from the end of the first batch (workers started, caches warm) to the end of
    # the run, the writers' last overlays and the report's last part included.
    t0, n0 = clock.marks[1] if len(clock.marks) > 1 else clock.marks[0]
    return {
        "rate": (clock.done - n0) / max(end - t0, 1e-9),
        "images": clock.done,
        "ok": result.ok,
        "errors": result.errors,
        "total_s": result.elapsed_s,
    }


def steady_state(folder: Path, out: Path, args, overlays: bool) -> dict:
    """In-process steady state; a short warm-up run first (page cache, oneDNN kernels)."""
    warm = subset(folder, out.parent / "warmup", 24)
    run_inprocess(warm, out.parent / "warmup_out", args, overlays)
    return run_inprocess(folder, out, args, overlays)


def tune(folder: Path, args, device) -> None:
    """In-process steady state over torch threads x workers x batch size."""
    from cambatch.runner.tuning import cpu_cores

    cores = cpu_cores()
    grid = []
    for threads in sorted({1, max(1, cores // 2), cores}):
        for workers in sorted({1, max(1, cores // 2), cores}):
            for batch in (4, 8):
                grid.append((threads, workers, batch))
    print(f"\ntuning on {machine()}, {device_name(device)}, load {load()}")
    print("| threads | workers | batch | overlays img/s | --no-overlays img/s |\n|---|---|---|---|---|")
    run_inprocess(subset(folder, folder.parent / "warmup", 24), folder.parent / "tune_warm", args, True)
    for threads, workers, batch in grid:
        rates = [
            run_inprocess(
                folder, folder.parent / "tune_out", args, ov, threads=threads, workers=workers, batch_size=batch
            )["rate"]
            for ov in (True, False)
        ]
        print(f"| {threads} | {workers} | {batch} | {rates[0]:.1f} | {rates[1]:.1f} |", flush=True)


def cambatch_cmd(folder: Path, out: Path, args) -> list[str]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "cambatch",
        "run",
        str(folder),
        "--out",
        str(out),
        "--quiet",
        "--model",
        args.model,
        "--topk",
        str(args.topk),
        "--precision",
        args.precision,
        "--device",
        args.device,
    ]
    return cmd + (["--weights", args.weights] if args.weights else [])


def peer_model_args(args, device) -> list[str]:
    extra = ["--model", args.model, "--topk", str(args.topk), "--device", str(device)]
    return extra + (["--weights", args.weights] if args.weights else [])


def timed_process(cmd: list[str], sample_rss: bool = False) -> dict:
    """Wall time of a whole process and, when asked, the peak RSS of its process tree (sampled)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            stop.wait(0.02)

    thread = threading.Thread(target=sampler, daemon=True)
    if sample_rss:
        thread.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    if sample_rss:
        thread.join()
    if proc.returncode != 0:
        log(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-2000:]}")
    return {"wall_s": wall, "rc": proc.returncode, "peak_rss_mib": peak[0] / 2**20, "stderr_tail": stderr[-500:]}


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * page
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def cli_wall(flag: str) -> float:
    exe = shutil.which("cambatch")
    cmd = [exe, flag] if exe else [sys.executable, "-m", "cambatch", flag]
    walls = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def breakdown(folder: Path, args, device) -> None:
    """Where the time goes: each stage of the pipeline alone, on the same images and settings."""
    from torch.utils.data import DataLoader

    from cambatch.data.gpu_decode import DecodedBatches, EncodedImageFiles, GpuDecoder, collate_encoded, use_gpu_decode
    from cambatch.data.preprocess import ImageFiles, Preprocess, collate
    from cambatch.layout import OutputLayout
    from cambatch.model.build import load_model
    from cambatch.runner.engine import build_engine
    from cambatch.runner.tuning import plan, torch_threads
    from cambatch.runner.writer import ImageWriter
    from cambatch.sources.discover import discover

    p = plan(device)
    sources = discover([folder])[: args.breakdown_images]
    model = load_model(args.model, args.weights)
    prep = Preprocess(image_size=model.input_size, overlays=True, max_side=1024)
    gpu = use_gpu_decode("auto", device)
    rows = []
    with torch_threads(p.threads):
        for label, workers in (
            (f"decode + resize, {p.workers} workers", p.workers),
            ("decode + resize, main process only", 0),
        ):
            loader = DataLoader(
                EncodedImageFiles(sources, prep) if gpu else ImageFiles(sources, prep),
                batch_size=p.batch_size,
                num_workers=workers,
                collate_fn=collate_encoded if gpu else collate,
                pin_memory=device.type == "cuda",
            )
            if gpu:
                loader = DecodedBatches(loader, GpuDecoder(sources, prep, device))
                label += " + nvJPEG"
            start = time.perf_counter()
            batches = [b for b in loader]
            sync(device)
            rows.append((label, len(sources) / (time.perf_counter() - start)))
        engine = build_engine(model, device, topk=args.topk, precision=args.precision)
        engine(batches[0].pixels)
        sync(device)
        start = time.perf_counter()
        results = [engine(b.pixels) for b in batches]
        rows.append(
            (
                f"model + maps + statistics, batch {p.batch_size} ({p.threads} torch threads)",
                len(sources) / (time.perf_counter() - start),
            )
        )
        start = time.perf_counter()
        for b in batches:
            engine.execution.forward(model.features, (b.pixels.to(device).float() - engine._shift) / engine._scale)
        sync(device)
        rows.append(("  of which the feature extractor alone", len(sources) / (time.perf_counter() - start)))
        with tempfile.TemporaryDirectory() as tmp:
            writer = ImageWriter(
                layout=OutputLayout(Path(tmp)),
                model_name=model.name,
                method="cam",
                run_id="bench",
                class_names=model.class_names,
                colormap="jet",
                alpha=0.5,
                overlays=True,
                named_by_rank=True,
            )
            from concurrent.futures import ThreadPoolExecutor

            for threads in (1, 2):
                start = time.perf_counter()
                with ThreadPoolExecutor(threads) as pool:
                    list(
                        pool.map(
                            lambda a: writer.ok_rows(sources[a[0].index], a[0], a[1], a[2]),
                            [(s, r, i) for b, r in zip(batches, results, strict=True) for i, s in enumerate(b.samples)],
                        )
                    )
                rows.append(
                    (
                        f"overlays ({args.topk} JPEGs per image) + rows, {threads} writer thread(s)",
                        len(sources) / (time.perf_counter() - start),
                    )
                )
    print(f"\nWhere the time goes ({device_name(device)}, each stage alone on the same {len(sources)} images):\n")
    print("| stage | images/s |\n|---|---|")
    for label, rate in rows:
        print(f"| {label} | {rate:.1f} |")


# ---------------------------------------------------------------- helpers


def subset(folder: Path, target: Path, count: int) -> Path:
    """A folder holding links to the first `count` images of `folder`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))[:count]
    if target.exists() and sum(1 for _ in target.rglob("*.*")) == len(files):
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for i, p in enumerate(files):
        dest = target / f"{i:06d}{p.suffix.lower()}"
        try:
            os.link(p, dest)
        except OSError:
            shutil.copyfile(p, dest)
    return target


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from cambatch.runner.tuning import cpu_cores

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {cpu_cores()} cores, {mem:.0f} GiB"


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type}"


def settings(p) -> str:
    return f"batch {p.batch_size}, {p.threads} torch threads, {p.workers} workers"


def print_table(rows, results) -> None:
    import torch

    print(
        f"\ncambatch benchmark: {results['images']} images, model {results['model']} ({results['precision']}), "
        f"device {results['device']}, torch {torch.__version__}"
    )
    print(
        f"machine: {results['machine']}; load average (1/5/15 min) "
        f"before {results['load_before']}, after {results['load_after']}\n"
    )
    print("| measurement | result | ratio / target |\n|---|---|---|")
    for label, value, ratio in rows:
        print(f"| {label} | {value} | {ratio} |")
    sys.stdout.flush()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
