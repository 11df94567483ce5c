"""Shared fixtures: one real run of the default model over sample_images, reused by many tests, and the
random-init models several methods' tests share; and the rule that marks the slow tests (`slow_reason`).

`pytest -m "not slow"` is a contributor's fast loop: every module's unit tests and the cheap behaviour
tests on the real default model over the real sample photos. `pytest` runs everything (the README's and
CI's command). The tables below are the whole rule; tests/test_fast_loop.py checks that it holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_images"
PHOTOS = sorted(p for p in SAMPLES.iterdir() if p.suffix in {".png", ".jpg"})


def make_folder(folder: Path, count: int, side: int = 160) -> list[str]:
    """`count` small JPEGs made from the sample photos (distinct names, varied content)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        photo = Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB")
        photo = photo.rotate(15 * (i // len(PHOTOS))).resize((side, int(side * 0.75)))
        name = f"img_{i:03d}.jpg"
        photo.save(folder / name, quality=90)
        names.append(name)
    return names


def cat_on_the_left(path: Path, orientation: int) -> None:
    """A landscape JPEG (stored pixels) with the cat in its left half and plain grey on the right, and an
    EXIF `orientation` (6: displayed turned 90 degrees clockwise, the cat on top).
    """
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB").resize((300, 200))
    stored = Image.new("RGB", (600, 200), (128, 128, 128))
    stored.paste(cat, (0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif)


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """`cambatch run sample_images` with every default, once (maps saved too): (result, the report as read
    by pandas). Tests read it; one that changes a run works on a copy (inspecting_support.copy_run)."""
    import cambatch

    out = tmp_path_factory.mktemp("sample_run")
    result = cambatch.run(SAMPLES, out, progress=False)
    return result, pd.read_parquet(out / "report")


@pytest.fixture(scope="session")
def planted_slice(tmp_path_factory):
    """(OUT, {path: kind}) of a run over photos with a planted error slice (`bias_support`): labels from the
    folders, embeddings kept, ground-truth boxes around the discs."""
    from bias_support import slice_run

    return slice_run(tmp_path_factory.mktemp("planted_slice"), boxes=True)


@pytest.fixture(scope="session")
def rotated_runs(tmp_path_factory):
    """The default model (top-2, overlays) over one EXIF-rotated cat (`cat_on_the_left`, orientation 6) with its
    box in stored pixels (annotations), given as a folder and as a tar shard: ({"photos": result, "shards":
    result}, the sources the two runs read, in order)."""
    from sources_support import write_shard

    import cambatch
    from cambatch.sources.discover import ImageSource

    root = tmp_path_factory.mktemp("rotated")
    folder, shards = root / "photos", root / "shards"
    folder.mkdir()
    cat_on_the_left(folder / "rotated.jpg", orientation=6)
    write_shard(shards / "s.tar", [folder / "rotated.jpg"])
    boxes = root / "boxes.csv"
    boxes.write_text("path,x0,y0,x1,y1,label\nrotated.jpg,0,0,299,199,tabby\n", encoding="utf-8")
    reads, results = [], {}
    original = ImageSource.read_bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ImageSource, "read_bytes", lambda self: (reads.append(self.rel), original(self))[1])
        for given in (folder, shards):
            out = root / f"out-{given.name}"
            results[given.name] = cambatch.run(given, out, annotations=boxes, topk=2, workers=0, progress=False)
    return results, reads


@pytest.fixture(scope="session")
def stamped_run(tmp_path_factory):
    """The shortcut made on purpose (tests/shortcut_support.py), run once with overlays: (out, kinds)."""
    from shortcut_support import stamp_run

    return stamp_run(tmp_path_factory.mktemp("stamp"))


@pytest.fixture(scope="session")
def stamped_run_without_overlays(tmp_path_factory):
    """The same run with `overlays=False`: (out, kinds)."""
    from shortcut_support import stamp_run

    return stamp_run(tmp_path_factory.mktemp("stamp-no-overlays"), overlays=False)


@pytest.fixture(scope="session", autouse=True)
def one_load_of_the_default_model():
    """The default model with its embedded weights is loaded once a session: every in-process `load_model` of it
    (a run's, `default_model`) gets a deep copy of that one load, so a run may move, hook or convert its model
    as it likes. Loading is deterministic there, and it is most of a small run's time (`load_model` proves the
    CAM identity on two forward passes). Any other model, a random init or a weights file, loads as usual.
    """
    import copy

    from cambatch.model import build

    original, loaded = build.load_model, {}

    def load_model(name=build.DEFAULT_MODEL, weights=None, **options):
        if name != build.DEFAULT_MODEL or weights is not None or options.get("num_classes") is not None:
            return original(name, weights, **options)
        if options.get("class_names_file") is not None:
            return original(name, weights, **options)
        key = (options.get("image_size"), options.get("require_cam_head", True))
        if key not in loaded:
            loaded[key] = original(name, weights, **options)
        return copy.deepcopy(loaded[key])

    with pytest.MonkeyPatch.context() as patch:
        for module in [m for n, m in sys.modules.items() if n == "cambatch" or n.startswith("cambatch.")]:
            if getattr(module, "load_model", None) is original:  # `from ..model.build import load_model`
                patch.setattr(module, "load_model", load_model)
        yield


@pytest.fixture(scope="session")
def default_model():
    from cambatch.model.build import load_model

    return load_model()


@pytest.fixture(scope="session")
def resnet18():
    """A random-init torchvision resnet18 (seeded: the same weights in every session)."""
    import torch

    from cambatch.model.build import load_model

    torch.manual_seed(0)
    return load_model("resnet18", "none")


@pytest.fixture(scope="session")
def resnet_images(resnet18):
    from methods_support import sample_batch

    return sample_batch(resnet18)


@pytest.fixture(scope="session")
def vit():
    """A random-init timm ViT-tiny (seeded), loaded for the methods other than cam."""
    import torch

    from cambatch.model.build import load_model

    torch.manual_seed(0)
    return load_model("timm:vit_tiny_patch16_224", "none", require_cam_head=False)


# A local S3 server (moto, on 127.0.0.1) for the tests of URL inputs and OUT URLs: fake keys, and never ~/.aws,
# a profile or the EC2 metadata service.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def aws_env(monkeypatch, endpoint: str, credentials: bool = True) -> None:
    """Point botocore at `endpoint`, with fake keys or none."""
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for name, value in FAKE_CREDENTIALS.items():
        if credentials or name == "AWS_DEFAULT_REGION":
            monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches filesystems by their arguments, not the environment


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint of a moto S3 server on 127.0.0.1, started for the session and stopped after it."""
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """(name, s3fs filesystem) of a fresh, empty bucket on the local server."""
    import s3fs

    aws_env(monkeypatch, s3_server)
    fs = s3fs.S3FileSystem()
    name = f"bucket-{len(fs.ls(''))}"
    fs.mkdir(name)
    yield name, fs
    s3fs.S3FileSystem.clear_instance_cache()


# ---- the slow tests: `pytest -m "not slow"` leaves them out ----
#
# A test is slow when any of these says so; the reason goes into its `slow` marker
# (`pytest -m slow --collect-only -q` lists them, `item.get_closest_marker("slow").kwargs["reason"]` says why).

# It uses one of these fixtures, directly or through another fixture.
SLOW_FIXTURES = {
    "s3_server": "starts a moto S3 server (the tests of URL inputs and OUT URLs)",
    "ray_address": "starts a local Ray",
    "resnet18": "a torchvision model other than the default, run at 224 px",
    "vit": "a timm ViT, run at 224 px",
    "resumed_out": "saves two resnet18 weight files and runs resnet18 through the CLI",
    "exported_resnet18": "exports resnet18 with torch.export",
    "resnet18_state": "saves a resnet18 weights file, built again by each load",
    "small_model": "a torchvision mobilenet_v2, run at 224 px",
    "big_run": "writes and reads 3,000 synthetic images",
    "huge_gallery": "writes a 200,000-image report and builds its gallery",
    "measured": "occludes every sampled image of the planted slice at its class's place and at random controls",
    "sanity_runs": "two runs of the default model with --sanity (a re-initialised copy, two more passes a batch)",
}
# A parameter (of the test or of a fixture it uses) names a model other than the default: it is the name, or
# one of the command-line arguments it holds.
SLOW_MODELS = {
    "resnet18": "resnet18",
    "mobilenet_v3_small": "mobilenet_v3_small",
    "vit_tiny": "a timm ViT",
    "timm:swin_tiny_patch4_window7_224": "a timm Swin",
    "timm:convnext_atto": "a timm ConvNeXt",
    "vgg11": "vgg11",
    "vit_b_16": "a torchvision ViT-B/16",
}
# Every test of the file.
SLOW_FILES = {
    "test_docs_shell.py": "every shell example of the docs through bash, the installed command and torchrun",
    "test_faults.py": "runs of the default model and the cambatch command under injected faults, kills and full disks",
    "test_properties.py": "hypothesis: dozens of generated folders, each run through the default model",
    "test_docs_shortcuts.py": "the shortcuts page's recipes over a run of the stamped photos with clusters",
}
# The test, every parametrization of it (`file::name`) or one (`file::name[id]`).
SLOW_TESTS = {
    # the cambatch command in a subprocess: killed, interrupted, or run whole
    "test_runner_pipeline.py::test_kill_9_then_rerun_gives_every_image_exactly_once": (
        "kills the cambatch command, then runs it again"
    ),
    "test_runner_pipeline.py::test_sigint_finishes_in_flight_work_exits_130_and_resumes": (
        "interrupts the cambatch command, then runs it again"
    ),
    "test_runner_pipeline.py::test_hostile_corpus": "two runs of the cambatch command over a generated corpus",
    "test_cli.py::test_whole_process_run_with_plain_progress_and_summary": "runs the cambatch command",
    "test_runner_read_ahead.py::test_a_run_decodes_before_torch_is_imported_and_its_engine_goes_on_with_that_pool": (
        "runs the default model in a fresh interpreter"
    ),
    "test_cli.py::test_the_installed_command_runs_a_gradient_method": "runs the cambatch command",
    # models other than the default, built in the test
    "test_cli.py::test_a_timm_vit_runs_at_another_image_size_on_its_larger_patch_grid": "a timm ViT at 320 px",
    "test_cli.py::test_torchvision_model_with_random_weights": "resnet18",
    "test_cli.py::test_layer_override_from_the_command_line": "resnet18",
    "test_runner_pipeline.py::test_a_multi_label_densenet_reports_sigmoids_ranked_by_logit_and_correct_by_label_set": (
        "densenet121"
    ),
    "test_runner_pipeline.py::test_a_timm_models_input_is_timms_own_eval_transform_without_its_crop": "a timm ViT",
    "test_runner_precision.py::test_bf16_runs_every_forward_pass_of_every_method_under_autocast": "resnet18",
    "test_runner_precision.py::test_fp32_runs_no_pass_under_autocast": "resnet18",
    "test_model_build.py::test_a_timm_model_takes_mean_std_size_and_interpolation_from_its_own_config": (
        "a timm ViT and ConvNeXt"
    ),
    "test_model_build.py::test_another_image_size_builds_a_timm_vit_with_dynamic_image_sizes": "two timm ViTs",
    "test_model_build.py::test_image_size_sets_the_input_and_a_1x1_feature_map_is_refused": "three resnet18s",
    "test_model_build.py::test_a_model_that_cannot_take_the_image_size_is_refused_with_the_reason": "a ViT-B/16",
    "test_model_build.py::test_torchvision_weights_and_the_default_model_keep_their_own_interpolation": (
        "efficientnet_b0"
    ),
    "test_model_catalog.py::test_each_familys_claim_is_what_load_model_says_of_its_example": (
        "builds an example model of each family"
    ),
    "test_methods_reference.py::"
    "test_swin_gradcam_on_block_tokens_equals_pytorch_grad_cam_with_its_documented_reshape": "a timm Swin",
    "test_methods_layers.py::test_target_layers_found_automatically": "mobilenet_v3_small",
    "test_methods_registry.py::test_cam_refusal_stays_and_auto_falls_back_to_gradcam": "mobilenet_v3_small",
    "test_model_checkpoints.py::test_trusted_whole_model_and_torchscript_checkpoints": "resnet18 through the CLI",
    "test_imports.py::test_importing_the_model_side_does_load_torch": "a fresh interpreter importing torch",
    "test_imports.py::test_the_default_model_builds_without_timm_or_torchvision": (
        "a fresh interpreter importing torch and building the default model"
    ),
    "test_model_runtime.py::test_a_signal_after_an_openvino_run_is_handled_not_a_crash": (
        "a fresh interpreter converting a network to OpenVINO"
    ),
    "test_imports.py::test_shortcuts_overlays_and_the_gallery_with_maps_run_without_torch": (
        "fresh interpreters reading a run, without torch"
    ),
    "test_imports.py::test_embeddings_slices_and_their_gallery_section_run_without_torch": (
        "fresh interpreters reading a run, without torch"
    ),
    "test_imports.py::test_reading_summarizing_comparing_and_the_gallery_run_without_torch": (
        "fresh interpreters reading a run, without torch"
    ),
    "test_model_build.py::test_cam_on_a_model_without_a_cam_head_suggests_method_auto": "a timm ViT",
    # several runs, or long passes, on the default model
    "test_runner_pipeline.py::test_shards_union_equals_a_single_run": "four runs: one whole, three shards",
    "test_runner_pipeline.py::test_incremental_rerun_processes_only_new_and_changed_images": (
        "four runs over one folder"
    ),
    "test_methods_reference.py::test_gradient_methods_equal_pytorch_grad_cam": (
        "pytorch-grad-cam's backward passes over the sample photos, a class at a time"
    ),
    "test_methods_reference.py::test_eigencam_is_pytorch_grad_cams_sign_corrected_projection": (
        "pytorch-grad-cam's SVD over the sample photos"
    ),
    "test_cli.py::test_every_method_runs_end_to_end[default-scorecam]": (
        "Score-CAM on the default model: a forward pass per channel"
    ),
    # gradcam stands for the gradient methods in the fast loop; each one is tested as a module there
    "test_cli.py::test_every_method_runs_end_to_end[default-gradcampp]": "another gradient method end to end",
    "test_cli.py::test_every_method_runs_end_to_end[default-xgradcam]": "another gradient method end to end",
    "test_cli.py::test_every_method_runs_end_to_end[default-layercam]": "another gradient method end to end",
    "test_cli.py::test_faithfulness_columns_summary_and_manifest": "masked forward passes for every map",
    "test_cli.py::test_fail_on_error_exits_1_only_when_an_image_failed": "three runs of the default model",
    "test_golden.py::test_load_map_reads_the_map_the_run_computed_from_the_report_alone": (
        "runs the default model again for every image"
    ),
    # the trust checks' references and behaviour on the default model (docs/trust.md)
    "test_methods_road.py::test_a_map_of_the_object_beats_a_random_map_which_beats_its_inverse": (
        "ROAD of three maps of every generated image on the default model: 18 forwards and imputations a map"
    ),
    "test_methods_deletion.py::test_a_map_of_the_object_beats_a_random_map_which_beats_its_inverse": (
        "deletion and insertion of three maps of every generated image on the default model: 31 forwards a map"
    ),
    "test_methods_sanity.py::test_sanity_rank_corr_equals_quantus_mprt[default gradcam]": (
        "Quantus's MPRT on the default model"
    ),
    "test_methods_sanity.py::test_class_sensitivity_equals_quantus_random_logit[default gradcam]": (
        "Quantus's RandomLogit on the default model"
    ),
    "test_runner_pipeline.py::test_predictions_depend_only_on_the_image_and_the_model_settings": (
        "five runs over 13 images"
    ),
}
SLOW_MARKERS = {"browser": "drives headless Chromium"}
COLLECTED = pytest.StashKey[dict]()  # node id -> item, every test collected (before `-m` deselects)


def slow_reason(item: pytest.Item) -> str | None:
    """Why `item` is slow by the tables above, or None."""
    file = item.path.name
    base = f"{file}::{item.originalname}" if isinstance(item, pytest.Function) else item.nodeid
    for test in (f"{file}::{item.name}", base):
        if test in SLOW_TESTS:
            return SLOW_TESTS[test]
    if file in SLOW_FILES:
        return SLOW_FILES[file]
    for fixture in item.fixturenames:
        if fixture in SLOW_FIXTURES:
            return f"{SLOW_FIXTURES[fixture]} (fixture {fixture})"
    params = getattr(item, "callspec", None)
    for value in params.params.values() if params else ():
        for name in value if isinstance(value, list | tuple) else [value]:
            if isinstance(name, str) and name in SLOW_MODELS:
                return f"{SLOW_MODELS[name]} (parameter {name})"
    for marker in SLOW_MARKERS:
        if item.get_closest_marker(marker):
            return f"{SLOW_MARKERS[marker]} (marker {marker})"
    return None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = slow_reason(item)
        if reason is not None:
            item.add_marker(pytest.mark.slow(reason=reason))
    config.stash[COLLECTED] = {item.nodeid: item for item in items}
