"""`cambatch overlays OUT`: render the overlays of any subset of a run later, from the report's maps. Torch-free.

A million-image audit can run with `--no-overlays` and render only what a reviewer needs: each
selected row's map (kept in the report) is normalized as `run` does it, upsampled over the photo,
re-read from where the run found it and decoded the same way (EXIF orientation, reduced-scale JPEG
decode, the overlay size capped by the run's `--max-side`), and saved under the same name
(`layout.OutputLayout.overlay_rel`) with the same colormap, opacity and JPEG quality. The only
difference from `run`'s files: the report keeps maps as float16, so a display value can differ by
one step of 255 (PSNR well above 40 dB; the tests measure it).

Before anything is written, every selected photo's size and modification time are checked against
the report's `file_size` and `mtime_ns`; a photo that moved or changed refuses the whole command
with one line (its overlay would no longer show what the report says).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import OutputOptions
from ..data.decode import decode, model_decode_size, overlay_background
from ..layout import ImageNames, OutputLayout, out_folder
from ..names import name_key
from ..render.colormaps import COLORMAPS
from ..render.overlay import display_map, opencv_threads, overlay, save_jpeg
from ..report.reader import image_ids, image_key, image_names, load_report, map_stack

THREADS = 4  # the overlay's OpenCV steps and the JPEG encode free the GIL


@dataclass(frozen=True)
class RenderedOverlays:
    """What `render_overlays` wrote."""

    images: int
    overlays: int
    paths: list[str]  # relative to OUT, in the report's order
    seconds: float


def select_rows(
    df: pd.DataFrame, *, class_name: str | None = None, where: str | None = None, limit: int | None = None
) -> pd.DataFrame:
    """The `ok` rows (with maps) of the newest run per image that match `class_name` and the pandas `where` query,
    cut to the first `limit` images (by INPUT and path).
    """
    rows = df[(df["status"] == "ok") & df["map_height"].notna()]
    key = image_key(rows)
    run_ids = rows["run_id"].astype(str)
    rows = rows[run_ids == run_ids.groupby([rows[column].astype(str) for column in key]).transform("max")]
    if class_name is not None:
        _check_class(class_name, df)
        rows = rows[rows["class_name"].astype(str).map(name_key) == name_key(class_name)]
    if where:
        try:
            rows = rows.query(where)
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad expression
            raise ValueError(f"cannot apply --where {where!r}: {type(exc).__name__}: {exc}") from None
    rows = rows.sort_values([*key, "rank"], kind="stable")
    if limit is not None:
        images = image_ids(rows)
        first = set(list(dict.fromkeys(images))[:limit])
        rows = rows[[image in first for image in images]]
    return rows


def _check_class(class_name: str, df: pd.DataFrame) -> None:
    """Refuse (ValueError, one line) a class the run's model does not have: a typo must not read as "0 overlays"."""
    known = df.attrs.get("class_names") or sorted(set(df["class_name"].dropna().astype(str)))
    if name_key(class_name) not in {name_key(name) for name in known}:
        examples = ", ".join(sorted(set(df["class_name"].dropna().astype(str)))[:5])
        raise ValueError(
            f"unknown class {class_name!r} (--class): the run's model has no such class; "
            f"the report explains e.g. {examples or 'none'}"
        )


def check_photos(rows: pd.DataFrame) -> None:
    """Refuse (ValueError, one line) when any selected photo moved or changed since the run."""
    images = rows.drop_duplicates(image_key(rows))
    problems = []
    for root, rel, size, mtime in zip(
        images["input_root"], images["path"], images["file_size"], images["mtime_ns"], strict=True
    ):
        photo = Path(root) / rel
        try:
            stat = os.stat(photo)
        except OSError:
            problems.append(f"{photo} is gone")
            continue
        if stat.st_size != size or stat.st_mtime_ns != mtime:
            problems.append(f"{photo} changed (size {size} -> {stat.st_size}, mtime differs)")
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise ValueError(
            f"{len(problems)} of {len(images)} photos moved or changed since the run: {problems[0]}{more}; "
            "rerun `cambatch run` on them first"
        )


def render_overlays(
    out: Path | str,
    *,
    class_name: str | None = None,
    where: str | None = None,
    limit: int | None = None,
    colormap: str | None = None,
    alpha: float | None = None,
) -> RenderedOverlays:
    """Write the overlays of the selected rows of the run in `out`, as `cambatch run` would have.

    `class_name` keeps one explained class (case-insensitive, `_` and space alike); `where` is a
    pandas `DataFrame.query` expression over the report's columns (e.g. `"rank == 1 and probability
    > 0.5"`); `limit` keeps the first N images (by path). Colormap and opacity default to the run's.

    >>> import cambatch
    >>> made = cambatch.render_overlays("cams", class_name="espresso", limit=20)  # doctest: +SKIP
    """
    started = time.perf_counter()
    root = out_folder(out)
    df = load_report(root, maps=True)
    options = df.attrs.get("options", {})
    defaults = OutputOptions()  # for reports whose settings predate an option
    colormap = colormap or options.get("colormap", defaults.colormap)
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose from {', '.join(COLORMAPS)}")
    rows = select_rows(df, class_name=class_name, where=where, limit=limit)
    check_photos(rows)
    style = _Style(
        layout=OutputLayout(root),
        colormap=colormap,
        alpha=float(options.get("alpha", defaults.alpha) if alpha is None else alpha),
        max_side=int(options.get("max_side", defaults.max_side)),
        image_size=int(df.attrs.get("input_size", 224)),
        named_by_rank=not options.get("classes"),
        names=image_names(df),
    )
    groups = [group for _, group in rows.groupby(["input_root", "path"], sort=True, observed=True)]
    with opencv_threads(1), ThreadPoolExecutor(THREADS) as pool:
        written = [path for paths in pool.map(style.render, groups) for path in paths]
    return RenderedOverlays(len(groups), len(written), written, time.perf_counter() - started)


@dataclass(frozen=True, kw_only=True)
class _Style:
    """How one run drew its overlays, and where they go."""

    layout: OutputLayout
    colormap: str
    alpha: float
    max_side: int
    image_size: int
    named_by_rank: bool
    names: ImageNames

    def render(self, rows: pd.DataFrame) -> list[str]:
        """The overlays of one image (all its selected rows), decoded once."""
        first = rows.iloc[0]
        path = Path(first["input_root"]) / first["path"]
        decoded = decode(path, min_size=lambda w, h: model_decode_size(w, h, image_size=self.image_size))
        photo = overlay_background(path, decoded, max_side=self.max_side)  # as the run's loader makes it
        paths = []
        folder = self.names.folder(str(first["input_root"]), str(first["path"]))
        columns = (rows["class_name"], rows["rank"], rows["class_index"])
        for raw, name, rank, index in zip(map_stack(rows), *columns, strict=True):
            rank = int(rank) if self.named_by_rank else None
            rel = self.layout.overlay_rel(folder, str(name), rank, class_index=int(index))
            target = self.layout.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            picture = overlay(photo, display_map(raw), colormap=self.colormap, alpha=self.alpha)
            save_jpeg(picture, target)
            paths.append(rel)
        return paths
