"""`cambatch slices OUT`: the images a model gets wrong together (error slices), from the report's embeddings,
labels and predictions, with Domino's mixture model (`cambatch.bias.mixture`). Torch-free.

The report is read twice, streaming (`report.reader.scan_report`), one row per image (the row that
holds its embedding, `--embeddings`) and only images with a label:

1. **Reduction.** A PCA (scikit-learn) to `PCA_COMPONENTS` dimensions (Domino's 128, or fewer when
   the embedding has fewer), fitted on a uniform sample of `PCA_SAMPLE` images of the whole report.
2. **One mixture per class**: the images of each label (`--by label`, the default: the model's
   mistakes on one true class) or of each predicted class (`--by class`: what it wrongly calls that
   class). An image's *cell* is the other side of the confusion matrix: its predicted class (by
   label) or its label (by class), the `CELLS` most frequent of the class and the rest as one. A
   class is fitted on a sample of at most `SAMPLE_PER_CLASS` of its images, reduced; a class with
   no error, or with fewer than `MIN_CLASS_IMAGES` images, has no slice.
3. **Slices** are the components holding at least `MIN_SLICE_IMAGES` images (by responsibility)
   whose accuracy is below their class's. They are ranked by the *accuracy gap*, the class's
   accuracy (over all its images) less the slice's (over its sampled members, weighted by
   membership), then by size; the first `--slices` are kept.
4. For each slice: its estimated size in the class, accuracy, the dominant predicted and true
   classes (shares by membership), its members (image identities, `input_root` + `path`, ranked by
   membership, those at or above `MIN_MEMBERSHIP`), and its mean map: the members' top-1 maps on
   the common grid of `cambatch.inspection.shortcuts`, weighted by membership, with its peak and
   peak region.

**Sampling.** Both samples keep the images whose seeded hash of their identity is smallest
(`cambatch.bias.sampling`): the same images every time, whatever the order of the parts. A class
with more than `SAMPLE_PER_CLASS` images is judged on its sample: slice sizes are scaled up to the
class and accuracies estimated, members come from the sample only, and the result says
`sampled: true`. Memory grows with the classes (at most `SAMPLE_PER_CLASS` reduced vectors and maps
each, about 1 KB an image at 128 dimensions), never with the images.

The result is kept in `OUT/slices/` (`slices.json`: figures, mean maps and leading members;
`members.parquet`: every member), where the gallery and `read_slices` find it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from ..errors import UsageError
from ..inspection.shortcuts import grid_maps, peak_regions, single_threaded
from ..layout import OutputLayout, out_folder
from ..report.parts import read_settings
from ..report.reader import report_columns, scan_report
from ..report.schema import EMBEDDING_COLUMN, MAP_NAMES
from .mixture import fit_mixture
from .options import SLICES, SliceBy
from .sampling import IDENTITY, GroupSample

PCA_COMPONENTS = 128  # Domino's n_pca_components
PCA_SAMPLE = 10_000  # images the PCA is fitted on
SAMPLE_PER_CLASS = 500  # images per class the mixture is fitted on
CELLS = 8  # confusion-matrix cells per class; the rarer outcomes are one cell
MIN_CLASS_IMAGES = 10
MIN_SLICE_IMAGES = 5.0
MIN_MEMBERSHIP = 0.5
MEMBERS_SHOWN = 20  # members per slice in slices.json and the gallery (members.parquet has them all)
OTHER = "(other)"  # the cell of the rarer outcomes
_DIGITS = 4  # rounding in slices.json
SLICE_COLUMNS = (
    "group",
    "images",
    "members",
    "accuracy",
    "class_accuracy",
    "accuracy_gap",
    "predicted",
    "predicted_share",
    "label",
    "label_share",
    "peak_x",
    "peak_y",
    "peak_x0",
    "peak_y0",
    "peak_x1",
    "peak_y1",
)


@dataclass(frozen=True)
class Slices:
    """Error slices of a run, and the per-class figures they were found in."""

    by: SliceBy
    table: pd.DataFrame  # index: slice (1 = largest accuracy gap); SLICE_COLUMNS
    members: pd.DataFrame  # slice, rank, input_root, path, membership, class_name, label, correct
    mean_maps: dict[int, np.ndarray]  # slice -> [GRID, GRID] mean map of its members, 0..1
    classes: pd.DataFrame  # index: class or label; images, sampled, accuracy, error_slices, slice_accuracy_gap, ...
    meta: dict[str, Any] = field(default_factory=dict)

    def shown(self, compact: bool = True) -> pd.DataFrame:
        """The slices as `cambatch slices` prints them: `compact` for a terminal (the region as text, the first
        member), else every column.
        """
        if not compact:
            return self.table
        table = self.table[["group", "images", "accuracy", "class_accuracy", "accuracy_gap", "predicted", "label"]]
        first = self.members.drop_duplicates("slice").set_index("slice")["path"]
        region = [
            f"x {r.peak_x0:.2f}-{r.peak_x1:.2f}, y {r.peak_y0:.2f}-{r.peak_y1:.2f}" if pd.notna(r.peak_x0) else ""
            for r in self.table.itertuples()
        ]
        return table.assign(peak_region=region, first_member=first.reindex(table.index))

    @property
    def caption(self) -> str:
        m = self.meta
        sampled = f"at most {m['sample_per_class']:,} images a class (sampled)" if m["sampled"] else "every image"
        return (
            f"{m['images']:,} images with an embedding and a label, {m['classes']:,} {self.by}s · PCA to "
            f"{m['pca_components']} dimensions ({m['pca_explained_variance']:.0%} of the variance, on "
            f"{m['pca_images']:,} images) · mixtures over {sampled} · {m['candidates']} slices found, "
            f"{len(self.table)} shown"
        )


def find_slices(out: Path | str, by: SliceBy | None = None, *, slices: int = SLICES, seed: int = 0) -> Slices:
    """The error slices of the run in `out` (see the module's docstring); nothing is written.

    >>> import cambatch
    >>> found = cambatch.find_slices("cams")                    # doctest: +SKIP
    >>> found.table[["group", "images", "accuracy_gap", "predicted"]]  # doctest: +SKIP
    """
    by = by or "label"
    key, other = ("label", "class_name") if by == "label" else ("class_name", "label")
    present = set(report_columns(out))
    if not read_settings(out).get("embeddings"):  # every report has the column; only such a run fills it
        raise UsageError(f"the report in {out} holds no embeddings: rerun it with --embeddings (slices cluster them)")
    where = ds.field("status") == "ok"
    where = where & ds.field(EMBEDDING_COLUMN.name).is_valid() & ds.field("correct").is_valid()
    pca, pca_images = _fit_pca(out, where, seed)
    sample, totals = _class_samples(out, where, key, pca, with_maps="map" in present)
    candidates, classes = [], []
    for group, positions in sample.groups().items():
        rows = sample.rows.iloc[positions].reset_index(drop=True)
        z = sample.arrays["z"][positions]
        found, figures = single_threaded(_class_slices, group, rows, z, totals[group], other, seed)
        candidates += found
        classes.append(figures)
    candidates.sort(key=lambda c: (-c["accuracy_gap"], -c["images"], c["group"]))
    chosen = candidates[:slices]
    mean_maps = {number: c.pop("_mean_map") for number, c in enumerate(chosen, start=1)}
    members = pd.concat(
        [c.pop("_members").assign(slice=number) for number, c in enumerate(chosen, start=1)]
        or [pd.DataFrame(columns=["slice", "rank", *IDENTITY, "membership"])],
        ignore_index=True,
    )
    for c in candidates[slices:]:
        c.pop("_mean_map"), c.pop("_members")
    table = pd.DataFrame(chosen, columns=list(SLICE_COLUMNS), index=pd.RangeIndex(1, len(chosen) + 1, name="slice"))
    meta = {
        "by": by,
        "images": int(sum(t[0] for t in totals.values())),
        "classes": len(totals),
        "sampled": any(n > SAMPLE_PER_CLASS for n, _ in totals.values()),
        "sample_per_class": SAMPLE_PER_CLASS,
        "pca_images": pca_images,
        "pca_components": int(pca.n_components_),
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        "candidates": len(candidates),
        "seed": seed,
    }
    class_table = pd.DataFrame(classes).set_index("group").rename_axis(by).sort_index()
    return Slices(by, table, members[["slice", *members.columns.drop("slice")]], mean_maps, class_table, meta)


def _embeddings(frame: pd.DataFrame) -> np.ndarray:
    return np.stack(frame.pop(EMBEDDING_COLUMN.name).to_numpy()).astype(np.float32)


def _fit_pca(out: Path | str, where: ds.Expression, seed: int):
    """A PCA of the embeddings, fitted on a hashed sample of `PCA_SAMPLE` images; and how many it saw."""
    try:
        from sklearn.decomposition import PCA
    except ImportError:
        raise UsageError("slices need scikit-learn: pip install 'cambatch[bias]'") from None
    sample = GroupSample(PCA_SAMPLE)
    for frame in scan_report(out, columns=[*IDENTITY, EMBEDDING_COLUMN.name], where=where):
        vectors = _embeddings(frame)
        sample.add(frame, np.zeros(len(frame), int), {"embedding": vectors})
    vectors = sample.arrays.get("embedding")
    if vectors is None:
        raise UsageError(
            f"the report in {out} has no labelled image: slices look for images the model gets wrong, which needs "
            "labels (--labels-from-dirs, --from-list with labels, or --annotations)"
        )
    if len(vectors) < 2:
        raise UsageError(f"the report in {out} holds one labelled image: slices need more")
    components = min(PCA_COMPONENTS, vectors.shape[1], len(vectors) - 1)
    return PCA(n_components=components, random_state=seed).fit(vectors), len(vectors)


def _class_samples(
    out: Path | str, where: ds.Expression, key: str, pca, *, with_maps: bool
) -> tuple[GroupSample, dict[str, list[int]]]:
    """Per class: a hashed sample of its images (reduced embeddings, maps), and its [images, correct] counts."""
    columns = [*IDENTITY, "class_name", "label", "correct", EMBEDDING_COLUMN.name]
    columns += list(MAP_NAMES) if with_maps else []
    sample = GroupSample(SAMPLE_PER_CLASS)
    totals: dict[str, list[int]] = {}
    for frame in scan_report(out, columns=columns, where=where):
        reduced = pca.transform(_embeddings(frame)).astype(np.float32)
        groups = frame[key].fillna("").astype(str)
        for group, correct in frame["correct"].astype(bool).groupby(groups.to_numpy()):
            counts = totals.setdefault(group, [0, 0])
            counts[0] += len(correct)
            counts[1] += int(correct.sum())
        sample.add(frame, groups, {"z": reduced})
    return sample, totals


def _class_slices(
    group: str, rows: pd.DataFrame, z: np.ndarray, total: list[int], other: str, seed: int
) -> tuple[list[dict], dict]:
    """The candidate slices of one class (its sampled rows and reduced embeddings) and its figures."""
    images, correct_count = total
    accuracy = correct_count / images
    figures = {
        "group": group,
        "images": images,
        "sampled": len(rows),
        "accuracy": accuracy,
        "error_slices": 0,
        "slice_accuracy_gap": 0.0 if accuracy == 1 else math.nan,
        "slice_images": 0.0,
    }
    if accuracy == 1 or len(rows) < MIN_CLASS_IMAGES:
        return [], figures
    cells, cell_count = _cells(rows[other])
    _, resp = fit_mixture(z.astype(np.float64), cells, cell_count, seed=seed)
    correct = rows["correct"].astype(bool).to_numpy(float)
    size = resp.sum(0)
    slice_accuracy = resp.T @ correct / np.maximum(size, 1e-12)
    found = []
    for j in np.flatnonzero((size >= MIN_SLICE_IMAGES) & (slice_accuracy < accuracy)):
        found.append(_slice(group, rows, resp[:, j], images / len(rows), accuracy, float(slice_accuracy[j])))
    if found:
        best = max(found, key=lambda c: (c["accuracy_gap"], c["images"]))
        figures.update(error_slices=len(found), slice_accuracy_gap=best["accuracy_gap"], slice_images=best["images"])
    else:
        figures["slice_accuracy_gap"] = 0.0
    return found, figures


def _cells(values: pd.Series) -> tuple[np.ndarray, int]:
    """Each image's confusion-matrix cell within its class: the `CELLS` most frequent values, the rest one cell."""
    names = values.fillna(OTHER).astype(str)
    kept = names.value_counts().index[:CELLS]
    names = names.where(names.isin(kept), OTHER)
    codes, uniques = pd.factorize(names)
    return codes.astype(np.int64), len(uniques)


def _slice(
    group: str, rows: pd.DataFrame, membership: np.ndarray, scale: float, class_accuracy: float, accuracy: float
) -> dict:
    """One slice's record: figures, dominant classes, members and mean map (the underscored keys)."""
    order = np.argsort(-membership, kind="stable")
    inside = order[membership[order] >= MIN_MEMBERSHIP]
    members = rows.iloc[inside][[*IDENTITY, "class_name", "label", "correct"]].assign(
        membership=membership[inside], rank=np.arange(1, len(inside) + 1)
    )
    predicted, predicted_share = _dominant(rows["class_name"], membership)
    label, label_share = _dominant(rows["label"], membership)
    mean_map = _mean_map(rows.iloc[inside], membership[inside]) if "map" in rows.columns and len(inside) else None
    peaks = peak_regions(mean_map[None]).iloc[0].to_dict() if mean_map is not None else {}
    return {
        "group": group,
        "images": float(membership.sum() * scale),
        "members": len(inside),
        "accuracy": accuracy,
        "class_accuracy": class_accuracy,
        "accuracy_gap": class_accuracy - accuracy,
        "predicted": predicted,
        "predicted_share": predicted_share,
        "label": label,
        "label_share": label_share,
        **peaks,
        "_members": members.reset_index(drop=True),
        "_mean_map": mean_map,
    }


def _dominant(values: pd.Series, membership: np.ndarray) -> tuple[str | None, float]:
    """The value holding the most membership, and its share of it."""
    weights = pd.Series(membership).groupby(values.astype(object).fillna(OTHER).to_numpy()).sum()
    if weights.empty or weights.sum() <= 0:
        return None, math.nan
    return str(weights.idxmax()), float(weights.max() / weights.sum())


def _mean_map(rows: pd.DataFrame, weights: np.ndarray) -> np.ndarray:
    """The membership-weighted mean of the rows' maps on the common grid (`shortcuts.grid_maps`), 0..1."""
    mapped = rows["map_height"].notna().to_numpy()
    grids = grid_maps(rows[mapped])
    w = weights[mapped]
    return (np.tensordot(w, grids, axes=1) / max(w.sum(), 1e-12)).astype(np.float32)


# ---- OUT/slices/: written by `cambatch slices`, read by the gallery and `check` ----


def write_slices(out: Path | str, found: Slices) -> Path:
    """Keep `found` in `OUT/slices/` (each file written under a temporary name, then renamed); returns the JSON."""
    layout = OutputLayout(out_folder(out))
    layout.slices_dir.mkdir(parents=True, exist_ok=True)
    members = found.members
    record = {
        "meta": found.meta,
        "slices": [
            {
                "slice": int(number),
                **{k: _plain(v) for k, v in row.items()},
                "mean_map": _grid(found.mean_maps.get(number)),
                "top_members": _records(members[members["slice"] == number].head(MEMBERS_SHOWN)),
            }
            for number, row in found.table.iterrows()
        ],
        "classes": _records(found.classes.reset_index()),
    }
    _replace(layout.slice_members_file, lambda temp: members.to_parquet(temp, index=False))
    _replace(layout.slices_file, lambda temp: temp.write_text(json.dumps(record, indent=1), encoding="utf-8"))
    return layout.slices_file


def read_slices(out: Path | str) -> Slices:
    """The slices `cambatch slices` kept in `OUT/slices/` (FileNotFoundError, saying so, when there are none)."""
    layout = OutputLayout(out_folder(out))
    if not layout.slices_file.is_file():
        raise FileNotFoundError(f"no slices in {layout.slices_dir}: run `cambatch slices {out}` first")
    record = json.loads(layout.slices_file.read_text(encoding="utf-8"))
    table = pd.DataFrame(record["slices"], columns=["slice", *SLICE_COLUMNS]).set_index("slice")
    mean_maps = {s["slice"]: np.asarray(s["mean_map"], np.float32) for s in record["slices"] if s["mean_map"]}
    meta = record["meta"]
    classes = pd.DataFrame(record["classes"]).set_index(meta["by"]) if record["classes"] else pd.DataFrame()
    members = pd.read_parquet(layout.slice_members_file)
    return Slices(meta["by"], table, members, mean_maps, classes, meta)


def _replace(target: Path, write) -> None:
    temp = target.with_name(f".{target.name}.tmp")
    write(temp)
    os.replace(temp, target)  # a reader never sees half a file


def _grid(mean_map: np.ndarray | None) -> list | None:
    return None if mean_map is None else np.round(mean_map.astype(float), 3).tolist()


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN and NA to None, floats rounded."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    return round(value, _DIGITS) if isinstance(value, float) else value
