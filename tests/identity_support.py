"""A real run over two INPUTs that each hold `x.png` (a cat in one, a cup in the other), with ground truth
for both: the images share a path and must stay two images in every tool that reads the report."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import SAMPLES

# INPUT folder -> (sample photo, label, ground-truth box in its pixels)
PHOTOS = {
    "one": ("chelsea.png", "Egyptian cat", (60, 10, 420, 299)),
    "two": ("coffee.png", "espresso", (100, 50, 300, 250)),
}


def two_folders_run(root: Path, **options) -> Path:
    """`cambatch run root/one root/two --annotations root/boxes.csv --topk 2` (and `options`) into `root/out`;
    returns OUT.
    """
    from cambatch.config import RunConfig
    from cambatch.runner.pipeline import run

    lines = ["path,x0,y0,x1,y1,label"]
    for folder, (photo, label, box) in PHOTOS.items():
        (root / folder).mkdir(parents=True)
        shutil.copyfile(SAMPLES / photo, root / folder / "x.png")
        lines.append(f"{folder}/x.png,{','.join(map(str, box))},{label}")
    (root / "boxes.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    inputs = [root / folder for folder in PHOTOS]
    run(RunConfig.create(inputs=inputs, out=root / "out", annotations=root / "boxes.csv", topk=2, workers=0, **options))
    return root / "out"
