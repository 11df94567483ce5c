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
    batch_size: Optional[int] = typer.Option(None, help="Images per batch (default: 8 on CPU, 64 on GPU)."),
    workers: Optional[int] = typer.Option(None, help="Decoding worker processes (default: from the machine)."),
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
        )  # fmt: skip
        result = run_job(config, make_progress(quiet, err))
    _print_summary(result)
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


def main() -> None:
    app(prog_name="cambatch")
