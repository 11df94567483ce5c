"""`cambatch gallery OUT`: a static HTML page to browse a run's overlays, in `OUT/gallery/`, at any size.

The page opens from a laptop's disk or a CI artifact with no server and no network. `index.html` holds
the CSS, the JavaScript and the head data: the run's figures, per class and label its counts, flags,
mean map and clusters, and a sample of each class's cards (its first `SAMPLE_PER_CLASS` images and its
clusters' examples). Every image's card is in `gallery/data/chunk-*.js`, one class per chunk, which the
page loads (a `<script>` each: a page opened from disk may not fetch files) when a class is chosen or
all are asked for; a run of at most `EAGER_IMAGES` images loads them all at once. Cards are arrays
whose fields this module names once (`FIELDS`, sent in the head data): the script reads them by name.

Thumbnails (320 px) and photos (720 px, the detail view) are made for the sample only (and the members
that the error slices' section shows); `cambatch gallery --all` makes them for every image. The report
streams past three times (sums; clustering samples; cluster members and cards): memory grows with the
classes, never with the images (but for 16 bytes an image to name their pictures: `ReportScan.names`).

An image is its INPUT and path: a card's `p` is the path, behind its INPUT's folder name when the run spans
several, and its pictures are named as the run names its output folders (`layout.ImageNames`). The page
also shows the newest verdict of `cambatch check` (`latest_check`) and the error slices `cambatch slices`
kept (`bias.slice_cards`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..bias.slice_cards import carded_images, slice_cards
from ..layout import ImageNames, OutputLayout, out_folder
from ..render.colormaps import COLORMAPS
from ..report.scan import ReportScan
from ..report.settings import summary_of
from .options import DEFAULT_PAGE_SIZE, PAGE_SIZES, GroupBy, Thresholds
from .shortcut_pictures import shortcut_pictures
from .summarize import MEDIANS, ClassSummary, SummarySums
from .thumbnails import ThumbJob, ThumbStats, make_thumbnails

THUMB_SIDE = 320  # grid cards are about 240 CSS pixels wide: sharp on most screens
PHOTO_SIDE = 720  # the original, shown beside the full-size overlays in the detail view
MAX_ERRORS_LISTED = 1000  # the rest are counted, and are in the report
SAMPLE_PER_CLASS = 12  # cards of each class in the head data, with their thumbnails
EAGER_IMAGES = 20_000  # a run this small: the page loads every chunk at once
CHUNK_IMAGES = 2_000  # cards per chunk at most
BUFFERED_IMAGES = 50_000  # cards held before the classes holding most are written out
_DIGITS = 4  # decimals of numbers in the data: keeps the files small
COLUMNS = (
    "class_name",
    "probability",
    "border_energy",
    "active_area",
    "entropy",
    "label",
    "correct",
    "width",
    "height",
    "overlay_path",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
    "gt_box_coords",
    "energy_in_gt",
    "pointing_hit",
    "map",
    "map_height",
    "map_width",
)
SUMS_COLUMNS = ("class_name", "probability", "border_energy", "active_area", "entropy", "label", "correct")
SUMS_COLUMNS += ("energy_in_gt", "pointing_hit", "map", "map_height", "map_width")  # summarize's, by class and label
MAP_COLUMNS = ("class_name", "label", "map", "map_height", "map_width")  # the clustering samples'
# The fields of a card and of one of its explained classes, in the order of the arrays the page reads.
FIELDS = {
    # path, thumbnail (or None), photo (or None), class id, probability, border energy, active area, entropy,
    # label id, correct, width, height, ground-truth boxes, raw cluster by class and by label (`km` of its group
    # numbers them), thumbnail state (1 made, 0 not made yet: `--all`, -1 no overlay or photo to make it from)
    "image": ("p", "t", "o", "c", "pr", "be", "aa", "en", "l", "ok", "w", "h", "g", "kc", "kl", "tn"),
    # the card's index in its list, rank, class id, probability, overlay (or None), border energy, active area,
    # entropy, the CAM box in displayed pixels (edges)
    "explained": ("i", "rank", "c", "pr", "overlay", "be", "aa", "en", "box"),
}


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
    thumbnails_left: int = 0  # images without a thumbnail yet (`build_gallery(..., everything=True)` makes them)
    chunks: int = 0  # card data files


def build_gallery(
    out: Path | str,
    *,
    group_by: GroupBy | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    thresholds: Thresholds = Thresholds(),
    workers: int | None = None,
    everything: bool = False,
) -> GalleryResult:
    """Write `OUT/gallery/index.html`, its card data and thumbnails for the run in `out`; return what was made.

    `group_by` (`class` or `label`; default label when the report has labels) sets the initial
    grouping, which the page can change. Thumbnails and photos are made for each class's sample
    (`everything`: for every image); those newer than their sources are reused.

    >>> import cambatch
    >>> cambatch.build_gallery("cams").index       # doctest: +SKIP
    PosixPath('cams/gallery/index.html')
    """
    if page_size not in PAGE_SIZES:
        raise ValueError(f"page_size must be one of {', '.join(map(str, PAGE_SIZES))}")
    started = time.monotonic()
    root = out_folder(out)
    layout = OutputLayout(root)
    scan = ReportScan(root)
    labelled = scan.labelled
    chosen = scan.chosen_classes is not None  # a `--classes` run: per class, every explained row; no accuracy
    group_by = group_by or ("label" if labelled else "class")
    bys = ("class", "label") if labelled else ("class",)
    read = lambda: scan.image_rows(COLUMNS)  # noqa: E731 - the cards' pass reads every column it shows
    # Per label, each image once by its label (a `--classes` run's too: only its classes are no predictions).
    sums = {by: SummarySums(by, thresholds, chosen=chosen and by == "class") for by in bys}
    names = _Names()
    for images, rows in scan.image_rows(SUMS_COLUMNS):
        names.add(images, rows)
        for found in sums.values():
            found.add(images, rows)
    middle = sums["class"].medians(lambda: scan.image_rows(MEDIANS))
    judged = labelled and not chosen
    summaries = {by: found.summary(middle, judged, scan.keys.failed, scan.settings) for by, found in sums.items()}
    maps = {by: found for by, found in sums.items() if found.mapped and found.maps.codes and _clusters_possible()}
    _cluster(maps, lambda: scan.image_rows(MAP_COLUMNS))
    shown = _Shown(scan.names)
    cards = _Cards(layout, names, shown, everything=everything, workers=workers, slices=carded_images(layout))
    for images, rows in read():
        labels = {by: _raw_clusters(images, rows, found) for by, found in maps.items()}
        cards.add(images, rows, labels, _examples(maps))
    cards.close()
    data = _head(scan, summaries, names, cards, judged, middle)
    colormap = scan.settings.get("options", {}).get("colormap", COLORMAPS[0])
    for by, found in maps.items():

        def per_image(found=found):
            return found.maps.per_image_table(lambda: (found.grouped(*batch) for batch in read()))

        pictures = found.maps.shortcuts(by, per_image)
        shortcut_pictures(pictures, found.maps, data["groups"][by], layout, colormap=colormap, shown=shown)
    slices = slice_cards(layout, colormap=colormap, names=scan.names)
    _write_page(layout, data, scan.keys, group_by, page_size, labelled, shown=shown, slices=slices)
    return GalleryResult(
        layout.gallery_dir / "index.html",
        cards.images,
        scan.keys.failed,
        cards.stats.written,
        cards.stats.fresh,
        cards.stats.failed,
        time.monotonic() - started,
        thumbnails_left=cards.images - cards.rendered,
        chunks=len(cards.chunks),
    )


def _clusters_possible() -> bool:
    try:
        import sklearn  # noqa: F401 - only to know whether clusters can be made
    except ImportError:
        return False
    return True


def _cluster(maps: dict[str, SummarySums], read) -> None:
    """Pass 2: each grouping's clustering samples (of the rows it groups), then its clusters."""
    if not maps:
        return
    for images, rows in read():
        for found in maps.values():
            found.maps.sample(found.grouped(images, rows))
    for found in maps.values():
        found.maps.fit()


def _raw_clusters(images: pd.DataFrame, rows: pd.DataFrame, found: SummarySums) -> np.ndarray:
    """Pass 3: each image's raw cluster in this grouping (-1: no map or no group), its members counted (the rows
    the grouping counts: a `--classes` run's every explained row, an image's card the cluster of its own).
    """
    grouped, maps = found.grouped(images, rows), found.maps
    _, _, labels = maps.assign(grouped)
    raw = pd.Series(-1, index=grouped.index, dtype=np.int64)
    raw[(grouped["map_height"].notna() & grouped[maps.key].notna()).to_numpy()] = labels
    return raw.reindex(images.index, fill_value=-1).to_numpy(np.int64)


def _examples(maps: dict[str, SummarySums]) -> set[tuple[str, str]]:
    """The clusters' example images (input_root, path): their cards go in the page's sample."""
    return {image for found in maps.values() for images in found.maps.examples.values() for image in images}


class _Shown:
    """An image's name for people (a card's `p`): its path, behind its INPUT's folder name when the run spans
    several; and its pictures' folder (`layout.ImageNames`).
    """

    def __init__(self, names: ImageNames):
        self.names = names

    def __call__(self, input_root: str, path: str) -> str:
        if not self.names.several_roots:
            return str(path)
        return f"{PurePosixPath(str(input_root).rstrip('/')).name}/{path}"

    def many(self, roots: pd.Series, paths: pd.Series) -> pd.Series:
        paths = paths.astype(str)
        if not self.names.several_roots:
            return paths
        roots = roots.astype(str)
        folders = roots.map({root: PurePosixPath(root.rstrip("/")).name for root in roots.unique()})
        return folders + "/" + paths


@dataclass
class _Names:
    """Classes (of every explained row) and labels, numbered once pass 1 has seen them all."""

    classes: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    correct: int = 0
    judged: int = 0  # images with a `correct` value

    def add(self, images: pd.DataFrame, rows: pd.DataFrame) -> None:
        self.classes.update(rows["class_name"].dropna().astype(str).unique())
        if "label" in images.columns:
            self.labels.update(images["label"].dropna().astype(str).unique())
        if "correct" in images.columns:
            judged = images["correct"].dropna()
            self.correct += int(judged.astype(bool).sum())
            self.judged += len(judged)

    @property
    def class_list(self) -> list[str]:
        return sorted(self.classes, key=str.lower)

    @property
    def label_list(self) -> list[str]:
        return sorted(self.labels, key=str.lower)


class _Cards:
    """The cards of pass 3, held per class and written to chunk files as they fill; thumbnails on the way."""

    def __init__(
        self,
        layout: OutputLayout,
        names: _Names,
        shown: _Shown,
        *,
        everything: bool,
        workers: int | None,
        slices: set[tuple[str, str]] = frozenset(),
    ):
        self.layout, self.everything, self.workers = layout, everything, workers
        self.class_id = {name: i for i, name in enumerate(names.class_list)}
        self.label_id = {name: i for i, name in enumerate(names.label_list)}
        self.shown = shown  # card names; pictures named as the run names its images (`ImageNames`)
        self.slices = slices  # the images the error slices' section shows: thumbnailed whatever else is
        self.held: dict[int, list[tuple[pd.DataFrame, pd.DataFrame]]] = {}
        self.held_images = 0
        self.seen: dict[int, int] = {}  # per class: its cards so far (the first are its sample)
        self.sample: list[tuple[pd.DataFrame, pd.DataFrame]] = []
        self.chunks: list[tuple[int, str, int]] = []  # class id, file, cards
        self.images = self.rendered = 0  # cards; those whose thumbnail was made or cannot be
        self.stats = ThumbStats()
        self.overlays = layout.overlays_dir.is_dir()

    def add(self, images: pd.DataFrame, rows: pd.DataFrame, clusters: dict[str, np.ndarray], examples: set) -> None:
        images = images.reset_index(drop=True)
        card = self._cards(images, clusters)
        classes = card["c"].to_numpy()
        first = np.array([self._position(c) < SAMPLE_PER_CLASS for c in classes], bool)
        sampled = first | _among(images, examples)
        pictured = sampled | _among(images, self.slices)
        self._thumbnails(images, rows, card, pictured if not self.everything else np.ones(len(images), bool))
        explained = self._explained(images, rows)
        self.images += len(card)
        self.sample.append((card[sampled], explained[explained["i"].isin(np.flatnonzero(sampled))]))
        for c in np.unique(classes):
            mine = np.flatnonzero(classes == c)
            self.held.setdefault(int(c), []).append((card.iloc[mine], explained[explained["i"].isin(mine)]))
            self.held_images += len(mine)
        while self.held_images > BUFFERED_IMAGES or any(self._count(c) >= CHUNK_IMAGES for c in self.held):
            self._write(max(self.held, key=self._count))

    def _position(self, c: int) -> int:
        """The class's cards so far, counting this one."""
        self.seen[c] = self.seen.get(c, 0) + 1
        return self.seen[c] - 1

    def _count(self, c: int) -> int:
        return sum(len(card) for card, _ in self.held[c])

    def _cards(self, images: pd.DataFrame, clusters: dict[str, np.ndarray]) -> pd.DataFrame:
        nothing = pd.Series([None] * len(images), dtype=object)
        label = images["label"].astype(object) if "label" in images.columns else nothing
        correct = images["correct"] if "correct" in images.columns else nothing
        return pd.DataFrame(
            {
                "p": self.shown.many(images["input_root"], images["path"]),
                "t": None,
                "o": None,
                "c": images["class_name"].astype(str).map(self.class_id).astype(int),
                "pr": _numbers(images["probability"]),
                "be": _numbers(images["border_energy"]),
                "aa": _numbers(images["active_area"]),
                "en": _numbers(images["entropy"]),
                "l": pd.array(label.map(self.label_id), dtype="Int64"),
                "ok": pd.array(correct, dtype="boolean"),
                "w": _integers(images["width"]),
                "h": _integers(images["height"]),
                "g": _gt_boxes(images["gt_box_coords"] if "gt_box_coords" in images.columns else nothing),
                "kc": clusters.get("class", np.full(len(images), -1)),
                "kl": clusters.get("label", np.full(len(images), -1)),
                "tn": 0,
            }
        )

    def _explained(self, images: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
        """Every explained class of the batch's cards (`i`: the card's row in `images`), best rank first."""
        index = pd.Series(np.arange(len(images)), index=pd.MultiIndex.from_frame(images[["input_root", "path"]]))
        keys = pd.MultiIndex.from_frame(rows[["input_root", "path"]])
        rows = rows.assign(i=index.reindex(keys).to_numpy()).dropna(subset=["i"]).sort_values(["i", "rank"])
        overlay = rows["overlay_path"].astype(object)
        width, height = rows["width"].astype(float).to_numpy(), rows["height"].astype(float).to_numpy()
        sides = rows[["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].astype(float).to_numpy()
        boxes = np.round(sides * np.stack([width, height, width, height], axis=1), 1)
        return pd.DataFrame(
            {
                "i": rows["i"].astype(int).to_numpy(),
                "rank": rows["rank"].astype(int).to_numpy(),
                "c": rows["class_name"].astype(str).map(self.class_id).astype(int).to_numpy(),
                "pr": _numbers(rows["probability"]),
                "overlay": [f"../{p}" if isinstance(p, str) and self.overlays else None for p in overlay],
                "be": _numbers(rows["border_energy"]),
                "aa": _numbers(rows["active_area"]),
                "en": _numbers(rows["entropy"]),
                "box": _boxes(boxes),
            }
        )

    def _thumbnails(self, images: pd.DataFrame, rows: pd.DataFrame, card: pd.DataFrame, chosen: np.ndarray) -> None:
        """Thumbnails (and photos) of the chosen cards, from the first explained overlay on disk, else the photo."""
        folder, jobs, targets = self.layout.gallery_dir, [], {}
        overlays = rows[rows["path"].isin(images["path"][chosen])].dropna(subset=["overlay_path"])
        overlays = overlays.sort_values("rank").drop_duplicates(["input_root", "path"])
        keys = zip(overlays["input_root"], overlays["path"], strict=True)
        first = dict(zip(keys, overlays["overlay_path"], strict=True))
        for i in np.flatnonzero(chosen):
            root, rel = images.at[i, "input_root"], str(images.at[i, "path"])
            overlay = first.get((root, rel)) if self.overlays else None
            overlay = self.layout.root / overlay if overlay and (self.layout.root / overlay).is_file() else None
            photo = Path(root) / rel if isinstance(root, str) and (Path(root) / rel).is_file() else None
            pictures = self.shown.names.folder(str(root), rel)
            self.rendered += 1
            if overlay is None and photo is None:
                card.at[i, "tn"] = -1
                continue
            thumb = self.layout.gallery_rel("thumbs", pictures)
            jobs.append(ThumbJob(overlay or photo, folder / thumb, THUMB_SIDE, photo=overlay is None))
            targets[i] = [("t", thumb)]
            if photo is not None:
                rel_photo = self.layout.gallery_rel("photos", pictures)
                jobs.append(ThumbJob(photo, folder / rel_photo, PHOTO_SIDE, photo=True))
                targets[i].append(("o", rel_photo))
        stats = make_thumbnails(jobs, self.workers)
        self.stats.written += stats.written
        self.stats.fresh += stats.fresh
        self.stats.failed.update(stats.failed)
        for i, made in targets.items():
            for key, rel in made:
                if str(folder / rel) not in stats.failed:  # one that could not be made: the card says so
                    card.at[i, key] = rel
            card.at[i, "tn"] = 1 if card.at[i, "t"] else -1

    def _write(self, c: int) -> None:
        """Write the held cards of class `c` as one chunk (their explained rows renumbered to the chunk)."""
        card, explained = _joined(self.held.pop(c))
        self.held_images -= len(card)
        rel = self.layout.gallery_chunk_rel(len(self.chunks))
        target = self.layout.gallery_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"cambatchGallery.chunk({len(self.chunks)}, {_data_json(card, explained)});\n", "utf-8")
        self.chunks.append((c, rel, len(card)))

    def close(self) -> None:
        while self.held:
            self._write(next(iter(self.held)))

    def sample_data(self) -> dict[str, Any]:
        card, explained = _joined(self.sample)
        return json.loads(_data_json(card, explained))


def _among(images: pd.DataFrame, wanted: set[tuple[str, str]]) -> np.ndarray:
    """Whether each image (input_root, path) is one of `wanted`."""
    if not wanted:
        return np.zeros(len(images), bool)
    keys = pd.MultiIndex.from_arrays([images["input_root"].astype(str), images["path"].astype(str)])
    return keys.isin(list(wanted))


def _joined(parts: list[tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cards of several batches as one list, their explained rows pointing into it."""
    cards, explained, offset = [], [], 0
    for card, rows in parts:
        position = pd.Series(np.arange(len(card)) + offset, index=card.index)
        explained.append(rows.assign(i=position.reindex(rows["i"]).to_numpy()))
        cards.append(card)
        offset += len(card)
    if not cards:
        return pd.DataFrame(columns=FIELDS["image"]), pd.DataFrame(columns=FIELDS["explained"])
    return pd.concat(cards, ignore_index=True), pd.concat(explained, ignore_index=True)


def _data_json(card: pd.DataFrame, explained: pd.DataFrame) -> str:
    """`{"images": [...], "explained": [...]}`, each row an array in `FIELDS` order."""
    images = card[list(FIELDS["image"])].to_json(orient="values", double_precision=_DIGITS)
    rows = explained[list(FIELDS["explained"])].to_json(orient="values", double_precision=_DIGITS)
    return f'{{"images": {images}, "explained": {rows}}}'


def _head(scan, summaries: dict[str, ClassSummary], names: _Names, cards: _Cards, labelled: bool, middle) -> dict:
    """The data `index.html` embeds: figures, groups, the field names, the chunks and the sample."""
    by_class = summaries["class"]
    return {
        "meta": {
            **_meta(scan, by_class, names, labelled, middle),
            "eager": cards.images <= EAGER_IMAGES,
            "sample_per_class": SAMPLE_PER_CLASS,
            "thumbnails": cards.rendered,
            "everything": cards.everything,
        },
        "fields": FIELDS,
        "classes": names.class_list,
        "labels": names.label_list,
        "groups": {by: _group_stats(summaries.get(by)) for by in ("class", "label")},
        "chunks": cards.chunks,
        "sample": cards.sample_data(),
    }


def _group_stats(summary: ClassSummary | None) -> dict[str, dict[str, Any]]:
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


def _meta(scan, by_class: ClassSummary, names: _Names, labelled: bool, middle: dict) -> dict[str, Any]:
    settings = scan.settings
    run_ids = settings.get("run_ids") or [settings.get("run_id")]
    ok, errors = by_class.images, scan.keys.failed
    return {
        **summary_of(settings),
        "run_id": run_ids[-1],
        "runs": len(run_ids),
        "created": _run_time(run_ids[-1]),
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "images": ok + errors,
        "ok": ok,
        "errors": errors,
        "classes": len(by_class.table),
        "accuracy": _num(names.correct / names.judged) if labelled and names.judged else None,
        "median_border_energy": _num(middle["border_energy"]) if ok else None,
        "median_active_area": _num(middle["active_area"]) if ok else None,
        "border_ratio": by_class.thresholds.border_ratio,
        "spread_ratio": by_class.thresholds.spread_ratio,
        "lock_score": by_class.thresholds.lock_score,
    }


def _write_page(
    layout: OutputLayout,
    data: dict,
    keys,
    group_by: str,
    page_size: int,
    labelled: bool,
    *,
    shown: _Shown,
    slices: dict[str, Any] | None,
) -> None:
    env = _environment()
    html = env.get_template("gallery.html.j2").render(
        css=_asset(env, "gallery.css"),
        script=_asset(env, "gallery.js"),
        data=data,
        meta=data["meta"],
        errors=[{"path": shown(r, p), "error": e} for r, p, e in keys.failed_first[:MAX_ERRORS_LISTED]],
        errors_total=keys.failed,
        group_by=group_by,
        page_size=page_size,
        page_sizes=PAGE_SIZES,
        labelled=labelled,
        check=latest_check(layout),
        slices=slices,
    )
    folder = layout.gallery_dir
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / ".index.html.tmp"
    temp.write_text(html, encoding="utf-8")
    temp.replace(folder / "index.html")  # a browser open on the old page never reads a half-written one


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


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("cambatch.inspection", "templates"), autoescape=select_autoescape(["html", "j2"])
    )


def _asset(env: Environment, name: str) -> Markup:
    """A CSS or JS file inlined verbatim (not parsed as a template: `{#` is valid JavaScript)."""
    return Markup(env.loader.get_source(env, name)[0])


def _run_time(run_id: str | None) -> str | None:
    """Run ids start with their UTC start time (20250101T120000Z-...)."""
    try:
        return datetime.strptime(str(run_id)[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return None


def _num(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return round(float(value), _DIGITS)


def _numbers(values: pd.Series) -> np.ndarray:
    return values.astype(float).round(_DIGITS).to_numpy()


def _integers(values: pd.Series) -> pd.arrays.IntegerArray:
    """Whole numbers that stay whole in the JSON (a list with a None would become floats)."""
    return pd.array(values, dtype="Int64")


def _gt_boxes(coords: pd.Series) -> list[list[list[float]] | None]:
    """`gt_box_coords` (x0, y0, x1, y1 per box, inclusive displayed pixels) as boxes; None without ground truth."""
    found: list[list[list[float]] | None] = [None] * len(coords)
    for i in np.flatnonzero(coords.notna().to_numpy()):  # only the annotated images
        flat = [round(float(v), 1) for v in coords.iloc[i]]
        found[i] = [flat[k : k + 4] for k in range(0, len(flat), 4)] or None
    return found


def _boxes(boxes: np.ndarray) -> list[list[float] | None]:
    """CAM boxes [n, 4] as lists, None where a side is undefined."""
    found = boxes.tolist()
    for i in np.flatnonzero(np.isnan(boxes).any(axis=1)):
        found[i] = None
    return found
