"""How close the trust columns come to their oracles (docs/trust.md), on the tests' own cases: the largest
absolute difference of each, where the tests only assert a bound.

    python benchmarks/trust_oracles.py

Needs the dev extra (pytorch-grad-cam, scipy) and Quantus 0.6 (`pip install --no-deps quantus==0.6.0
scikit-image cachetools`; its opencv-python requirement would clash with opencv-python-headless).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_methods_deletion as deletion  # noqa: E402
import test_methods_road as road  # noqa: E402
import test_methods_sanity as sanity  # noqa: E402

from cambatch.methods.base import select_classes  # noqa: E402
from cambatch.methods.perturbation import input_maps  # noqa: E402
from cambatch.methods.sanity import SanityCheck, other_classes  # noqa: E402
from cambatch.model.build import load_model  # noqa: E402


def sanity_figures(quantus, default_model) -> None:
    for name in ("tiny cam", "default gradcam"):
        model, method, maps_of, images = sanity.oracle_case(name, default_model)
        images = sanity.sample_batch(model, ["chelsea.png", "coffee.png"]) if images is None else images
        cams = method(images, 2)
        ours = SanityCheck(method)(images, cams)
        metric = quantus.MPRT(skip_layers=True, return_last_correlation=True, disable_warnings=True)
        maps = input_maps(cams.maps, images.shape[-2:])
        mprt = metric(
            model=model.network,
            x_batch=images.repeat_interleave(2, 0).numpy(),
            y_batch=cams.class_index.flatten().numpy(),
            a_batch=maps.flatten(0, 1)[:, None].numpy(),
            explain_func=sanity.explainer(maps_of),
            channel_first=True,
            batch_size=cams.class_index.numel(),
        )
        difference = np.abs(ours["sanity_rank_corr"].flatten().numpy() - mprt).max()
        print(f"sanity_rank_corr vs Quantus MPRT ({name}): {difference:.1e}")
        differences = []
        classes = cams.scores.shape[1]
        for (b, k), label in np.ndenumerate(cams.class_index.numpy()):
            other = int(other_classes(cams.class_index[b, k], classes))
            seed = sanity.quantus_seed_for(label, other, classes)
            logit = quantus.RandomLogit(num_classes=classes, seed=seed, disable_warnings=True)(
                model=model.network,
                x_batch=images[b : b + 1].numpy(),
                y_batch=np.array([label]),
                a_batch=maps[b : b + 1, k : k + 1].numpy(),
                explain_func=sanity.explainer(maps_of),
                channel_first=True,
                batch_size=1,
            )
            differences.append(abs(float(ours["class_sensitivity"][b, k]) - float(logit[0])))
        print(f"class_sensitivity vs Quantus RandomLogit ({name}): {max(differences):.1e}")


def road_figures(default_model) -> None:
    """The tests' tiny CNN (noise off and on), and the default model on 2 sample images at 224 px (noise off)."""
    from pytorch_grad_cam.metrics import road as reference

    tiny = road.sensitive_model()
    tiny_images = torch.randn(2, 3, road.SIZE, road.SIZE, generator=torch.Generator().manual_seed(8))
    real_images = sanity.sample_batch(default_model, ["chelsea.png", "coffee.png"])
    cases = [
        ("tiny CNN, 40 px", tiny, tiny_images, 2, (0.0, 0.01)),
        ("default model, 224 px", default_model, real_images, 1, (0.0,)),
    ]
    for name, model, images, topk, noises in cases:
        cams = road.bind("cam", model)(images, topk)
        for noise in noises:
            reference.NoisyLinearImputer.__init__.__defaults__ = (noise, reference.neighbors_weights)
            torch.manual_seed(0)
            ours, theirs = road.scores_of(model, images, cams, noise=noise), road.references(model, images, cams)
            found = ", ".join(f"{k} {np.abs(ours[k].numpy() - v).max():.1e}" for k, v in theirs.items())
            print(f"ROAD vs pytorch-grad-cam ({name}), noise {noise}: {found}")


def deletion_figures() -> None:
    model = deletion.sensitive_model()
    network = model.network.eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        cams = select_classes(network(images), 2, activation="softmax").with_maps(
            torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(12)), images
        )
    ours = deletion.deletion_insertion_scores(
        network, images, cams, execution=deletion.cpu_execution(), activation="softmax"
    )
    maps = input_maps(cams.maps, (32, 32)).numpy()
    worst = 0.0
    for (b, k), c in np.ndenumerate(cams.class_index.numpy()):
        for name, mode in (("deletion_auc", "del"), ("insertion_auc", "ins")):
            curve = deletion.rise_scores(network, images[b : b + 1].clone(), maps[b, k], int(c), mode, 1024 // 16)
            worst = max(worst, abs(float(ours[name][b, k]) - deletion.rise_auc(curve)))
    print(f"deletion_auc, insertion_auc vs RISE's procedure: {worst:.1e}")


def main() -> None:
    import quantus

    default_model = load_model()
    sanity_figures(quantus, default_model)
    road_figures(default_model)
    deletion_figures()


if __name__ == "__main__":
    main()
