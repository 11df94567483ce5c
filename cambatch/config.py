"""The run options, declared once: `RunConfig` and its groups.

Every option of `cambatch run` and `cambatch.run(...)` is one field below, with its default, its
allowed values, its validation and its help line. `cambatch.cli` builds the command's options from
these fields and `cambatch.api` passes its keywords through `RunConfig.create`; neither repeats a
default or a choice. A new option is one `option(...)` field in the group it belongs to, and the
code that reads it (`config.<group>.<name>`).

Torch-free: `cambatch --help` and a bad option answer without importing the model side.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError
from .methods.registry import METHOD_CHOICES
from .model.catalog import ACTIVATIONS, DEFAULT_MODEL, PRECISIONS, RUNTIMES
from .render.colormaps import COLORMAPS
from .sources.remote import is_url

GPU_DECODE_MODES = ("auto", "on", "off")
ENGINES = ("plain", "ray")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_SHARD = re.compile(r"\d+/\d+")


@dataclass(frozen=True, kw_only=True)
class Spec:
    """What the CLI and the validation need to know about one option."""

    help: str
    choices: Sequence[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: re.Pattern | None = None  # a text option must match it in full
    expect: str = ""  # what `pattern` stands for, in the error message
    negated_flag: str | None = None  # a default-True switch spelled as its negation on the CLI (`--no-overlays`)
    convert: Callable[[Any], Any] | None = None  # Python values (and the CLI's text) to the field's type


def option(default: Any, help: str, **spec: Any) -> Any:
    """A field of a `RunConfig` group: its default and its `Spec`."""
    return field(default=default, metadata={"spec": Spec(help=help, **spec)})


def spec_of(f: Field) -> Spec:
    return f.metadata["spec"]


def flag(name: str) -> str:
    """The CLI spelling of option `name`."""
    return "--" + name.replace("_", "-")


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def _absolute_path(value: Any) -> Path | None:
    """A path kept absolute: the run's settings record it for `cambatch evaluate`, run from anywhere."""
    return None if value is None else Path(value).expanduser().absolute()


def _names(value: Any) -> tuple[str, ...] | None:
    """A list of class names or indices, or one comma-separated string of them."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(item.strip() for item in items if item.strip()) or None


class _Group:
    """Validation shared by the groups: every field checked against its `Spec`, one message per problem."""

    def __post_init__(self) -> None:
        for f in fields(self):
            spec = spec_of(f)
            if spec.convert is not None:
                object.__setattr__(self, f.name, spec.convert(getattr(self, f.name)))
            problem = _problem(getattr(self, f.name), spec)
            if problem:
                raise UsageError(f"{f.name} ({flag(f.name)}) {problem}")


def _problem(value: Any, spec: Spec) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if spec.choices is not None and value not in spec.choices:
        return f"must be one of {', '.join(spec.choices)}, not {value!r}"
    if spec.pattern is not None and not spec.pattern.fullmatch(str(value)):
        return f"takes {spec.expect}, not {value!r}"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g}, not {value}"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be at most {spec.maximum:g}, not {value}"
    return None


@dataclass(frozen=True, kw_only=True)
class SourceOptions(_Group):
    """Which images: besides the INPUT folders and files."""

    from_list: Path | None = option(
        None,
        "A .txt (a path a line), .csv or .parquet (column path, optional label) list of images; "
        "relative paths resolve against the list's folder.",
        convert=_path,
    )
    labels_from_dirs: bool = option(
        False,
        "Label each image with the first folder of its path under its INPUT, as torchvision's ImageFolder does "
        "(INPUT/espresso/nested/x.jpg: espresso); images at the INPUT's top get no label.",
    )
    annotations: Path | None = option(
        None,
        "Ground truth: a VOC/ImageNet XML folder, COCO JSON, CSV (path,x0,y0,x1,y1[,label]), mask PNG folder or "
        "WSOL metadata folder. Fills labels; adds gt_boxes, gt_box_iou, energy_in_gt, pointing_hit.",
        convert=_absolute_path,
    )
    shard: str | None = option(
        None,
        "I/N: process shard I of N (default: SLURM_ARRAY_TASK_ID/COUNT, else RANK/WORLD_SIZE, else 0/1).",
        pattern=_SHARD,
        expect="I/N, e.g. 0/8",
    )


@dataclass(frozen=True, kw_only=True)
class ModelOptions(_Group):
    """The classifier and its weights."""

    model: str = option(DEFAULT_MODEL, f"{DEFAULT_MODEL} (offline), a torchvision model name, or timm:NAME.")
    weights: str | None = option(
        None,
        "A local checkpoint (state_dict, .safetensors, torch.export .pt2), or 'none' for random init. "
        "Default: pretrained.",
    )
    num_classes: int | None = option(None, "Classes of a fine-tuned checkpoint.", minimum=1)
    class_names: Path | None = option(None, "Text file of class names, one a line.", convert=_path)
    image_size: int | None = option(
        None, "Model input side; the whole image is resized to it (default: the model's own).", minimum=32
    )
    trust_checkpoint: bool = option(
        False, "Allow a full unpickle of --weights (pickled model, TorchScript): only for files you own."
    )
    activation: str = option(
        ACTIVATIONS[0],
        "How logits become probabilities: softmax (one class per image), or sigmoid (multi-label heads).",
        choices=ACTIVATIONS,
    )
    threshold: float = option(
        0.5,
        "With --activation sigmoid: the classes predicted are those with probability >= this (for `correct`).",
        minimum=0.0,
        maximum=1.0,
    )


@dataclass(frozen=True, kw_only=True)
class MapOptions(_Group):
    """Which classes are explained, and how their maps are made."""

    method: str = option(
        "cam",
        "How maps are made (docs/methods.md); auto: cam where the model's head allows it, else gradcam.",
        choices=METHOD_CHOICES,
    )
    topk: int = option(3, "Classes explained per image.", minimum=1)
    classes: tuple[str, ...] | None = option(
        None, "Comma-separated class names or indices to explain instead of the top-k.", convert=_names
    )
    explain_label: bool = option(
        False,
        "Also explain each image's label class (--labels-from-dirs, --from-list, --annotations) when it is not "
        "among the explained ones: one more row, at its true rank (ground-truth-known localization).",
    )
    layer: str | None = option(
        None, "Target layer of the non-cam methods, a dotted module path (default: found automatically)."
    )
    scorecam_batch: int | None = option(
        None, "Masked images per forward pass for scorecam (default: 32 on CPU, 256 on GPU).", minimum=1
    )
    faithfulness: bool = option(
        False, "Score each map: masked_probability, confidence_drop, confidence_increase columns."
    )
    sanity: bool = option(
        False,
        "Sanity-check each map (docs/trust.md): sanity_rank_corr against a re-initialised model, class_sensitivity "
        "against another class's map. Holds a second copy of the model; 2 more passes of the method per batch.",
    )
    road: bool = option(
        False, "ROAD faithfulness of each map (docs/trust.md): road_morf, road_lerf, road_combined; 18 forwards a map."
    )
    deletion_insertion: bool = option(
        False,
        "RISE deletion and insertion of each map (docs/trust.md): deletion_auc, insertion_auc; 30 forwards a map.",
    )
    embeddings: bool = option(
        False,
        "Keep each image's pooled feature vector (the head's input; for the other methods the pooled target "
        "layer) in the report's embedding column, float16, on the image's best-ranked row (`cambatch slices`).",
    )


@dataclass(frozen=True, kw_only=True)
class OutputOptions(_Group):
    """What is written besides the report."""

    overlays: bool = option(
        True, "Write heatmap overlays; --no-overlays writes the report only.", negated_flag="--no-overlays"
    )
    colormap: str = option("jet", "Overlay colormap.", choices=COLORMAPS)
    alpha: float = option(0.5, "Heatmap opacity over the photo, 0 to 1.", minimum=0.0, maximum=1.0)
    max_side: int = option(1024, "Cap on the overlay's longest side; 0 keeps the photo's size.", minimum=0)
    images_per_part: int = option(1000, "Publish a report part after this many images (or 60 s).", minimum=1)
    gallery: bool = option(False, "Also build the HTML gallery in OUT/gallery/ at the end.")


@dataclass(frozen=True, kw_only=True)
class SpeedOptions(_Group):
    """Where and how fast: none of these changes a result beyond float rounding."""

    device: str = option(
        "auto",
        "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps.",
        pattern=_DEVICE,
        expect="auto, cpu, cuda, cuda:N or mps",
    )
    batch_size: int | None = option(
        None, "Images per batch (default: from the machine; 8 on CPU, 64 on GPU).", minimum=1
    )
    workers: int | None = option(
        None, "Decoding worker processes; 0 decodes in the main process (default: from the machine).", minimum=0
    )
    threads: int | None = option(
        None,
        "Torch threads for the model (default: on a CPU, chosen during the run: cores less workers, or all).",
        minimum=1,
    )
    writer_threads: int | None = option(None, "Threads rendering overlays (default: from the machine).", minimum=1)
    precision: str = option(
        "fp32", "Autocast of every forward pass (maps stay float32); fp16 needs a GPU.", choices=tuple(PRECISIONS)
    )
    compile: bool = option(False, "torch.compile the passes that need no layer hook (cam, scorecam, faithfulness).")
    runtime: str = option(
        "auto",
        "What runs the forward passes that need no gradient (cam, eigencam, scorecam's masked passes, faithfulness): "
        "openvino, onnxruntime (pip install 'cambatch[openvino]' / 'cambatch[onnxruntime]') or torch; auto: on a CPU "
        "OpenVINO, else ONNX Runtime, else torch; torch on a GPU. Conversions are cached in CAMBATCH_CACHE.",
        choices=RUNTIMES,
    )
    gpu_decode: str = option(
        "auto", "Decode JPEGs on the GPU with nvJPEG: auto (on a CUDA device), on, off.", choices=GPU_DECODE_MODES
    )
    engine: str = option(
        "plain",
        "plain: this process and its loader workers; ray: a Ray Data pipeline (pip install 'cambatch[ray]').",
        choices=ENGINES,
    )
    ray_address: str | None = option(
        None, "With --engine ray: the cluster to join (default: RAY_ADDRESS, else a local Ray started for the run)."
    )
    concurrency: int | None = option(
        None, "With --engine ray: CAM actors (default: one per GPU of the cluster, else 1).", minimum=1
    )


@dataclass(frozen=True, kw_only=True)
class JobOptions(_Group):
    """Resume and retries."""

    overwrite: bool = option(False, "Start over instead of resuming.")
    retry_errors: bool = option(False, "Redo images whose earlier attempt failed.")


@dataclass(frozen=True, kw_only=True)
class CheckOptions(_Group):
    """After the run: its check (`cambatch check`).

    Neither option changes a result, so a resume never compares them (`report.settings` gives them no `resume`).
    """

    check: Path | None = option(
        None,
        "When the run ends, check it against this policy (TOML; `cambatch check --init FILE` writes the default): "
        "exit 1 when a check fails.",
        convert=_path,
    )
    baseline: str | None = option(
        None, "With --check: the earlier run (its OUT, or its URL) that the baseline checks compare with."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline is not None and self.check is None:
            raise UsageError("baseline (--baseline) is for a check: give check (--check POLICY) too")


GROUPS: dict[str, type[_Group]] = {
    "source": SourceOptions,
    "network": ModelOptions,
    "maps": MapOptions,
    "output": OutputOptions,
    "speed": SpeedOptions,
    "job": JobOptions,
    "audit": CheckOptions,
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Every setting of a run, in groups. Build one with `RunConfig.create(inputs, out, **options)`.

    Invalid settings raise `UsageError` when the config is made, before any work.
    """

    inputs: tuple[Path | str, ...] = ()  # local paths, and fsspec URLs as given
    out: Path | str  # a local folder, or an fsspec URL as given (`cambatch.runner.remote_out`)
    source: SourceOptions = field(default_factory=SourceOptions)
    network: ModelOptions = field(default_factory=ModelOptions)
    maps: MapOptions = field(default_factory=MapOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    job: JobOptions = field(default_factory=JobOptions)
    audit: CheckOptions = field(default_factory=CheckOptions)

    def __post_init__(self) -> None:
        # URLs stay text: a Path would fold `s3://bucket` into `s3:/bucket`.
        object.__setattr__(self, "inputs", tuple(str(p) if is_url(str(p)) else Path(p) for p in self.inputs))
        object.__setattr__(self, "out", _out_location(self.out))
        if isinstance(self.out, str):
            self._check_out_url()
        if not self.inputs and self.source.from_list is None:
            raise UsageError("give at least one input folder or image, or a list of images (from_list, --from-list)")

    def _check_out_url(self) -> None:
        """What an OUT on a store (`cambatch.runner.remote_out`) cannot do yet, refused before any work."""
        if self.output.gallery:
            raise UsageError(
                f"gallery (--gallery) needs a local OUT, not {self.out}: run `cambatch gallery` on a local copy"
            )

    @classmethod
    def create(cls, inputs: str | Path | Sequence[str | Path] | None, out: str | Path, **options: Any) -> RunConfig:
        """A config from flat options (`topk=5`, `overlays=False`, ...).

        An unknown option is a `TypeError` naming the known ones; a bad value a `UsageError`.
        """
        known = option_fields()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; cambatch.run takes: {', '.join(sorted(known))}")
        grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
        for name, value in options.items():
            grouped[known[name][0]][name] = value
        paths = [] if inputs is None else [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        return cls(
            inputs=tuple(paths), out=out, **{group: GROUPS[group](**values) for group, values in grouped.items()}
        )

    def options(self) -> dict[str, Any]:
        """Every option by its flat name (paths as text): what a report and a manifest record."""
        flat: dict[str, Any] = {}
        for group in GROUPS:
            values = getattr(self, group)
            for f in fields(values):
                value = getattr(values, f.name)
                flat[f.name] = (
                    str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
                )
        return flat


def option_fields() -> dict[str, tuple[str, Field]]:
    """Every option: flat name -> (its group, its dataclass field), in declaration order."""
    return {f.name: (group, f) for group, cls in GROUPS.items() for f in fields(cls)}


def switch(name: str) -> str:
    """The CLI flag that sets option `name` (`--no-overlays` for `overlays`)."""
    return spec_of(option_fields()[name][1]).negated_flag or flag(name)


def option_type(group: str, f: Field) -> Any:
    """The option's Python type (annotations are strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(GROUPS[group])[f.name]


def default_of(f: Field) -> Any:
    return None if f.default is MISSING else f.default


def _out_location(out: Path | str) -> Path | str:
    """OUT as a `Path`, or as the URL text for an object store; a `file://` URL is the local folder it names."""
    text = str(out)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    return text.rstrip("/") if is_url(text) else Path(out)
