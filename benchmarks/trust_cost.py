"""What the trust options cost (docs/trust.md): a run's img/s with each, and ROAD against pytorch-grad-cam.

    python benchmarks/trust_cost.py [--topk 3] [--threads T] [--peer-images 2]

1. `cambatch.run` over sample_images/ (7 photos; the default model, CPU, --no-overlays, decoding in
   the main process), plain and then with each of --sanity, --road, --deletion-insertion, after one
   plain run that warms the process up: img/s as the run reports it, and the slowdown against plain.
2. ROAD per image: pytorch-grad-cam's `ROADCombined` (its documented use: the image batch, one
   `ClassifierOutputSoftmaxTarget` per image, the maps at the input's resolution; one call per rank)
   against `cambatch.methods.road.road_scores` (one call), on the first M sample images (default: all
   7) and the default model's top-k CAMs: the same network (prepared as a run prepares it:
   channels_last weights), maps and threads; seconds per image, the speed-up, and the largest
   difference of road_combined (each with its own imputation noise, 0.01). cambatch is timed twice: its
   forwards on torch, and on the runtime `--runtime auto` takes here (OpenVINO, else ONNX Runtime: a run's
   default on a CPU), after a first call on the same batch that converts the network or finds it in the cache.

`--threads` sets torch's threads for both parts (default: torch's own). The load average (1, 5, 15
min) is printed before and after each part: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cambatch
from cambatch.methods.perturbation import input_maps
from cambatch.methods.registry import build_method
from cambatch.methods.road import road_scores
from cambatch.model.accel import Execution, prepare_network
from cambatch.model.build import load_model
from cambatch.model.runtime import resolve_runtime

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
OPTIONS = ({}, {"sanity": True}, {"road": True}, {"deletion_insertion": True})


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_costs(topk: int, threads: int | None) -> None:
    print(f"\n1. cambatch run sample_images/ --topk {topk} --no-overlays --workers 0 ({load()})")
    print("| options | img/s | slowdown |\n| --- | ---: | ---: |")
    plain = None
    common = {"topk": topk, "overlays": False, "workers": 0, "threads": threads, "progress": False}
    with tempfile.TemporaryDirectory() as work:
        cambatch.run(SAMPLES, Path(work) / "warm-up", **common)
        for i, options in enumerate(OPTIONS):
            result = cambatch.run(SAMPLES, Path(work) / str(i), **common, **options)
            speed = result.images_per_s
            plain = plain or speed
            flags = " ".join(f"--{name.replace('_', '-')}" for name in options) or "(none)"
            print(f"| {flags} | {speed:.3f} | {plain / speed:.1f}x |")
    print(f"({load()})")


def road_against_pytorch_grad_cam(images_count: int, topk: int) -> None:
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from cambatch.data.inputs import Preprocess
    from cambatch.data.preprocess import ImageFiles, collate
    from cambatch.sources.discover import discover

    model = load_model()
    prepare_network(model.network, torch.device("cpu"))
    files = ImageFiles(discover([SAMPLES])[:images_count], Preprocess(image_size=model.input_size))
    pixels = collate([files[i] for i in range(len(files))]).pixels.float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    images = (pixels - mean) / std
    execution = Execution(device_type="cpu", precision="fp32", compile=False)
    cam = build_method("cam", model, layer=None, scorecam_batch=None, execution=execution, activation="softmax")
    cams = cam(images, topk)
    print(f"\n2. ROAD of the top-{topk} CAMs of {len(images)} sample images, one batch ({load()})")
    rows = []
    for run_on in (execution, on_the_runtime()):
        road_scores(model.network, images, cams, execution=run_on, activation="softmax")  # warm-up (a conversion)
        start = time.perf_counter()
        scores = road_scores(model.network, images, cams, execution=run_on, activation="softmax")["road_combined"]
        seconds = (time.perf_counter() - start) / len(images)
        name = run_on.runtime.label if run_on.runtime is not None else f"torch {torch.__version__}"
        rows.append((f"cambatch road_scores, forwards on {name}", seconds, scores))
    maps = input_maps(cams.maps, images.shape[-2:]).numpy()
    start = time.perf_counter()
    theirs = np.stack(
        [
            ROADCombined()(images, maps[:, k], [ClassifierOutputSoftmaxTarget(int(c)) for c in classes], model.network)
            for k, classes in enumerate(cams.class_index.T)
        ],
        1,
    )
    theirs_s = (time.perf_counter() - start) / len(images)
    print("| implementation | s / image | mean road_combined | speed-up |\n| --- | ---: | ---: | ---: |")
    for name, seconds, scores in rows:
        print(f"| {name} | {seconds:.2f} | {float(scores.mean()):.4f} | {theirs_s / seconds:.1f}x |")
    print(f"| pytorch-grad-cam ROADCombined, one call per rank | {theirs_s:.2f} | {float(theirs.mean()):.4f} | 1.0x |")
    difference = max(float(np.abs(scores.numpy() - theirs).max()) for _, _, scores in rows)
    print(f"largest |difference| of road_combined from pytorch-grad-cam's {difference:.2e} ({load()})")


def on_the_runtime() -> Execution:
    """The execution a CPU run gets with `--runtime auto` (torch where neither runtime is installed)."""
    runtime, _ = resolve_runtime(
        "auto", device_type="cpu", precision="fp32", compile=False, weights="pretrained", notify=print
    )
    return Execution(device_type="cpu", precision="fp32", compile=False, runtime=runtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peer-images", type=int, default=7)
    parser.add_argument("--parts", default="12", help="which parts to run: 1, 2 or 12")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {load()}")
    if "1" in args.parts:
        run_costs(args.topk, args.threads)
    if "2" in args.parts:
        road_against_pytorch_grad_cam(args.peer_images, args.topk)


if __name__ == "__main__":
    main()
