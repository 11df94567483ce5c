"""Relative cost of the map methods: one batch of the sample images, top-3 classes, on this machine.

    python benchmarks/methods_cost.py [--models efficientnet_lite0 resnet18] [--methods gradcam ...]
                                      [--repeats 5] [--device cpu]

Prints a Markdown table per model: the median seconds per batch of each method and its cost
relative to one plain forward pass of the batch. The methods run round-robin, so that a shared
machine's load drifts over all of them alike; Score-CAM is timed once (it is slow) and its count of
masked forward passes is shown. The ratios are what docs/performance.md's method table quotes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from cambatch.data.inputs import Preprocess
from cambatch.data.preprocess import ImageFiles, collate
from cambatch.methods.registry import METHODS, build_method
from cambatch.model.accel import Execution
from cambatch.model.build import load_model
from cambatch.model.catalog import ACTIVATIONS
from cambatch.sources.discover import discover

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"


def images_for(model, device: torch.device) -> torch.Tensor:
    sources = discover([SAMPLES])
    files = ImageFiles(sources, Preprocess(image_size=model.input_size, interpolation=model.interpolation))
    pixels = collate([files[i] for i in range(len(sources))]).pixels.float() / 255
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    return ((pixels - mean) / std).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "resnet18"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, top-{args.topk}")
    for name in args.models:
        torch.manual_seed(0)
        weights = None if name == "efficientnet_lite0" else "none"
        model = load_model(name, weights, require_cam_head=False).to(device)
        images = images_for(model, device)
        execution = Execution(device_type=device.type, precision="fp32", compile=False)
        runs = {"(plain forward)": (None, lambda network=model.network, images=images: network(images))}
        for method in args.methods:
            if method == "cam" and model.head is None:
                continue
            explain = build_method(
                method, model, layer=None, scorecam_batch=None, execution=execution, activation=ACTIVATIONS[0]
            )
            runs[method] = (explain, lambda explain=explain, images=images: explain(images, args.topk))
        seconds: dict[str, list[float]] = {key: [] for key in runs}
        for repeat in range(args.repeats + 1):  # round-robin, so that load drift hits every method alike
            for key, (explain, fn) in runs.items():
                if key == "scorecam" and repeat != 1:
                    continue  # slow: timed once, after the others' warm-up round
                start = time.perf_counter()
                with torch.inference_mode(explain is None):
                    fn()
                sync(device)
                if repeat:
                    seconds[key].append(time.perf_counter() - start)
        forward = statistics.median(seconds["(plain forward)"])
        print(
            f"\n{name} ({'embedded ImageNet weights' if weights is None else 'random init'}), "
            f"batch of {len(images)} images at {model.input_size} px"
        )
        print("| method | layer | seconds per batch | relative to one forward |")
        print("| --- | --- | ---: | ---: |")
        for key, (explain, _) in runs.items():
            extra = ""
            if key == "scorecam":  # count the (image, channel) pairs it forwarded
                grid = explain.target.to_grid(_activation(explain, images))
                extra = f" ({int((grid.amax((2, 3)) > grid.amin((2, 3))).sum())} masked forwards)"
            median = statistics.median(seconds[key])
            print(f"| {key}{extra} | {explain.layer if explain else ''} | {median:.3f} | {median / forward:.1f} |")


def _activation(explain, images: torch.Tensor) -> torch.Tensor:
    captured = {}
    handle = explain.target.module.register_forward_hook(lambda m, i, o: captured.update(a=o.detach()))
    try:
        with torch.inference_mode():
            explain.network(images)
    finally:
        handle.remove()
    return captured["a"]


if __name__ == "__main__":
    main()
