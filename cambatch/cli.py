"""`cambatch` command line: a thin layer over `cambatch.runner.pipeline.run` and the inspection commands.

Heavy imports (torch, torchvision, timm) happen inside the commands that need them, so that
`cambatch --help` and `--version` answer at once.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import sys
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .bias.options import BIAS_FORMATS, SLICES, BiasFormat, RelianceOptions, SliceBy
from .config import GROUPS, default_of, flag, option_fields, option_type, spec_of, switch
from .errors import ExitCode
from .evaluation.options import DEFAULT_THRESHOLDS
from .inspection.options import (
    COMPARE_TOP,
    DEFAULT_PAGE_SIZE,
    FORMATS,
    PAGE_SIZES,
    Format,
    GroupBy,
    SortKey,
    Thresholds,
)
from .render.colormaps import COLORMAPS
from .sources.remote import is_url

app = typer.Typer(
    help="Batched Class Activation Maps over image folders: overlays and a Parquet report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
MAX_ERRORS_SHOWN = 10

# The options several commands share, declared once.
DEBUG = typer.Option(False, "--debug", help="Show tracebacks instead of one-line messages.")
FORMAT = typer.Option(FORMATS[0], "--format", help="table for people; csv and json for scripts.")
GROUPING = "class or label (default: label when the run has labels)."


def _help(text: str) -> str:
    """A help text shown as written: typer renders help as rich markup, which would eat `[ray]`."""
    return escape(text)


def _version(value: bool) -> None:
    if value:
        print(f"cambatch {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
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
        err.print(f"[red]cambatch: error:[/] {escape(str(exc))}", markup=True)  # a message's [brackets] stay text
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("cambatch: interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 - unexpected: still one line, the traceback on request
        if debug:
            raise
        err.print(
            f"[red]cambatch: internal error:[/] {escape(f'{type(exc).__name__}: {exc}')} "
            "(rerun with --debug for the traceback)"
        )
        raise typer.Exit(ExitCode.FAILED) from None


# ---- `cambatch run`: its options are built from `cambatch.config` (declared there once) ----

_PANELS = {group: cls.__doc__.splitlines()[0].rstrip(".") for group, cls in GROUPS.items()}


def run_command(
    inputs: Optional[list[str]], out: str, quiet: bool, fail_on_error: bool, debug: bool, **cli_options: Any
) -> None:
    """Compute top-k maps for every image under INPUTS; write overlays and a Parquet report to OUT."""
    with _reported_errors(debug):
        from .checks.policy import load_policy
        from .config import RunConfig
        from .runner.pipeline import run as run_job
        from .runner.progress import make_progress

        config = RunConfig.create(inputs, out, **config_options(cli_options))
        policy = load_policy(config.audit.check) if config.audit.check else None  # a bad policy: before any work
        result = run_job(config, make_progress(quiet, err))
    _print_summary(result)
    checked = None
    if policy is not None and not result.interrupted:
        checked = _check_after_run(result, policy, config.audit.baseline, debug)
    if config.output.gallery and not result.interrupted:
        _build_gallery(result.out, None, DEFAULT_PAGE_SIZE, debug)  # after the check: it shows the verdict
    if result.interrupted:
        raise typer.Exit(ExitCode.INTERRUPTED)
    if fail_on_error and result.failed:  # judged on what the report holds for this run's images now
        raise typer.Exit(ExitCode.FAILED)
    if checked is not None:
        raise typer.Exit(checked.exit_code)


def _check_after_run(result, policy, baseline: Optional[str], debug: bool):
    """`cambatch run --check`: the run's verdict, printed and kept in OUT."""
    with _inspect_errors(debug):
        from .checks.outputs import emit
        from .checks.run import audit

        checked = audit(result.out, policy, baseline=baseline)
        emit(checked, "table", sys.stdout)
    return checked


def config_options(cli_options: dict[str, Any]) -> dict[str, Any]:
    """The CLI's parameter values as `RunConfig.create` options (a negated switch flips back)."""
    options = {}
    for name, (_, f) in option_fields().items():
        spec = spec_of(f)
        if spec.negated_flag:
            options[name] = not cli_options[_parameter_name(spec.negated_flag)]
        else:
            options[name] = cli_options[name]
    return options


def _parameter_name(cli_flag: str) -> str:
    return cli_flag.lstrip("-").replace("-", "_")


def _option_parameter(name: str, group: str, f: dataclasses.Field) -> inspect.Parameter:
    """One `RunConfig` option as a typer option: its flag, default and help come from its declaration."""
    spec = spec_of(f)
    kind = option_type(group, f)
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    cli_type = str if typing.get_origin(base) is tuple else base
    help_text = _help(spec.help + (f" One of: {', '.join(map(str, spec.choices))}." if spec.choices else ""))
    if cli_type is bool:
        flag_name = switch(name)
        default = typer.Option(
            False if spec.negated_flag else default_of(f), flag_name, help=help_text, rich_help_panel=_PANELS[group]
        )
        return inspect.Parameter(
            _parameter_name(flag_name), inspect.Parameter.KEYWORD_ONLY, default=default, annotation=bool
        )
    annotation = Optional[cli_type] if default_of(f) is None else cli_type
    default = typer.Option(default_of(f), flag(name), help=help_text, rich_help_panel=_PANELS[group])
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _run_signature() -> inspect.Signature:
    keyword = inspect.Parameter.KEYWORD_ONLY
    inputs = typer.Argument(
        None,
        help="Image folders (searched recursively), image files, WebDataset .tar shards, Parquet files of images, "
        "or fsspec URLs of any of them (s3://bucket/photos).",
    )
    out = typer.Option(..., "--out", "-o", help="Output folder: report/, overlays/, runs/.")
    command_panel = "This command's output"
    presentation = [
        (
            "quiet",
            typer.Option(False, "--quiet", "-q", help="Print only the final summary.", rich_help_panel=command_panel),
        ),
        (
            "fail_on_error",
            typer.Option(False, "--fail-on-error", help="Exit 1 if any image failed.", rich_help_panel=command_panel),
        ),
        ("debug", DEBUG),
    ]
    parameters = [
        inspect.Parameter(
            "inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=inputs, annotation=Optional[list[str]]
        ),
        inspect.Parameter("out", keyword, default=out, annotation=str),  # a URL must reach the config unfolded
        *(_option_parameter(name, group, f) for name, (group, f) in option_fields().items()),
        *(inspect.Parameter(name, keyword, default=default, annotation=bool) for name, default in presentation),
    ]
    return inspect.Signature(parameters)


def _run(**values: Any) -> None:
    run_command(
        values.pop("inputs"),
        values.pop("out"),
        values.pop("quiet"),
        values.pop("fail_on_error"),
        values.pop("debug"),
        **values,
    )


_run.__signature__ = _run_signature()  # type: ignore[attr-defined]
_run.__annotations__ = {p.name: p.annotation for p in _run.__signature__.parameters.values()}  # type: ignore[attr-defined]
_run.__doc__ = run_command.__doc__
app.command("run")(_run)


def _print_summary(result) -> None:
    kept = f" ({result.errors_kept} of them failed; --retry-errors redoes them)" if result.errors_kept else ""
    skipped = f", {result.skipped} already done{kept}" if result.skipped else ""
    skipped += f", {result.relabelled} redone for their new labels" if result.relabelled else ""
    shard = f", shard {result.shard}" if result.shard != "0/1" else ""
    err.print(
        f"cambatch: {result.ok} ok, {result.errors} error(s) of {result.images} images{skipped}{shard} "
        f"in {result.elapsed_s:.1f}s ({result.images_per_s:.1f} img/s); run {result.run_id}"
    )
    if result.interrupted:
        err.print(
            f"  interrupted by {result.interrupted}: what was done is in the report; rerun the same command to resume"
        )
    for path, message in list(result.errors_by_path.items())[:MAX_ERRORS_SHOWN]:
        err.print(f"  error: {path}: {message}", markup=False)
    if result.errors > MAX_ERRORS_SHOWN:
        err.print(f"  ... {result.errors - MAX_ERRORS_SHOWN} more in the report (status == 'error')")
    problems = getattr(result, "annotation_problems", [])
    for line in problems[:MAX_ERRORS_SHOWN]:
        err.print(f"  annotation: {line} (no ground truth for that image)", markup=False)
    if len(problems) > MAX_ERRORS_SHOWN:
        err.print(f"  ... {len(problems) - MAX_ERRORS_SHOWN} more annotation problems (`cambatch evaluate` lists them)")
    err.print(f"  report:   {result.report}", markup=False)
    if getattr(result, "multi_label", False):
        err.print(
            "  multi-label: probabilities are per-class sigmoids; correct = the label's classes are those predicted",
            markup=False,
        )
    if getattr(result, "layer", None):
        err.print(f"  method:   {result.method} on layer {result.layer}", markup=False)
    if getattr(result, "runtime", None):
        err.print(f"  runtime:  {result.runtime}", markup=False)
    if getattr(result, "faithfulness", None):
        f = result.faithfulness
        top1 = (
            f" (top-1: {f['top1_average_drop_pct']:.1f}% / {f['top1_increase_in_confidence_pct']:.1f}%)"
            if "top1_average_drop_pct" in f
            else ""
        )
        err.print(
            f"  faithfulness over {f['maps']} maps: average drop {f['average_drop_pct']:.1f}%, "
            f"increase in confidence {f['increase_in_confidence_pct']:.1f}%{top1}",
            markup=False,
        )
    if result.overlays:
        err.print(
            f"  overlays: {result.out}/overlays ({result.overlays} overlays of {result.overlay_images} images)",
            markup=False,
        )


@app.command()
def runs(
    out: str = typer.Argument(..., help="A local output folder of `cambatch run`."),
    fmt: Format = FORMAT,
) -> None:
    """List the runs recorded in OUT/runs/ (status, counts, speed); a run whose process is gone shows `died`."""
    from .inspection.runs import print_runs

    if is_url(out):
        raise _local_only("runs", out)
    if not print_runs(Path(out), Console(), fmt):
        err.print(f"cambatch: no runs recorded in {out}", markup=False)


def _local_only(command: str, out: str) -> typer.Exit:
    """A URL given to a command that reads a local OUT: one line, with the URL as given, and exit 2."""
    err.print(
        f"cambatch: error: `cambatch {command}` reads a local output folder, and {out} is a URL: copy the run's "
        "folder down (e.g. `aws s3 sync`) and give that folder",
        markup=False,
    )
    return typer.Exit(ExitCode.USAGE)


@app.command()
def models() -> None:
    """List the model names `run --model` accepts and which work offline."""
    from .model.catalog import print_catalog

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


@app.command()
def summarize(
    out: str = typer.Argument(..., help="A run's output folder (or its report/ folder), or its URL on a store."),
    by: Optional[GroupBy] = typer.Option(None, "--by", help=f"Group by {GROUPING}"),
    top: Optional[int] = typer.Option(None, "--top", help="Show only the first N rows."),
    sort: SortKey = typer.Option("images", "--sort", help="The column the rows are sorted by."),
    fmt: Format = FORMAT,
    border_ratio: float = typer.Option(
        Thresholds.border_ratio, help="Flag 'border' when a class's mean border_energy >= this x the median."
    ),
    spread_ratio: float = typer.Option(
        Thresholds.spread_ratio, help="Flag 'spread' when a class's mean active_area >= this x the median."
    ),
    lock_score: float = typer.Option(
        Thresholds.lock_score,
        help="Flag 'fixed-location' when a class's position_lock >= this (and it has enough images).",
    ),
    off_object_ratio: float = typer.Option(
        Thresholds.off_object_ratio,
        help="With --annotations: flag 'off-object' when a class's mean energy_in_gt <= this x the median.",
    ),
    insensitive_corr: float = typer.Option(
        Thresholds.insensitive_corr,
        help="With --sanity: flag 'model-insensitive' when a class's mean sanity_rank_corr >= this.",
    ),
    agnostic_ssim: float = typer.Option(
        Thresholds.agnostic_ssim,
        help="With --sanity: flag 'class-agnostic' when a class's mean class_sensitivity >= this.",
    ),
    debug: bool = DEBUG,
) -> None:
    """Per predicted class (or label): images, probability, accuracy, map statistics, and flags."""
    with _inspect_errors(debug):
        from .inspection.summarize import summarize_run
        from .inspection.tables import emit

        thresholds = Thresholds(
            border_ratio,
            spread_ratio,
            off_object_ratio,
            lock_score=lock_score,
            insensitive_corr=insensitive_corr,
            agnostic_ssim=agnostic_ssim,
        )
        summary = summarize_run(out, by, thresholds)
        settings = summary.settings
        chosen = f"{summary.counted} · " if summary.chosen_classes else ""
        caption = (
            f"{summary.images:,} images ({summary.errors:,} failed) · {chosen}"
            f"median border_energy {summary.median_border_energy:.3f}, active_area {summary.median_active_area:.3f} · "
            f"flags: border >= {border_ratio:g}x, spread >= {spread_ratio:g}x the median, "
            f"fixed-location: position_lock >= {lock_score:g} (baseline {summary.lock_baseline:.3f})"
            + (
                f"; off-object: energy_in_gt <= {off_object_ratio:g}x its median {summary.median_energy_in_gt:.3f}"
                if "energy_in_gt" in summary.table.columns
                else ""
            )
            + (
                f"; model-insensitive: sanity_rank_corr >= {insensitive_corr:g}, "
                f"class-agnostic: class_sensitivity >= {agnostic_ssim:g}"
                if "sanity_rank_corr" in summary.table.columns
                else ""
            )
        )
        meta = {
            "model": settings.get("model"),
            "multi_label": summary.multi_label,
            "run_id": settings.get("run_id"),
            "by": summary.by,
            "counted": summary.counted,
            "images": summary.images,
            "errors": summary.errors,
            "median_border_energy": summary.median_border_energy,
            "median_active_area": summary.median_active_area,
            "border_ratio": border_ratio,
            "spread_ratio": spread_ratio,
            "lock_score": lock_score,
            "min_lock_images": thresholds.min_lock_images,
            "lock_baseline": summary.lock_baseline,
            "median_energy_in_gt": summary.median_energy_in_gt,
            "off_object_ratio": off_object_ratio,
            "insensitive_corr": insensitive_corr,
            "agnostic_ssim": agnostic_ssim,
            **summary.trust,
        }
        hidden = [
            "border_flag",
            "spread_flag",
            "fixed_location_flag",
            "off_object_flag",
            "model_insensitive_flag",
            "class_agnostic_flag",
            "peak_x0",
            "peak_y0",
            "peak_x1",
            "peak_y1",
        ]
        table = summary.sorted(sort, top)
        table = table.drop(columns=[c for c in hidden if c in table.columns] if fmt == "table" else [])
        multi_label = " · multi-label" if summary.multi_label else ""
        title = (
            f"cambatch summarize · {settings.get('model', '?')}{multi_label} · run {settings.get('run_id', '?')} "
            f"· per {summary.by}"
        )
        emit(table, fmt, title=title, caption=caption, meta=meta)


def _write_rows(frame, path: Path) -> None:
    """`--out` of the inspection commands: their per-row table as one Parquet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


@app.command()
def compare(
    out_a: str = typer.Argument(..., help="The earlier run's output folder (A), or its URL on a store."),
    out_b: str = typer.Argument(..., help="The later run's output folder (B), or its URL on a store."),
    top: Optional[int] = typer.Option(COMPARE_TOP, "--top", help="Classes shown in the summary table (0: all)."),
    fmt: Format = FORMAT,
    rows_out: Optional[Path] = typer.Option(None, "--out", help="Write the per-image rows to this Parquet file."),
    debug: bool = DEBUG,
) -> None:
    """Two runs over the same images: changed top-1, peak shift and box IoU, classes that changed most."""
    with _inspect_errors(debug):
        from .inspection.compare import compare_runs
        from .inspection.tables import emit

        result = compare_runs(out_a, out_b)
        figures = result.overview()
        if rows_out is not None:
            _write_rows(result.images, rows_out)
        caption = (
            f"{figures['compared']:,} images in both runs: top-1 changed for {figures['top1_changed']:,} "
            f"({figures['changed_share']:.1%}); mean box IoU {figures['mean_box_iou']:.3f}, "
            f"median peak shift {figures['median_peak_shift']:.3f}"
            + (
                f"; of {figures['labelled_in_both']:,} labelled in both: fixed {figures['fixed']:,}, "
                f"broken {figures['broken']:,}"
                if "fixed" in figures
                else ""
            )
            + "".join(
                f"; {figures[k]:,} {k.replace('_', ' ')}"
                for k in ("only_a", "only_b", "error_a", "error_b", "error_both")
                if figures[k]
            )
        )
        title = (
            f"cambatch compare · A {figures['model_a']} {figures['run_a']} → B {figures['model_b']} {figures['run_b']}"
        )
        emit(result.classes.head(top) if top else result.classes, fmt, title=title, caption=caption, meta=figures)
        if rows_out is not None:
            err.print(f"cambatch: per-image rows: {rows_out}", markup=False)


@app.command()
def evaluate(
    out: str = typer.Argument(..., help="A run's output folder, or its URL on a store."),
    annotations: Optional[Path] = typer.Option(
        None,
        "--annotations",
        help="Ground truth (default: the run's --annotations); see the docs' ground truth page.",
    ),
    thresholds: int = typer.Option(
        DEFAULT_THRESHOLDS, "--thresholds", min=2, help="CAM thresholds swept: 0, 1/N, ..., 1 - 1/N."
    ),
    fmt: Format = FORMAT,
    rows_out: Optional[Path] = typer.Option(None, "--out", help="Write the per-row columns to this Parquet file."),
    debug: bool = DEBUG,
) -> None:
    """The run's maps against ground truth: MaxBoxAcc, MaxBoxAccV2, GT-known/top-1 loc, pointing, energy."""
    with _inspect_errors(debug):
        import pandas as pd

        from .evaluation.run import evaluate as evaluate_run
        from .inspection.tables import emit
        from .runner.progress import make_progress

        result = evaluate_run(out, annotations, thresholds=thresholds, progress=make_progress(False, err))
        for line in result.problems[:MAX_ERRORS_SHOWN]:
            err.print(f"cambatch: annotation: {line}", markup=False)
        if rows_out is not None:
            _write_rows(result.rows, rows_out)
        m = result.metrics
        caption = f"{m['images']:,} images with ground truth · {m['thresholds']} thresholds"
        if m["best_threshold"] is not None:
            caption += f" · best {m['best_threshold']:.2f}"
        if m.get("label_not_explained"):
            caption += f" · {m['label_not_explained']:,} label classes not explained (count as misses; --explain-label)"
        if fmt == "table":
            figures = pd.DataFrame({"value": pd.Series(m, dtype=object)}).rename_axis("metric")
            emit(figures, fmt, title=f"cambatch evaluate · {out}", caption=caption)
        emit(result.per_class, fmt, title="per class", meta=m)


@app.command()
def check(
    out: Optional[str] = typer.Argument(
        None, help="A run's output folder (or its report/ folder), or its URL on a store."
    ),
    policy: Optional[Path] = typer.Option(
        None, "--policy", help="The checks, a TOML file (default: the default policy, which --init writes)."
    ),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", help="An earlier run's output folder, or its URL, for the baseline metrics."
    ),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write JUnit XML (Jenkins, GitLab)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write a Markdown summary (CI job summary)."),
    fmt: Format = FORMAT,
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a check warns, too."),
    init: Optional[Path] = typer.Option(
        None, "--init", help="Write the default policy, commented, to this new file, and exit."
    ),
    debug: bool = DEBUG,
) -> None:
    """Judge a run against a policy (and a baseline run): pass, warn or fail. Exit 0 when no check fails, 1 when
    one does, 2 for a bad policy or a run that cannot be read. The metrics: docs/check.md.
    """
    with _inspect_errors(debug):
        from .checks.outputs import emit, write_files
        from .checks.policy import write_init
        from .checks.run import check_run, keep_verdict
        from .errors import UsageError

        if init is not None:
            write_init(init)
            err.print(f"cambatch: wrote the default policy to {init}", markup=False)
            return
        if out is None:
            raise UsageError("give OUT, the run to check (or --init FILE to write the default policy)")
        checked = check_run(out, policy, baseline=baseline, strict=strict)
        emit(checked, fmt, sys.stdout)
        write_files(checked, junit=junit, markdown_file=markdown)
        keep_verdict(checked)
    raise typer.Exit(checked.exit_code)


@app.command()
def gallery(
    out: str = typer.Argument(..., help="A run's local output folder."),
    group_by: Optional[GroupBy] = typer.Option(None, "--group-by", help=f"Cards grouped by {GROUPING}"),
    page_size: int = typer.Option(
        DEFAULT_PAGE_SIZE, "--page-size", help=f"Cards per page: {', '.join(map(str, PAGE_SIZES))}."
    ),
    everything: bool = typer.Option(
        False, "--all", help="Make the thumbnails and photos of every image (by default: each class's sample)."
    ),
    debug: bool = DEBUG,
) -> None:
    """Build a static HTML gallery of the run in OUT/gallery/index.html (opens from disk, no server)."""
    _build_gallery(out, group_by, page_size, debug, everything=everything)


@app.command()
def overlays(
    out: Path = typer.Argument(..., help="A run's output folder (e.g. of a --no-overlays run)."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Only rows of this explained class."),
    where: Optional[str] = typer.Option(
        None, "--where", help="A pandas query over the report's columns, e.g. 'rank == 1 and probability > 0.5'."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N selected images (by path)."),
    colormap: Optional[str] = typer.Option(None, "--colormap", help=f"{', '.join(COLORMAPS)} (default: the run's)."),
    debug: bool = DEBUG,
) -> None:
    """Render the overlays of any subset of a run later, from the report's maps, as `cambatch run` writes them."""
    with _inspect_errors(debug):
        from .inspection.overlays import render_overlays

        made = render_overlays(out, class_name=class_name, where=where, limit=limit, colormap=colormap)
    err.print(
        f"cambatch: {made.overlays:,} overlays of {made.images:,} images in {made.seconds:.1f}s under "
        f"{Path(out) / 'overlays'}",
        markup=False,
    )


BIAS_FORMAT = typer.Option(BIAS_FORMATS[0], "--format", help="table for people; json for scripts.")
_DEVICE = option_fields()["device"][1]


@app.command()
def slices(
    out: str = typer.Argument(..., help="A run's output folder, run with --embeddings and labels."),
    by: Optional[SliceBy] = typer.Option(
        None,
        "--by",
        help="label: one mixture per true class (the model's mistakes on it); class: per predicted class (what it "
        "wrongly calls that class). Default: label.",
    ),
    count: int = typer.Option(SLICES, "--slices", min=1, help="Slices kept, the largest accuracy gap first."),
    fmt: BiasFormat = BIAS_FORMAT,
    rows_out: Optional[Path] = typer.Option(
        None, "--out", help="Write every member of every slice to this Parquet file."
    ),
    debug: bool = DEBUG,
) -> None:
    """Error slices: images the model gets wrong together (Domino's mixture over the embeddings, labels and
    predictions), each with its members and mean map; kept in OUT/slices/ for the gallery.
    """
    with _inspect_errors(debug):
        from .bias.slices import find_slices, write_slices
        from .inspection.tables import emit

        found = find_slices(out, by, slices=count)
        kept = write_slices(out, found)
        if rows_out is not None:
            _write_rows(found.members, rows_out)
        emit(
            found.shown(fmt == "table"),
            fmt,
            title=f"cambatch slices · {out} · per {found.by}",
            caption=found.caption,
            meta=found.meta,
        )
    err.print(f"cambatch: slices kept in {kept.parent}", markup=False)


@app.command()
def reliance(
    out: str = typer.Argument(
        ..., help="A run's output folder; the model it recorded must load again (the same weights)."
    ),
    classes: Optional[str] = typer.Option(
        None,
        "--classes",
        help="Comma-separated predicted classes to test (default: every class predicted for at least 5 images).",
    ),
    images: int = typer.Option(
        RelianceOptions.images_per_class,
        "--images",
        min=1,
        help="Images occluded per class (a fixed sample of a larger class).",
    ),
    device: str = typer.Option(default_of(_DEVICE), "--device", help=spec_of(_DEVICE).help),
    fmt: BiasFormat = BIAS_FORMAT,
    rows_out: Optional[Path] = typer.Option(
        None, "--out", help="Write one row per occluded image to this Parquet file."
    ),
    debug: bool = DEBUG,
) -> None:
    """Runs the network: blurs where each class's mean map peaks, a random box elsewhere and (with ground truth) the
    map's hottest box off the object, and compares the drops of the class's probability.
    """
    with _inspect_errors(debug):
        from .bias.reliance import reliance_run
        from .inspection.tables import emit

        names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
        found = reliance_run(out, names, options=RelianceOptions(images_per_class=images), device=device)
        if rows_out is not None:
            _write_rows(found.images, rows_out)
        emit(
            found.shown(fmt == "table"), fmt, title=f"cambatch reliance · {out}", caption=found.caption, meta=found.meta
        )


def _build_gallery(
    out: Path | str, group_by: Optional[str], page_size: int, debug: bool, *, everything: bool = False
) -> None:
    if is_url(str(out)):
        raise _local_only("gallery", out)
    with _inspect_errors(debug):
        from .inspection.gallery import build_gallery

        made = build_gallery(out, group_by=group_by, page_size=page_size, everything=everything)
    err.print(
        f"cambatch: gallery of {made.images:,} images ({made.errors:,} errors) in {made.seconds:.1f}s; "
        f"{made.thumbnails_written:,} thumbnails made, {made.thumbnails_fresh:,} reused",
        markup=False,
    )
    if made.thumbnails_left:
        err.print(
            f"  {made.thumbnails_left:,} images have no thumbnail yet (each class's first cards and the cluster "
            f"examples have): `cambatch gallery {out} --all` makes them",
            markup=False,
        )
    for target, reason in list(made.thumbnail_failures.items())[:MAX_ERRORS_SHOWN]:
        err.print(f"  no thumbnail: {target}: {reason}", markup=False)
    err.print(f"  open: {made.index}", markup=False)


def main() -> None:
    """The `cambatch` command; its process ends after it."""
    try:
        app(prog_name="cambatch")
    finally:
        # Every output is closed and published by now. What is left is the interpreter's own teardown,
        # whose collections walked the millions of objects torch, timm and Ray create: 2-3 s of every
        # command on a 2-core machine. Frozen objects are skipped there (those with no cycle are still
        # freed, `__del__` and all), so the process exits at once.
        gc.freeze()
