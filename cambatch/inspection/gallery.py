"""`cambatch gallery OUT`: a static HTML page to browse a run's overlays, in `OUT/gallery/`.

The page is self-contained: CSS, JavaScript and the data are inlined in `index.html`, and images
are relative files (thumbnails under `gallery/`, full-size overlays from `OUT/overlays/`), so it
opens from a laptop's disk or a CI artifact with no server and no network. The grid is
paginated in the browser (only one page of cards, with lazily loaded thumbnails, is in the
document at a time), which keeps a 10,000-image run as quick to browse as a 10-image one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..bias.slice_cards import slice_cards
from ..layout import OutputLayout, out_folder
from ..render.colormaps import COLORMAPS
from ..report.reader import (
    has_labels,
    image_ids,
    image_key,
    image_names,
    load_report,
    per_image,
    report_columns,
    several_inputs,
)
from ..report.settings import summary_of
from .options import DEFAULT_PAGE_SIZE, PAGE_SIZES, GroupBy, Thresholds
from .shortcut_pictures import shortcut_pictures
from .summarize import summarize
from .thumbnails import ThumbJob, make_thumbnails

THUMB_SIDE = 320  # grid cards are about 240 CSS pixels wide: sharp on most screens
PHOTO_SIDE = 720  # the original, shown beside the full-size overlays in the detail view
MAX_ERRORS_LISTED = 1000  # the rest are counted, and are in the report
_DIGITS = 4  # rounding of numbers in the embedded data: keeps a 10,000-image page a few MB


@dataclass
class GalleryResult:
    """What `build_gallery` made."""

    index: Path  # OUT/gallery/index.html
    images: int  # images with cards
    errors: int  # failed images listed in the errors section
    thumbnails_written: int
    thumbnails_fresh: int  # kept from an earlier build
    thumbnail_failures: dict[str, str]
    seconds: float


def build_gallery(
    out: Path | str,
    *,
    group_by: GroupBy | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    thresholds: Thresholds = Thresholds(),
    workers: int | None = None,
) -> GalleryResult:
    """Write `OUT/gallery/index.html` and its thumbnails for the run in `out`; return what was made.

    `group_by` (`class` or `label`; default label when the report has labels) sets the initial
    grouping, which the page can change. Thumbnails newer than their sources are reused.

    >>> import cambatch
    >>> cambatch.build_gallery("cams").index       # doctest: +SKIP
    PosixPath('cams/gallery/index.html')
    """
    if page_size not in PAGE_SIZES:
        raise ValueError(f"page_size must be one of {', '.join(map(str, PAGE_SIZES))}")
    started = time.monotonic()
    root = out_folder(out)
    layout = OutputLayout(root)
    folder = layout.gallery_dir
    df = load_report(root, maps="map" in report_columns(root))  # the maps give mean maps, clusters, position lock
    labelled = has_labels(df)
    group_by = group_by or ("label" if labelled else "class")

    top = per_image(df)
    jobs: list[ThumbJob] = []
    data = _page_data(df, top, layout, jobs, labelled, thresholds)
    colormap = df.attrs.get("options", {}).get("colormap", COLORMAPS[0])
    cards = {image: number for number, image in enumerate(image_ids(top))}  # as `data["images"]` lists them
    shortcut_pictures(df, data, layout, cards=cards, colormap=colormap, labelled=labelled, thresholds=thresholds)
    stats = make_thumbnails(jobs, workers)
    missing = set(stats.failed)
    for image in data["images"]:  # a thumbnail that could not be made: the card says so
        for key in ("t", "o"):
            if image[key] and str(folder / image[key]) in missing:
                image[key] = None

    errors = _errors(df)
    slices = slice_cards(layout, colormap=colormap, names=image_names(df))
    env = _environment()
    html = env.get_template("gallery.html.j2").render(
        css=_asset(env, "gallery.css"),
        script=_asset(env, "gallery.js"),
        data=data,
        meta=data["meta"],
        errors=errors[:MAX_ERRORS_LISTED],
        errors_total=len(errors),
        group_by=group_by,
        page_size=page_size,
        page_sizes=PAGE_SIZES,
        labelled=labelled,
        check=latest_check(layout),
        slices=slices,
    )
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "index.html"
    temp = folder / ".index.html.tmp"
    temp.write_text(html, encoding="utf-8")
    temp.replace(index)  # a browser open on the old page never reads a half-written one
    return GalleryResult(
        index, len(data["images"]), len(errors), stats.written, stats.fresh, stats.failed, time.monotonic() - started
    )


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("cambatch.inspection", "templates"), autoescape=select_autoescape(["html", "j2"])
    )


def _asset(env: Environment, name: str) -> Markup:
    """A CSS or JS file inlined verbatim (not parsed as a template: `{#` is valid JavaScript)."""
    return Markup(env.loader.get_source(env, name)[0])


def _page_data(
    df: pd.DataFrame,
    top: pd.DataFrame,
    layout: OutputLayout,
    jobs: list[ThumbJob],
    labelled: bool,
    thresholds: Thresholds,
) -> dict[str, Any]:
    """The JSON the page's script renders from; thumbnail jobs are appended to `jobs` on the way.

    Classes and labels are listed once and referred to by index, and keys are short, because a
    10,000-image run embeds 10,000 of these records. An image is its INPUT and path: a card's `p` is
    the path, behind its INPUT's folder name when the run spans several.
    """
    root, folder = layout.root, layout.gallery_dir
    names, several_roots = image_names(df), several_inputs(df)
    ok = df[df["status"] == "ok"]
    if "run_id" in ok.columns and ok["run_id"].nunique() > 1:  # the run that `per_image` chose for each image
        chosen = set(zip(image_ids(top), top["run_id"].astype(str), strict=True))
        ok = ok[[pair in chosen for pair in zip(image_ids(ok), ok["run_id"].astype(str), strict=True)]]
    classes = sorted(set(ok["class_name"].astype(str)), key=str.lower)
    class_id = {name: i for i, name in enumerate(classes)}
    labels = sorted(set(top["label"].dropna().astype(str)), key=str.lower) if labelled else []
    label_id = {name: i for i, name in enumerate(labels)}

    ok = ok.sort_values([*image_key(ok), "rank"])
    explained_of: dict[tuple[str, ...], list[list]] = {}
    for image, row in zip(image_ids(ok), ok.itertuples(index=False), strict=True):
        overlay = (
            f"../{row.overlay_path}"
            if isinstance(row.overlay_path, str) and (root / row.overlay_path).is_file()
            else None
        )
        explained_of.setdefault(image, []).append(
            [
                int(row.rank),
                class_id[str(row.class_name)],
                _num(row.probability),
                overlay,
                _num(row.border_energy),
                _num(row.active_area),
                _num(row.entropy),
                _cam_box(row),
            ]
        )

    images = []
    for image, row in zip(image_ids(top), top.itertuples(index=False), strict=True):
        explained = explained_of.get(image, [])
        first_overlay = next((x[3] for x in explained if x[3]), None)
        photo_source = Path(row.input_root) / row.path if isinstance(getattr(row, "input_root", None), str) else None
        has_photo = photo_source is not None and photo_source.is_file()
        pictures = names.folder(getattr(row, "input_root", ""), row.path)
        thumb = layout.gallery_rel("thumbs", pictures) if first_overlay or has_photo else None
        if first_overlay:
            jobs.append(ThumbJob(root / first_overlay[3:], folder / thumb, THUMB_SIDE, photo=False))
        elif has_photo:
            jobs.append(ThumbJob(photo_source, folder / thumb, THUMB_SIDE, photo=True))
        photo = layout.gallery_rel("photos", pictures) if has_photo else None
        if has_photo:
            jobs.append(ThumbJob(photo_source, folder / photo, PHOTO_SIDE, photo=True))
        label = getattr(row, "label", None) if labelled else None
        correct = getattr(row, "correct", None) if labelled else None
        images.append(
            {
                "p": _shown(row, several_roots),
                "t": thumb,
                "o": photo,
                "c": class_id[str(row.class_name)],
                "pr": _num(row.probability),
                "be": _num(row.border_energy),
                "aa": _num(row.active_area),
                "en": _num(row.entropy),
                "l": label_id.get(str(label)) if label is not None and not pd.isna(label) else None,
                "ok": None if correct is None or pd.isna(correct) else bool(correct),
                "w": _int(row.width),
                "h": _int(row.height),
                "x": explained,
                "g": _gt_boxes(getattr(row, "gt_box_coords", None)),
            }
        )

    by_class = summarize(df, "class", thresholds) if len(top) else None
    by_label = summarize(df, "label", thresholds) if len(top) and labelled else None
    return {
        "meta": _meta(df, top, labelled, by_class),
        "classes": classes,
        "labels": labels,
        "groups": {"class": _group_stats(by_class), "label": _group_stats(by_label)},
        "images": images,
    }


def _group_stats(summary) -> dict[str, dict[str, Any]]:
    """Per class (or label): count, mean probability, accuracy and flags, for the group headers."""
    if summary is None:
        return {}
    table = summary.table
    return {
        name: {
            "n": int(row["images"]),
            "pr": _num(row["mean_probability"]),
            "acc": _num(row["accuracy"]) if "accuracy" in table.columns else None,
            "be": _num(row["border_energy"]),
            "pl": _num(row["position_lock"]) if "position_lock" in table.columns else None,
            "flags": row["flags"],
        }
        for name, row in table.iterrows()
    }


def _meta(df: pd.DataFrame, top: pd.DataFrame, labelled: bool, by_class) -> dict[str, Any]:
    settings = df.attrs
    errors = len(df.loc[df["status"] == "error", image_key(df)].drop_duplicates())
    run_ids = settings.get("run_ids") or [settings.get("run_id")]
    return {
        **summary_of(settings),
        "run_id": run_ids[-1],
        "runs": len(run_ids),
        "created": _run_time(run_ids[-1]),
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "images": len(top) + errors,
        "ok": len(top),
        "errors": errors,
        "classes": int(top["class_name"].nunique()),
        "accuracy": _num(top["correct"].mean()) if labelled and "correct" in top.columns else None,
        "median_border_energy": _num(by_class.median_border_energy) if by_class else None,
        "median_active_area": _num(by_class.median_active_area) if by_class else None,
        "border_ratio": by_class.thresholds.border_ratio if by_class else None,
        "spread_ratio": by_class.thresholds.spread_ratio if by_class else None,
        "lock_score": by_class.thresholds.lock_score if by_class else None,
    }


def latest_check(layout: OutputLayout) -> dict[str, Any] | None:
    """The newest verdict of `cambatch check` in OUT/checks/ as the page shows it: the verdict, when, and each
    check that failed or warned with its classes, each linked to its group in the gallery; None without one.
    """
    kept = sorted(layout.checks_dir.glob("*.json")) if layout.checks_dir.is_dir() else []
    try:
        verdict = json.loads(kept[-1].read_text(encoding="utf-8")) if kept else None
    except (OSError, ValueError):  # a verdict damaged by hand: the gallery is built without it
        verdict = None
    if verdict is None:
        return None
    breaches = [
        {
            "name": check["name"],
            "status": check["status"],
            "classes": [
                {"name": r["class"], "link": _group_link(check.get("by"), r["class"])}
                for r in check.get("results", [])
                if r["status"] == check["status"]
            ],
        }
        for check in verdict["checks"]
        if check["status"] in ("fail", "warn")
    ]
    checked = datetime.strptime(verdict["checked_at"], "%Y%m%dT%H%M%S%fZ").strftime("%Y-%m-%d %H:%M UTC")
    return {"verdict": verdict["verdict"], "checked": checked, "policy": verdict["policy"], "breaches": breaches}


def _group_link(by: str | None, name: str) -> str:
    """The page's state (its URL hash) that shows one class's (or label's) group."""
    return urlencode({"group": "label", "label": name} if by == "label" else {"group": "class", "cls": name})


def _errors(df: pd.DataFrame) -> list[dict[str, str]]:
    """Failed images with their reasons, by image (an image retried and fixed is not listed)."""
    key, several_roots = image_key(df), several_inputs(df)
    fixed = set(image_ids(df[df["status"] == "ok"]))
    failed = df[df["status"] == "error"].drop_duplicates(key).sort_values(key)
    return [
        {"path": _shown(row, several_roots), "error": row.error if isinstance(row.error, str) else ""}
        for image, row in zip(image_ids(failed), failed.itertuples(index=False), strict=True)
        if image not in fixed
    ]


def _run_time(run_id: str | None) -> str | None:
    """Run ids start with their UTC start time (20250101T120000Z-...)."""
    try:
        return datetime.strptime(str(run_id)[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return None


def _shown(row: Any, several_roots: bool) -> str:
    """An image's name for people: its path, behind its INPUT's folder name when the run spans several."""
    return f"{PurePosixPath(str(row.input_root).rstrip('/')).name}/{row.path}" if several_roots else row.path


def _num(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return round(float(value), _DIGITS)


def _cam_box(row: Any) -> list[float] | None:
    """The row's CAM-paper box (`bbox_*`, fractions) in displayed pixels (edges), as the detail view draws it."""
    sides = [getattr(row, f"bbox_{side}", None) for side in ("x0", "y0", "x1", "y1")]
    if any(v is None or pd.isna(v) for v in sides) or pd.isna(row.width) or pd.isna(row.height):
        return None
    scale = (row.width, row.height, row.width, row.height)
    return [round(float(v) * s, 1) for v, s in zip(sides, scale, strict=True)]


def _gt_boxes(coords: Any) -> list[list[float]] | None:
    """`gt_box_coords` (x0, y0, x1, y1 per box, inclusive displayed pixels) as boxes; None without ground truth."""
    if coords is None or (not hasattr(coords, "__len__") and pd.isna(coords)) or len(coords) == 0:
        return None
    flat = [round(float(v), 1) for v in coords]
    return [flat[i : i + 4] for i in range(0, len(flat), 4)]


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)
