"""cambatch against the machine's limits and against its peers, as one printed table.

    python benchmarks/bench.py [--images N] [--runtimes torch,auto] [--model M --weights W] [--precision P]
                               [--device D] [--repeats R] [--scorecam-images S]

N varied photos are generated from sample_images/ (random crops, scales, JPEG qualities; see
photos.py), and N more for the steady state. Every figure is measured in this run, on the same
photos, model and settings, for each `--runtime` of --runtimes side by side (interleaved, so that
the machine's load hits them alike):

- L: the model's forward pass alone on random input, the best over threads x memory format (torch
  only) x batch size (the machine's limit for the model, not cambatch's setting), per runtime; the
  best setting is printed;
- P: the CPU-budget bound, cores / the sum of the per-image CPU time of each stage timed alone on
  one core (decode + resizes, forward + maps + statistics at 1 thread, per runtime; overlay renders
  + JPEG encodes + rows): what a perfectly overlapped pipeline would reach; on a GPU the device's
  own time per image bounds it too;
- steady state: whole `cambatch run` processes on 2N and N photos, (2N - N) / the difference of
  their wall times, with overlays and with --no-overlays, the median of R repeats; efficiency =
  steady state / P. The fixed cost of a process (start-up, first batch, last part) is what remains
  of the N-photo wall. A warm-up process per runtime first (its conversion made and cached);
- start-up: the imports, the model build and the first one-image batch (a runtime's cached
  conversion found and loaded) of a `cambatch run` process, timed inside one;
- scorecam: whole `cambatch run --method scorecam` processes on S photos, per runtime;
- peers: the whole `cambatch run` process on the N photos against torchcam's CAM loop on the same
  photos (and, with --gradcam-images M, pytorch-grad-cam's GradCAM loop on the first M), R times
  interleaved, medians;
- peak RSS of `cambatch run` (the process and its decoding workers) on 10x the N photos vs 1x;
- wall time of `cambatch --help` and `cambatch --version`.

The load average (as `uptime` prints it) is sampled before and after every section and printed
with the table: on a shared machine the wall-clock rows (L, steady state, peers) suffer from other
jobs, P much less (it is CPU time). `--tune` tries thread/worker/batch settings in-process instead.
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

LOADS: list[str] = []  # the load averages seen, one per section
# The `tuning.plan` of a run that leaves threads, workers, batch size and writers to the machine.
MACHINE_CHOOSES = {"threads": None, "workers": None, "batch_size": None, "writer_threads": None}


def main() -> None:
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="cambatch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    n = args.images
    full = work / f"photos{2 * n}"
    log(f"generating {2 * n} photos under {full}")
    photos.generate(full, 2 * n)  # deterministic: the first N are the N-photo folder's too
    half = subset(full, work / f"first{n}", n)
    log(f"machine: {machine()}; load {sample_load()}")

    from cambatch.runner.engine import resolve_device

    device = resolve_device(args.device)
    runtimes = args.runtimes.split(",")
    if args.tune:
        tune(half, args, device, runtimes)
        return
    results: dict = {"images": n, "machine": machine(), "device": device_name(device), "model": args.model}
    results.update(precision=args.precision, runtimes={rt: runtime_label(rt, args, device) for rt in runtimes})
    rows: list[tuple[str, str, str]] = []

    limits = {}
    for runtime in runtimes:
        limits[runtime] = limit = forward_limit(args, device, runtime)
        log(f"L {runtime}: {limit['rate']:.1f} img/s ({limit['config']}); load {sample_load()}")
        label = f"L {named(runtime, results)}: forward alone, best of {limit['tried']} settings: {limit['config']}"
        rows.append(
            (label, rate(limit["rate"]), ratio_to_first({rt: lim["rate"] for rt, lim in limits.items()}, runtime, "L"))
        )
        rows += limit["per_threads"]

    costs = stage_costs(half, args, device, runtimes)
    log(f"stage costs (ms per image): {costs}; load {sample_load()}")
    bounds = {runtime: budget_bounds(costs, runtime, device) for runtime in runtimes}
    rows += cost_rows(costs, bounds, device, results)
    results.update(L=limits, stage_ms=costs, P=bounds)

    warm = subset(full, work / "warmup", 24)  # page cache, .pyc files, oneDNN's first kernels, the conversions
    for runtime in runtimes:
        timed_process(cambatch_cmd(warm, work / "proc_warm", args, True, runtime))
    steady = steady_state(half, full, work, args, runtimes, n)
    rows += steady_rows(steady, bounds, n, device, results)
    results["steady"] = {
        rt: {mode: {k: v for k, v in s.items() if k != "process"} for mode, s in by_mode.items()}
        for rt, by_mode in steady.items()
    }

    for runtime in runtimes:
        results.setdefault("start_up", {})[runtime] = startup = start_up(half, args, runtime)
        rows.append(
            (
                f"start-up inside a `cambatch run` process, {named(runtime, results)}: "
                "imports / model + method build / first one-image batch",
                f"{startup['imports_s']:.2f} / {startup['build_s']:.2f} / {startup['first_batch_s']:.2f} s",
                "",
            )
        )

    if args.scorecam_images:
        rows += scorecam_rows(full, work, args, runtimes, results)

    if not args.skip_peers:
        rows += peer_rows(half, work, args, device, runtimes, n, results)

    if not args.skip_rss:
        runtime = runtimes[-1]
        one = steady[runtime]["overlays"]["process"]
        many_folder = photos.replicate(half, work / f"photos{n}_x{args.rss_times}", args.rss_times)
        many = timed_process(cambatch_cmd(many_folder, work / "proc_rss", args, True, runtime), sample_rss=True)
        ratio = many["peak_rss_mib"] / one["peak_rss_mib"]
        rows.append(
            (
                f"peak RSS of `cambatch run` (process + workers), {n} photos, {named(runtime, results)}",
                f"{one['peak_rss_mib']:.0f} MiB",
                "",
            )
        )
        rows.append(
            (
                f"peak RSS, {args.rss_times}x = {n * args.rss_times} photos",
                f"{many['peak_rss_mib']:.0f} MiB",
                f"{ratio:.2f}x the 1x run (target <= 1.2x)",
            )
        )
        results.update(rss_1x_mib=one["peak_rss_mib"], rss_many_mib=many["peak_rss_mib"], rss_ratio=ratio)
        log(f"RSS: {ratio:.2f}x; load {sample_load()}")

    for flag, target in (("--help", "target < 0.3 s"), ("--version", "")):
        wall = cli_wall(flag)
        rows.append((f"`cambatch {flag}` wall time (median of 5)", f"{wall:.2f} s", target))
        results[f"cli{flag}"] = wall
    sample_load()
    results["load_averages"] = LOADS
    print_table(rows, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


def runtime_label(runtime: str, args, device) -> str:
    """What `--runtime` resolves to here: `auto (openvino 2026.4.1)`, `torch`."""
    chosen = runtime_of(runtime, args, device)
    if chosen is None:
        return runtime
    return chosen.label if chosen.label.startswith(runtime) else f"{runtime} ({chosen.label})"


def runtime_of(runtime: str, args, device):
    """The `cambatch.model.runtime.Runtime` that `--runtime` gives a run here (None: torch)."""
    from cambatch.model.runtime import resolve_runtime

    weights = "none" if args.weights == "none" else "pretrained"
    options = {"device_type": device.type, "precision": args.precision, "compile": False, "weights": weights}
    return resolve_runtime(runtime, notify=log, **options)[0]


def named(runtime: str, results: dict) -> str:
    return f"`--runtime {results['runtimes'][runtime]}`" if runtime in results["runtimes"] else runtime


def ratio_to_first(values: dict[str, float], runtime: str, what: str) -> str:
    """`x.xx x` the first runtime's figure, for the later runtimes (the first is the baseline)."""
    first = next(iter(values))
    if runtime == first:
        return ""
    return f"{values[runtime] / values[first]:.2f}x {first}'s {what}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="N: photos of the peer and RSS runs (2N are generated)")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None, help="as `cambatch run --weights` (e.g. none)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument(
        "--runtimes", default="torch,auto", help="the `--runtime`s measured side by side; the first is the baseline"
    )
    parser.add_argument("--repeats", type=int, default=1, help="R: steady-state pairs per runtime (the median is kept)")
    parser.add_argument("--scorecam-images", type=int, default=0, help="S: photos of the --method scorecam processes")
    parser.add_argument(
        "--l-batches", default=None, help="batch sizes L tries, e.g. 4,8 (default 1,4,8,16,32; GPU 32-256)"
    )
    parser.add_argument("--l-threads", default=None, help="torch thread counts L tries (default 1, half and all cores)")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per forward-pass setting for L")
    parser.add_argument("--p-images", type=int, default=96, help="photos each stage of P is timed on")
    parser.add_argument("--gradcam-images", type=int, default=0, help="also run pytorch-grad-cam's loop on M photos")
    parser.add_argument("--rss-times", type=int, default=10)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--tune", action="store_true", help="only try threads/workers/batch settings in-process")
    parser.add_argument("--work", default=None, help="folder for generated photos and outputs (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    return parser.parse_args()


# ---------------------------------------------------------------- L: the model's forward alone


def forward_limit(args, device, runtime: str) -> dict:
    """The best images/s of the forward alone on random input over threads x memory format (torch's; a
    converted runtime has its own) x batch, with the passes run as `--runtime runtime` runs them.
    """
    import torch

    from cambatch.model.accel import Execution
    from cambatch.model.build import load_model
    from cambatch.runner.tuning import cpu_cores

    model = load_model(args.model, args.weights)
    network, size = model.network.eval().to(device), model.input_size
    default_batches = (32, 64, 128, 256) if device.type == "cuda" else (1, 4, 8, 16, 32)
    batches = [int(b) for b in args.l_batches.split(",")] if args.l_batches else default_batches
    cores = cpu_cores()
    default_threads = sorted({1, max(1, cores // 2), cores}) if device.type == "cpu" else [min(4, cores)]
    thread_counts = [int(t) for t in args.l_threads.split(",")] if args.l_threads else default_threads
    converted = runtime_of(runtime, args, device)
    execution = Execution(device_type=device.type, precision=args.precision, compile=False, runtime=converted)
    formats = ("contiguous", "channels_last") if converted is None else ("-",)
    before = torch.get_num_threads()
    best = {"rate": 0.0, "config": ""}
    per_threads: dict[int, tuple[float, str]] = {}
    for fmt in formats:
        memory_format = torch.contiguous_format if fmt == "contiguous" else torch.channels_last
        network = network.to(memory_format=memory_format)
        for threads in thread_counts:
            torch.set_num_threads(threads)  # a converted runtime follows torch's count
            for bs in batches:
                x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=memory_format)
                measured = _forward_rate(network, x, execution, args.seconds, device)
                config = f"{threads} thread(s), {fmt + ', ' if converted is None else ''}batch {bs}, {args.precision}"
                if measured > best["rate"]:
                    best = {"rate": measured, "config": config}
                if measured > per_threads.get(threads, (0.0, ""))[0]:
                    per_threads[threads] = (measured, config)
    torch.set_num_threads(before)
    best["tried"] = len(formats) * len(batches) * len(thread_counts)
    best["per_threads"] = [
        (f"  best with {t} thread(s): {c}", rate(r), f"{r / best['rate']:.2f}x L")
        for t, (r, c) in sorted(per_threads.items())
        if len(per_threads) > 1
    ]
    return best


def _forward_rate(network, x, execution, seconds: float, device) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(2):
            execution.forward(network, x)
        sync(device)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            execution.forward(network, x)
            done += x.shape[0]
        sync(device)
        return done / (time.perf_counter() - start)


# ---------------------------------------------------------------- P: the CPU budget


def stage_costs(folder: Path, args, device, runtimes: list[str]) -> dict:
    """Milliseconds of CPU per image of each stage alone, on one core, at 1 thread.

    Timed with the CPU clock, on the first --p-images photos: decode + resizes (with the overlay
    background, and without), forward + maps + statistics for each runtime (one batch at the
    default batch size at a time, with and without the display maps; the process's CPU clock, as a
    runtime may compute on threads of its own), overlays + rows and rows alone. On a GPU, the
    forward's row is the device's wall time per image instead.
    """
    import torch

    from cambatch.data.inputs import Preprocess
    from cambatch.data.preprocess import ImageFiles, collate
    from cambatch.model.build import load_model
    from cambatch.runner.tuning import plan
    from cambatch.sources.discover import discover

    sources = discover([folder])[: args.p_images]
    model = load_model(args.model, args.weights)
    batch_size = plan(device.type, overlays=True, **MACHINE_CHOOSES).batch_size
    costs: dict = {"decode": {}, "write": {}, "forward": {runtime: {} for runtime in runtimes}}
    pinned = _pin_to_one_core()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for overlays in (True, False):
            mode = _mode(overlays)
            prep = Preprocess(
                image_size=model.input_size, interpolation=model.interpolation, overlays=overlays, max_side=1024
            )
            files = ImageFiles(sources, prep)
            files[0]  # first-call costs (PIL's plugins) are not per image
            start = time.thread_time()
            samples = [files[i] for i in range(len(files))]
            costs["decode"][mode] = round((time.thread_time() - start) * 1e3 / len(files), 2)
            batches = [collate(samples[i : i + batch_size]) for i in range(0, len(sources), batch_size)]
            for runtime in runtimes:
                results, ms = _forward_cost(model, batches, args, device, runtime, overlays)
                costs["forward"][runtime][mode] = round(ms, 2)
            costs["write"][mode] = round(_write_cost(model, batches, results, sources, overlays), 2)
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, pinned)
    return costs


def _forward_cost(model, batches, args, device, runtime: str, overlays: bool) -> tuple[list, float]:
    """The engine's results on `batches`, and its milliseconds per image (CPU time; a GPU's wall time)."""
    from cambatch.config import RunConfig
    from cambatch.runner.engine import build_engine

    config = RunConfig.create(
        ["unused"], "unused", topk=args.topk, precision=args.precision, overlays=overlays, runtime=runtime
    )
    engine = build_engine(model, device, config, classes=None, notify=log)
    engine(batches[0].pixels)  # first-call costs (kernels, cuDNN's search, the conversion) are not per image
    sync(device)
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    start = clock()
    results = [engine(b.pixels) for b in batches]
    sync(device)
    return results, (clock() - start) * 1e3 / sum(len(b.samples) for b in batches)


def _write_cost(model, batches, results, sources, overlays: bool) -> float:
    """CPU-ms per image of `ImageWriter.ok_rows` (overlays rendered, encoded and saved; the rows)."""
    from cambatch.layout import OutputLayout
    from cambatch.runner.writer import ImageWriter

    with tempfile.TemporaryDirectory() as tmp:
        writer = ImageWriter(
            layout=OutputLayout(Path(tmp)),
            model_name=model.name,
            method="cam",
            run_id="bench",
            class_names=model.class_names,
            colormap="jet",
            alpha=0.5,
            overlays=overlays,
            named_by_rank=True,
        )
        for i, sample in enumerate(batches[0].samples):  # first-call costs (imports, palettes) are not per image
            writer.ok_rows(sources[sample.index], sample, results[0], i)
        start = time.thread_time()
        for batch, result in zip(batches, results, strict=True):
            for i, sample in enumerate(batch.samples):
                writer.ok_rows(sources[sample.index], sample, result, i)
        return (time.thread_time() - start) * 1e3 / len(sources)


def _pin_to_one_core() -> set[int]:
    """Pin the calling thread to its current core; returns the affinity to restore."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    return before


def _mode(overlays: bool) -> str:
    return "overlays" if overlays else "no_overlays"


def budget_bounds(costs: dict, runtime: str, device) -> dict[str, float]:
    """P with overlays and without: cores / CPU-s per image (and, on a GPU, 1 / the device's s per image)."""
    from cambatch.runner.tuning import cpu_cores

    bounds = {}
    for mode in ("overlays", "no_overlays"):
        host = costs["decode"][mode] + costs["write"][mode]
        forward = costs["forward"][runtime][mode]
        if device.type == "cpu":
            bounds[mode] = cpu_cores() * 1e3 / (host + forward)
        else:
            bounds[mode] = min(cpu_cores() * 1e3 / host, 1e3 / forward)
    return bounds


def cost_rows(costs: dict, bounds: dict, device, results: dict) -> list[tuple[str, str, str]]:
    from cambatch.runner.tuning import cpu_cores

    forward = "forward + maps + statistics, 1 thread" if device.type == "cpu" else "forward + maps on the device (wall)"
    rows = []
    for mode, label in (("overlays", "overlays"), ("no_overlays", "--no-overlays")):
        what = "overlay renders + JPEG encodes + rows" if mode == "overlays" else "rows"
        for runtime, by_mode in costs["forward"].items():
            parts = f"{costs['decode'][mode]:.1f} / {by_mode[mode]:.1f} / {costs['write'][mode]:.1f} ms"
            rows.append(
                (
                    f"per image, one core, {label}, {named(runtime, results)}: decode + resizes / {forward} / {what}",
                    parts,
                    "",
                )
            )
    for mode, label in (("overlays", "overlays"), ("no_overlays", "--no-overlays")):
        for runtime in bounds:
            ratio = ratio_to_first({rt: b[mode] for rt, b in bounds.items()}, runtime, "P")
            rows.append(
                (
                    f"P ({cpu_cores()} cores / the sum above), {label}, {named(runtime, results)}",
                    rate(bounds[runtime][mode]),
                    ratio,
                )
            )
    return rows


# ---------------------------------------------------------------- whole processes


def steady_state(half: Path, full: Path, work: Path, args, runtimes: list[str], n: int) -> dict:
    """Per runtime and mode: the median over --repeats of N / (wall of 2N photos - wall of N), the
    runtimes interleaved within each repeat.
    """
    rates: dict = {rt: {m: [] for m in ("overlays", "no_overlays")} for rt in runtimes}
    steady: dict = {rt: {} for rt in runtimes}
    for overlays in (True, False):
        mode = _mode(overlays)
        for _ in range(args.repeats):
            for runtime in runtimes:
                out = work / f"proc_{mode}_{runtime}"
                small = timed_process(cambatch_cmd(half, out, args, overlays, runtime), sample_rss=overlays)
                large = timed_process(cambatch_cmd(full, out, args, overlays, runtime))
                # The N-photo run slower than the 2N one means the machine's load changed between them.
                got = n / (large["wall_s"] - small["wall_s"]) if large["wall_s"] > small["wall_s"] else float("nan")
                rates[runtime][mode].append(got)
                if mode not in steady[runtime] or small["wall_s"] < steady[runtime][mode]["wall_n"]:
                    steady[runtime][mode] = {"wall_n": small["wall_s"], "wall_2n": large["wall_s"], "process": small}
                log(f"steady state, {mode}, {runtime}: {got:.1f} img/s; load {sample_load()}")
        for runtime in runtimes:
            found = steady[runtime][mode]
            found["rates"] = rates[runtime][mode]
            found["rate"] = statistics.median(rates[runtime][mode])
            found["fixed_s"] = found["wall_n"] - n / found["rate"]
    return steady


def steady_rows(steady: dict, bounds: dict, n: int, device, results: dict) -> list[tuple[str, str, str]]:
    from cambatch.runner.tuning import plan

    rows = []
    for mode, label in (("overlays", "overlays"), ("no_overlays", "--no-overlays")):
        p = plan(device.type, overlays=mode == "overlays", **MACHINE_CHOOSES)
        rates = {rt: by_mode[mode]["rate"] for rt, by_mode in steady.items()}
        for runtime, by_mode in steady.items():
            s = by_mode[mode]
            runs = ", ".join(f"{r:.1f}" for r in s["rates"])
            target = (
                f"{s['rate'] / bounds[runtime][mode]:.2f}x P (target >= 0.85x)" if s["rate"] == s["rate"] else "n/a"
            )
            rows.append(
                (
                    f"steady state, {label}, {named(runtime, results)}: ({2 * n} - {n} photos) / "
                    f"({s['wall_2n']:.1f} - {s['wall_n']:.1f} s), median of [{runs}] img/s; {settings(p)}",
                    rate(s["rate"]),
                    "; ".join(filter(None, [target, ratio_to_first(rates, runtime, "steady state")])),
                )
            )
    for mode, label in (("overlays", "overlays"), ("no_overlays", "--no-overlays")):
        for runtime, by_mode in steady.items():
            rows.append(
                (
                    f"fixed cost of a process (start-up, first batch, last part), {label}, {named(runtime, results)}",
                    f"{by_mode[mode]['fixed_s']:.1f} s",
                    "",
                )
            )
    return rows


def scorecam_rows(full: Path, work: Path, args, runtimes: list[str], results: dict) -> list[tuple[str, str, str]]:
    """Whole `--method scorecam` processes on S photos, per runtime (a warm-up process first: conversions)."""
    count = args.scorecam_images
    folder = subset(full, work / f"scorecam{count}", count)
    walls = {}
    for runtime in runtimes:
        timed_process(
            cambatch_cmd(
                subset(full, work / "scorecam1", 1), work / "proc_scorecam_warm", args, False, runtime, "scorecam"
            )
        )
    for runtime in runtimes:
        walls[runtime] = timed_process(cambatch_cmd(folder, work / "proc_scorecam", args, False, runtime, "scorecam"))[
            "wall_s"
        ]
        log(f"scorecam {runtime}: {walls[runtime]:.1f} s; load {sample_load()}")
    results["scorecam"] = walls
    speeds = {rt: count / wall for rt, wall in walls.items()}
    return [
        (
            f"whole process, {count} photos, `--method scorecam --no-overlays`, {named(runtime, results)}",
            f"{walls[runtime]:.1f} s ({rate(speeds[runtime])})",
            ratio_to_first(speeds, runtime, "speed"),
        )
        for runtime in runtimes
    ]


def peer_rows(folder: Path, work: Path, args, device, runtimes: list[str], n: int, results: dict) -> list:
    """Whole processes of each peer and of `cambatch run` (each runtime) on the same photos, interleaved R times:
    the medians and their ratio (one run of each swung the ratio by 15 % on a 2-core VM).
    """
    peers = [("torchcam CAM loop", "torchcam_loop.py", folder, n, 2.5)]
    if args.gradcam_images:
        m = min(args.gradcam_images, n)
        peers.append(("pytorch-grad-cam GradCAM loop", "gradcam_loop.py", subset(folder, work / f"first{m}", m), m, 8))
    rows = []
    for name, script, images, count, target in peers:
        cmd = [sys.executable, str(HERE / "peers" / script), str(images), str(work / f"proc_{script[:-3]}")]
        cmd += peer_model_args(args, device)
        theirs, mine = [], {runtime: [] for runtime in runtimes}
        for _ in range(args.repeats):
            peer = timed_process(cmd)
            if peer["rc"] != 0:
                tail = peer["stderr_tail"][-120:].replace("\n", " ")
                rows.append((f"whole process, {count} photos: {name}", "failed", tail))
                break
            theirs.append(peer["wall_s"])
            for runtime in runtimes:
                process = timed_process(cambatch_cmd(images, work / "proc_peer_cb", args, True, runtime))
                mine[runtime].append(process["wall_s"])
        if len(theirs) < args.repeats:
            continue
        medians = {runtime: statistics.median(walls) for runtime, walls in mine.items()}
        for runtime, walls in mine.items():
            label = f"whole process, {count} photos: `cambatch run`, {named(runtime, results)}"
            rows.append((label, f"{medians[runtime]:.1f} s ({_walls(walls)})", rate(count / medians[runtime])))
        peer_wall = statistics.median(theirs)
        ratios = {runtime: peer_wall / wall for runtime, wall in medians.items()}
        shown = "; ".join(f"{named(rt, results)} {r:.2f}x faster" for rt, r in ratios.items())
        rows.append(
            (
                f"whole process, {count} photos: {name}, median of {args.repeats} beside `cambatch run`",
                f"{peer_wall:.1f} s ({_walls(theirs)})",
                f"{shown} (target >= {target}x)",
            )
        )
        results[script[:-3]] = {"wall_s": theirs, "cambatch_wall_s": mine, "ratios": ratios}
        log(f"{name}: {ratios}; load {sample_load()}")
    return rows


def _walls(walls: list[float]) -> str:
    return ", ".join(f"{wall:.1f}" for wall in walls)


def start_up(folder: Path, args, runtime: str) -> dict:
    """Imports, model + method build and the first one-image batch of a `cambatch run` process, timed
    inside a fresh one (the median of 3).
    """
    script = (
        "import json, sys, time, tempfile\n"
        "t0 = time.perf_counter()\n"
        "from cambatch.config import RunConfig\n"
        "from cambatch.runner import job\n"
        "t1 = time.perf_counter()\n"
        "config = RunConfig.create(inputs=[sys.argv[1]], out=tempfile.mkdtemp(), model=sys.argv[2],"
        " weights=sys.argv[3] or None, precision=sys.argv[4], device=sys.argv[5], runtime=sys.argv[6])\n"
        "stages = job.build_stages(config)\n"
        "t2 = time.perf_counter()\n"
        "import torch\n"
        "size = stages.model.input_size\n"
        "stages.engine(torch.zeros(1, 3, size, size, dtype=torch.uint8))\n"
        "print(json.dumps({'imports_s': t1 - t0, 'build_s': t2 - t1, 'first_batch_s': time.perf_counter() - t2}))\n"
    )
    cmd = [sys.executable, "-c", script, str(folder), args.model, args.weights or "", args.precision, args.device]
    cmd.append(runtime)
    walls = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout) for _ in range(3)]
    return {key: statistics.median(w[key] for w in walls) for key in ("imports_s", "build_s", "first_batch_s")}


# ---------------------------------------------------------------- --tune: settings in-process


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

    def note(self, line: str) -> None:
        log(line)


def run_inprocess(folder: Path, out: Path, args, overlays: bool, **options) -> float:
    """Images/s of an in-process run from the end of its first batch to its end (last part closed)."""
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
    run(config, clock)
    end = time.perf_counter()
    t0, n0 = clock.marks[1] if len(clock.marks) > 1 else clock.marks[0]
    return (clock.done - n0) / max(end - t0, 1e-9)


def tune(folder: Path, args, device, runtimes: list[str]) -> None:
    """In-process steady state over runtimes x threads (torch's, which a runtime follows) x workers x
    writer threads x batch size, the runtimes interleaved.
    """
    from cambatch.runner.tuning import cpu_cores

    cores = cpu_cores()
    counts = sorted({1, max(1, cores // 2), cores})
    grid = [
        (threads, workers, writers, batch)
        for threads in counts
        for workers in counts
        for writers in sorted({1, max(2, cores // 4)})
        for batch in (4, 8)
    ]
    print(f"\ntuning on {machine()}, {device_name(device)}, load {sample_load()}")
    print("| runtime | threads | workers | writers | batch | overlays img/s | --no-overlays img/s |")
    print("|---|---|---|---|---|---|---|")
    for runtime in runtimes:
        run_inprocess(
            subset(folder, folder.parent / "warmup", 24), folder.parent / "tune_warm", args, True, runtime=runtime
        )
    for threads, workers, writers, batch in grid:
        for runtime in runtimes:
            options = dict(threads=threads, workers=workers, writer_threads=writers, batch_size=batch, runtime=runtime)
            rates = [run_inprocess(folder, folder.parent / "tune_out", args, ov, **options) for ov in (True, False)]
            print(
                f"| {runtime} | {threads} | {workers} | {writers} | {batch} | {rates[0]:.1f} | {rates[1]:.1f} |",
                flush=True,
            )


# ---------------------------------------------------------------- processes


def cambatch_cmd(folder: Path, out: Path, args, overlays: bool, runtime: str, method: str = "cam") -> list[str]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "cambatch", "run", str(folder), "--out", str(out), "--quiet", "--model", args.model]
    cmd += ["--topk", str(args.topk), "--precision", args.precision, "--device", args.device]
    cmd += ["--runtime", runtime, "--method", method]
    cmd += [] if overlays else ["--no-overlays"]
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


def sample_load() -> str:
    """The 1/5/15-minute load average, as `uptime` prints it; kept for the table."""
    try:
        value = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        value = "?"
    LOADS.append(value)
    return value


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
    return f"batch {p.batch_size}, {p.threads} torch threads, {p.workers} workers, {p.writer_threads} writers"


def rate(value: float) -> str:
    return f"{value:.1f} img/s"


def print_table(rows, results) -> None:
    import torch

    print(
        f"\ncambatch benchmark: {results['images']} photos (and {2 * results['images']} for the steady state), "
        f"model {results['model']} ({results['precision']}), device {results['device']}, torch {torch.__version__}"
    )
    print(f"machine: {results['machine']}")
    print(f"load average (1/5/15 min, as `uptime`), section by section: {'; '.join(results['load_averages'])}\n")
    print("| measurement | result | ratio / target |\n|---|---|---|")
    for label, value, ratio in rows:
        print(f"| {label} | {value} | {ratio} |")
    sys.stdout.flush()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
