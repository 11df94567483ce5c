"""The inspection side, the CLI and Ray's decode tasks never import torch: reading a report is quick and needs
no model, and a decode worker starts without torch's import."""

from __future__ import annotations

import subprocess
import sys

from conftest import PHOTOS, SAMPLES
from inspecting_support import copy_run, synthesize_run

HEAVY = ("torch", "torchvision", "timm")


def fresh_interpreter(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_reading_summarizing_comparing_and_the_gallery_run_without_torch(tmp_path):
    out = synthesize_run(tmp_path / "run", images=12, classes=3, errors=1)
    code = f"""
import sys, cambatch
out = {str(out)!r}
df = cambatch.load_report(out)
cambatch.summarize_run(out)
cambatch.compare_runs(out, out)
cambatch.build_gallery(out)
cambatch.read_settings(out), cambatch.per_image(df)
cambatch.check_run(out, baseline=out)
print(len(df), sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    assert fresh_interpreter(code) == "37 []"  # 12 images x top-3 + 1 error row; no torch, torchvision or timm


def test_the_cli_and_the_run_options_load_without_torch_or_pandas():
    code = (
        "import sys, cambatch, cambatch.cli, cambatch.config, cambatch.methods, cambatch.layout;"
        "cambatch.config.RunConfig.create('photos', 'out', topk=5);"
        "print(sorted(m for m in ('torch', 'pandas', 'pyarrow', 'cv2') if m in sys.modules))"
    )
    assert fresh_interpreter(code) == "[]"


def test_opencv_is_imported_when_an_overlay_is_drawn_and_not_before():
    """`cambatch --help` and the renderer's import skip OpenCV's (about 0.1 s); the first overlay pays it."""
    code = """
import sys
from cambatch.cli import main
sys.argv = ["cambatch", "--help"]
try:
    main()
except SystemExit:
    pass
import numpy as np
from cambatch.render.overlay import overlay
before = "cv2" in sys.modules
overlay(np.zeros((30, 40, 3), np.uint8), np.zeros((7, 7), np.uint8), colormap="jet", alpha=0.5)
print(before, "cv2" in sys.modules)
"""
    assert fresh_interpreter(code).splitlines()[-1] == "False True"


def test_rays_decode_tasks_run_without_torch(tmp_path):
    """What a Ray decode worker does (`runner.ray_decode`): unpickle sources and a `Preprocess`, decode, no torch."""
    code = f"""
import pickle, sys
import numpy as np
from cambatch.data.inputs import Preprocess
from cambatch.runner.ray_decode import decode_batch
from cambatch.sources.discover import discover
sources = np.array([pickle.dumps(s) for s in discover([{str(SAMPLES)!r}])], dtype=object)
columns = decode_batch({{"source": sources}}, pickle.loads(pickle.dumps(Preprocess(image_size=32, overlays=True))))
print(columns["pixels"].shape, sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    assert fresh_interpreter(code) == "(7, 3, 32, 32) []"


def test_a_run_finds_its_images_and_starts_decoding_them_without_torch(tmp_path):
    """The pipeline up to the model's build: its images found, the read-ahead's workers started and a batch
    taken (`runner.read_ahead`), all while torch is still to be imported."""
    code = f"""
import sys
from cambatch.config import RunConfig
from cambatch.runner import pipeline, read_ahead
from cambatch.runner.inputs import find_sources
config = RunConfig.create([{str(SAMPLES)!r}], {str(tmp_path / "out")!r}, device="cpu", workers=1)
with read_ahead.start(config, find_sources(config, config.out), config.out / "report") as pool:
    print(next(iter(pool)).pixels.shape, sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    assert fresh_interpreter(code) == f"({min(8, len(PHOTOS))}, 3, 224, 224) []"  # a batch of 8 at most


def test_importing_the_model_side_does_load_torch():
    """The checks above can fail: a run does import torch."""
    code = "import sys, cambatch.runner.job; print('torch' in sys.modules)"
    assert fresh_interpreter(code) == "True"


def test_the_default_model_builds_without_timm_or_torchvision():
    """A default run pays for torch alone: timm would import torchvision, and torchvision torch._dynamo."""
    code = (
        "import sys; from cambatch.model.build import load_model; model = load_model();"
        "print(model.class_names[285], sorted(m for m in ('torchvision', 'timm', 'torch._dynamo') if m in sys.modules))"
    )
    assert fresh_interpreter(code) == "Egyptian cat []"


def test_shortcuts_overlays_and_the_gallery_with_maps_run_without_torch(tmp_path, stamped_run_without_overlays):
    """On a real report with maps: mean maps, clusters, re-rendered overlays and the mean-map gallery."""
    out = copy_run(stamped_run_without_overlays[0], tmp_path / "out")
    code = f"""
import sys, cambatch
out = {str(out)!r}
found = cambatch.shortcuts_run(out)
made = cambatch.render_overlays(out, limit=2)
cambatch.build_gallery(out)
from typer.testing import CliRunner
from cambatch.cli import app
checked = CliRunner().invoke(app, ["check", out, "--baseline", out])  # maps: position lock, map similarity
print(int(found.classes.fixed_location.sum()), made.overlays, checked.exit_code,
      sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    assert fresh_interpreter(code) == "1 4 1 []"  # stamp class flagged, 2 images x top-2, `check` fails it; no torch


def test_evaluate_runs_without_torch(tmp_path):
    import numpy as np
    from evaluation_support import write_report

    maps = np.zeros((7, 7), np.float32)
    maps[2:4, 2:4] = 1
    row = {"path": "a.jpg", "width": 70, "height": 70, "class_index": 0, "class_name": "cat", "map": maps}
    out = write_report(tmp_path / "out", [row])
    (tmp_path / "b.csv").write_text("path,x0,y0,x1,y1\na.jpg,20,20,39,39\n")
    code = f"""
import sys, cambatch
result = cambatch.evaluate({str(out)!r}, {str(tmp_path / "b.csv")!r})
print(result.metrics["images"], sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    assert fresh_interpreter(code) == "1 []"


def test_embeddings_slices_and_their_gallery_section_run_without_torch(planted_slice):
    """`reliance` runs the network; `slices` reads the report only."""
    out, _ = planted_slice
    code = f"""
import sys, cambatch
from cambatch.bias.slices import write_slices
out = {str(out)!r}
images, vectors = cambatch.load_embeddings(out)
found = cambatch.find_slices(out)
write_slices(out, found)
cambatch.read_slices(out)
cambatch.build_gallery(out)
print(vectors.shape, len(found.table), sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    assert fresh_interpreter(code) == "(160, 5) 1 []"  # 160 images, 5 features; the planted slice
