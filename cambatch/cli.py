"""`cambatch` command line: a thin layer over `cambatch.pipeline.run`.

Heavy imports (torch, torchvision, timm) happen inside the commands that need them, so that
`cambatch --help` and `--version` answer at once.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from . import __version__

app = typer.Typer(
    help="Batched Class Activation Maps over image folders: overlays and a Parquet report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
EXIT_INTERRUPTED = 130
MAX_ERRORS_SHOWN = 10


def _version(value: bool) -> None:
    if value:
        print(f"cambatch {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Batched Class Activation Maps over image folders: overlays and a Parquet report."""


@contextmanager
def _reported_errors(debug: bool):
    """One line and a documented exit code instead of a traceback (unless --debug)."""
    from .errors import CambatchError

    try:
        yield
    except CambatchError as exc:
        if debug:
            raise
        err.print(f"[red]cambatch: error:[/] {exc}", markup=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("cambatch: interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 - unexpected: still one line, the traceback on request
        if debug:
            raise
        err.print(f"[red]cambatch: internal error:[/] {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        raise typer.Exit(1) from None


@app.command()
def run(
    inputs: Optional[List[Path]] = typer.Argument(None, help="Image folders (searched recursively) or image files."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: overlays/, report/, maps/."),
    model: str = typer.Option("efficientnet_lite0", help="Model name: efficientnet_lite0 (offline), a torchvision name, or timm:NAME."),
    weights: Optional[str] = typer.Option(None, help="Local checkpoint (state_dict), or 'none' for random init. Default: pretrained."),
    num_classes: Optional[int] = typer.Option(None, help="Classes of a fine-tuned checkpoint."),
    class_names: Optional[Path] = typer.Option(None, help="Text file of class names, one a line."),
    topk: int = typer.Option(3, help="Classes explained per image."),
    classes: Optional[str] = typer.Option(None, help="Comma-separated class names or indices to explain instead of the top-k."),
    image_size: Optional[int] = typer.Option(None, help="Model input side (default: the model's own, 224)."),
    colormap: str = typer.Option("jet", help="jet, turbo, viridis or inferno."),
    alpha: float = typer.Option(0.5, help="Heatmap opacity over the photo."),
    max_side: int = typer.Option(1024, help="Cap on the overlay's longest side; 0 keeps the photo's size."),
    no_overlays: bool = typer.Option(False, "--no-overlays", help="Write the report only."),
    save_maps: bool = typer.Option(False, "--save-maps", help="Also write raw maps as float16 .npz under maps/."),
    device: str = typer.Option("auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps."),
    batch_size: Optional[int] = typer.Option(None, help="Images per batch (default: from the machine; 8 on CPU, 64 on GPU)."),
    workers: Optional[int] = typer.Option(None, help="Decoding worker processes (default: from the machine)."),
    threads: Optional[int] = typer.Option(None, help="Torch threads for the model (default: from the machine: cores less decoding workers on a CPU)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or bf16: autocast of the model's forward pass (fp16 needs a GPU)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (the first batches pay the compilation)."),
    gpu_decode: str = typer.Option("auto", help="Decode JPEGs on the GPU with nvJPEG: auto (on a CUDA device), on, off."),
    from_list: Optional[Path] = typer.Option(None, help="A .txt (a path a line), .csv or .parquet (column path, optional label) list of images."),
    labels_from_dirs: bool = typer.Option(False, "--labels-from-dirs", help="Label each image with its parent folder's name."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Redo images whose earlier attempt failed."),
    shard: Optional[str] = typer.Option(None, help="I/N: process shard I of N (default: SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE)."),
    images_per_part: int = typer.Option(1000, help="Publish a report part after this many images (or 60 s)."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow a full unpickle of --weights (pickled model, TorchScript)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final summary."),
    fail_on_error: bool = typer.Option(False, "--fail-on-error", help="Exit 1 if any image failed."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    gallery: bool = typer.Option(False, "--gallery", help="Also build the HTML gallery in OUT/gallery/ at the end."),
    method: str = typer.Option("cam", help="cam (exact; GAP -> linear heads), gradcam, gradcampp, xgradcam, layercam, scorecam, eigencam, or auto (cam where the head allows, else gradcam)."),
    layer: Optional[str] = typer.Option(None, help="Target layer of the non-cam methods, a dotted module path (default: the last one with a spatial output)."),
    scorecam_batch: Optional[int] = typer.Option(None, help="Masked images per forward pass for scorecam (default: 32 on CPU, 256 on GPU)."),
    faithfulness: bool = typer.Option(False, "--faithfulness", help="Score each map: masked_probability, confidence_drop, confidence_increase columns."),
) -> None:
    """Compute top-k CAMs for every image under INPUTS; write overlays and a Parquet report to OUT."""
    with _reported_errors(debug):
        from .pipeline import RunConfig, run as run_job
        from .progress import make_progress

        config = RunConfig(
            inputs=list(inputs), out=out, model=model, weights=weights, num_classes=num_classes,
            class_names=class_names, topk=topk, classes=classes.split(",") if classes else None,
            image_size=image_size, colormap=colormap, alpha=alpha, max_side=max_side,
            overlays=not no_overlays, save_maps=save_maps, device=device, batch_size=batch_size, workers=workers,
            from_list=from_list, labels_from_dirs=labels_from_dirs, overwrite=overwrite, retry_errors=retry_errors,
            shard=shard, images_per_part=images_per_part, trust_checkpoint=trust_checkpoint,
            method=method, layer=layer, scorecam_batch=scorecam_batch, faithfulness=faithfulness,
            threads=threads, precision=precision, compile=compile, gpu_decode=gpu_decode,
        )  # fmt: skip
        result = run_job(config, make_progress(quiet, err))
    _print_summary(result)
    if gallery and not result.interrupted:
        _build_gallery(result.out, None, 60, debug)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if fail_on_error and result.errors:
        raise typer.Exit(1)


def _print_summary(result) -> None:
    skipped = f", {result.skipped} already done" if result.skipped else ""
    shard = f", shard {result.shard}" if result.shard != "0/1" else ""
    err.print(
        f"cambatch: {result.ok} ok, {result.errors} error(s) of {result.images} images{skipped}{shard} "
        f"in {result.elapsed_s:.1f}s ({result.images_per_s:.1f} img/s); run {result.run_id}"
    )
    if result.interrupted:
        err.print(f"  interrupted by {result.interrupted}: what was done is in the report; rerun the same command to resume")
    for path, message in list(result.errors_by_path.items())[:MAX_ERRORS_SHOWN]:
        err.print(f"  error: {path}: {message}", markup=False)
    if result.errors > MAX_ERRORS_SHOWN:
        err.print(f"  ... {result.errors - MAX_ERRORS_SHOWN} more in the report (status == 'error')")
    err.print(f"  report:   {result.report}", markup=False)
    if getattr(result, "layer", None):
        err.print(f"  method:   {result.method} on layer {result.layer}", markup=False)
    if getattr(result, "faithfulness", None):
        f = result.faithfulness
        top1 = f" (top-1: {f['top1_average_drop_pct']:.1f}% / {f['top1_increase_in_confidence_pct']:.1f}%)" if "top1_average_drop_pct" in f else ""
        err.print(f"  faithfulness over {f['maps']} maps: average drop {f['average_drop_pct']:.1f}%, "
                  f"increase in confidence {f['increase_in_confidence_pct']:.1f}%{top1}", markup=False)  # fmt: skip
    if result.overlays:
        err.print(f"  overlays: {result.out / 'overlays'} ({result.overlays} images)", markup=False)


@app.command()
def runs(out: Path = typer.Argument(..., help="An output folder of `cambatch run`.")) -> None:
    """List the runs recorded in OUT/runs/ (settings, counts, speed)."""
    from .manifest import print_runs

    if not print_runs(out, Console()):
        err.print(f"cambatch: no runs recorded in {out}")


@app.command()
def models() -> None:
    """List the model names `run --model` accepts and which work offline."""
    from .catalog import print_catalog

    print_catalog(Console())


# ---- Inspecting results: summarize, compare, gallery (pandas and jinja2 load inside each command) ----


@contextmanager
def _inspect_errors(debug: bool):
    """A missing report, an unknown column or a bad option value: one line and exit 2."""
    from .errors import UsageError

    with _reported_errors(debug):
        try:
            yield
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise UsageError(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)) from None


def _choice(value: Optional[str], allowed: tuple[str, ...], option: str) -> Optional[str]:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"choose from {', '.join(allowed)}", param_hint=option)
    return value


@app.command()
def summarize(
    out: Path = typer.Argument(..., help="A run's output folder (or its report/ folder)."),
    by: Optional[str] = typer.Option(None, "--by", help="class or label (default: label when the run has labels)."),
    top: Optional[int] = typer.Option(None, "--top", help="Show only the first N rows."),
    sort: str = typer.Option("images", "--sort", help="images, border_energy, active_area, entropy, mean_probability, accuracy or name."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json (for scripts)."),
    border_ratio: float = typer.Option(1.5, help="Flag 'border' when a class's mean border_energy >= this x the median."),
    spread_ratio: float = typer.Option(1.5, help="Flag 'spread' when a class's mean active_area >= this x the median."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Per predicted class (or label): images, probability, accuracy, map statistics, and flags."""
    _choice(by, ("class", "label"), "--by")
    _choice(fmt, ("table", "csv", "json"), "--format")
    with _inspect_errors(debug):
        from .summarize import Thresholds, summarize_run
        from .tables import emit

        summary = summarize_run(out, by, Thresholds(border_ratio, spread_ratio))  # type: ignore[arg-type]
        settings = summary.settings
        caption = (
            f"{summary.images:,} images ({summary.errors:,} failed) · median border_energy {summary.median_border_energy:.3f}, "
            f"active_area {summary.median_active_area:.3f} · flags: border >= {border_ratio:g}x, spread >= {spread_ratio:g}x the median"
        )
        meta = {
            "model": settings.get("model"), "run_id": settings.get("run_id"), "by": summary.by, "images": summary.images,
            "errors": summary.errors, "median_border_energy": summary.median_border_energy,
            "median_active_area": summary.median_active_area, "border_ratio": border_ratio, "spread_ratio": spread_ratio,
        }  # fmt: skip
        table = summary.sorted(sort, top).drop(columns=["border_flag", "spread_flag"] if fmt == "table" else [])
        title = f"cambatch summarize · {settings.get('model', '?')} · run {settings.get('run_id', '?')} · per {summary.by}"
        emit(table, fmt, title=title, caption=caption, meta=meta)  # type: ignore[arg-type]


@app.command()
def compare(
    out_a: Path = typer.Argument(..., help="The earlier run's output folder (A)."),
    out_b: Path = typer.Argument(..., help="The later run's output folder (B)."),
    top: Optional[int] = typer.Option(20, "--top", help="Classes shown in the summary table (0: all)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json (for scripts)."),
    rows_out: Optional[Path] = typer.Option(None, "--out", help="Write the per-image rows to this Parquet file."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Two runs over the same images: changed top-1, peak shift and box IoU, classes that changed most."""
    _choice(fmt, ("table", "csv", "json"), "--format")
    with _inspect_errors(debug):
        from .compare import compare_runs
        from .tables import emit

        result = compare_runs(out_a, out_b)
        figures = result.overview()
        if rows_out is not None:
            rows_out.parent.mkdir(parents=True, exist_ok=True)
            result.images.to_parquet(rows_out, index=False)
        caption = (
            f"{figures['compared']:,} images in both runs: top-1 changed for {figures['top1_changed']:,} "
            f"({figures['changed_share']:.1%}); mean box IoU {figures['mean_box_iou']:.3f}, median peak shift {figures['median_peak_shift']:.3f}"
            + (f"; fixed {figures['fixed']:,}, broken {figures['broken']:,}" if "fixed" in figures else "")
            + "".join(f"; {figures[k]:,} {k.replace('_', ' ')}" for k in ("only_a", "only_b", "error_a", "error_b", "error_both") if figures[k])
        )
        title = f"cambatch compare · A {figures['model_a']} {figures['run_a']} → B {figures['model_b']} {figures['run_b']}"
        emit(result.classes.head(top) if top else result.classes, fmt, title=title, caption=caption, meta=figures)  # type: ignore[arg-type]
        if rows_out is not None:
            err.print(f"cambatch: per-image rows: {rows_out}", markup=False)


@app.command()
def gallery(
    out: Path = typer.Argument(..., help="A run's output folder."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="class or label (default: label when the run has labels)."),
    page_size: int = typer.Option(60, "--page-size", help="Cards per page: 30, 60, 120 or 240."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Build a static HTML gallery of the run in OUT/gallery/index.html (opens from disk, no server)."""
    _choice(group_by, ("class", "label"), "--group-by")
    _build_gallery(out, group_by, page_size, debug)


def _build_gallery(out: Path, group_by: Optional[str], page_size: int, debug: bool) -> None:
    with _inspect_errors(debug):
        from .gallery import build_gallery

        made = build_gallery(out, group_by=group_by, page_size=page_size)  # type: ignore[arg-type]
    err.print(
        f"cambatch: gallery of {made.images:,} images ({made.errors:,} errors) in {made.seconds:.1f}s; "
        f"{made.thumbnails_written:,} thumbnails made, {made.thumbnails_fresh:,} reused",
        markup=False,
    )
    for target, reason in list(made.thumbnail_failures.items())[:MAX_ERRORS_SHOWN]:
        err.print(f"  no thumbnail: {target}: {reason}", markup=False)
    err.print(f"  open: {made.index}", markup=False)


def main() -> None:
    app(prog_name="cambatch")
