"""Class-level map patterns across a run: mean maps, position-locked classes, map clusters (SpRAy). Torch-free.

Everything is computed on demand from the report's maps (`map`, at feature resolution), one map
per image: the image's best-ranked explained class (its top-1 prediction, `report.reader.per_image`),
grouped by predicted class or by label.

- **Common grid.** Each map is ReLU'd and min-max normalized as the overlays show it, then resampled
  bilinearly to `GRID` x `GRID` cells of the displayed image (the map covers the whole image: no crop),
  so maps of any feature size and photos of any aspect ratio are comparable.
- **Mean map** of a group: the mean of its images' grids; its peak is the cell of the maximum, its
  peak region the box of the cells at or above half that maximum (fractions of the displayed image).
- **Position lock** of a group: its *coherence*, the mean Pearson correlation over all pairs of its
  images' grids (how much its maps sit at the same place in every image), minus the run's
  *baseline*, the mean correlation over all pairs of images of different groups (how much any two
  maps of this run agree anyway, e.g. a centre bias; pairs within a group are left out so that a
  large locked class does not raise its own bar). Both are exact means over all pairs, from sums of
  the standardized, unit-norm grids `z` (`(|sum z|^2 - n) / (n (n - 1))` within a group): linear
  in the number of images. Flat maps (no positive cell) take no part. About 0 for a class whose maps follow an
  object that moves; near 1 - baseline for one that always looks at the same spot (a watermark, a
  stamp, a caption band). A group of at least `Thresholds.min_lock_images` images with a score at
  or above `Thresholds.lock_score` is flagged `fixed-location`.
- **Clusters** (SpRAy, Lapuschkin et al. 2019): per group, spectral clustering of the unit-norm
  grids: a Gaussian affinity of their Euclidean distances with local scaling (Zelnik-Manor & Perona
  2004: `exp(-d_ij^2 / (s_i s_j))`, `s_i` the distance of map i to its 7th nearest neighbour), the
  symmetric normalized Laplacian, and k chosen by the **eigengap**: the k in 1..`MAX_CLUSTERS` with
  the largest gap between the Laplacian's k-th and (k+1)-th smallest eigenvalues. The rows of the
  first k eigenvectors, unit-normalized, are clustered by k-means (scikit-learn). A group larger than
  `SPECTRAL_SAMPLE` images is clustered on an evenly spaced sample; the other images join the cluster
  whose mean grid is nearest. Cluster 0 is the largest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation.maps import resize_matrix
from ..render.overlay import unit_maps
from ..report.reader import has_labels, image_key, load_report, map_stack, per_image, report_columns
from .options import GroupBy, Thresholds

GRID = 32  # cells per side of the common grid
MAX_CLUSTERS = 8
SPECTRAL_SAMPLE = 500  # images per group that the affinity matrix is built from
EXAMPLES = 6  # example image paths kept per cluster
MIN_CLUSTER_IMAGES = 4  # smaller groups are one cluster
LOCAL_NEIGHBOUR = 7  # the neighbour whose distance sets a map's affinity width
KMEANS_INITS = 4  # k-means restarts on the spectral embedding (k <= 8 dimensions: they agree)
MIN_SCALE = 1e-2  # floor on that width (maps that are all alike have distance 0)
COLUMNS = ("input_root", "path", "rank", "class_name", "status", "run_id", "label", "correct")
COLUMNS += ("map", "map_height", "map_width")


@dataclass(frozen=True)
class Shortcuts:
    """Per group (class or label): mean maps, position lock and map clusters of a run."""

    by: GroupBy
    classes: pd.DataFrame  # index: group; images, coherence, position_lock, fixed_location, peak_*, clusters
    baseline: float  # mean correlation of pairs of maps from different groups
    mean_maps: dict[str, np.ndarray]  # group -> [GRID, GRID] mean of its normalized maps
    images: pd.DataFrame  # one row per image: input_root, path, group, map_cluster, example (in `clusters.examples`)
    clusters: pd.DataFrame  # one row per group x cluster: group, cluster, images, share, examples
    cluster_maps: dict[tuple[str, int], np.ndarray]  # (group, cluster) -> [GRID, GRID] mean map


def grid_maps(rows: pd.DataFrame, grid: int = GRID) -> np.ndarray:
    """The rows' maps (read with `maps=True`) normalized and resampled to [rows, grid, grid], any mix of sizes."""
    out = np.zeros((len(rows), grid, grid), np.float32)
    sizes = pd.Series(list(zip(rows["map_height"], rows["map_width"], strict=True)), dtype=object)
    for (height, width), positions in sizes.groupby(sizes).indices.items():
        unit = unit_maps(map_stack(rows.iloc[positions]))
        # Separable, as two matrix products over the whole stack (columns, then rows).
        rows_matrix, cols_matrix = (resize_matrix(int(n), grid).astype(np.float32) for n in (height, width))
        out[positions] = rows_matrix @ (unit @ cols_matrix.T)
    return out


def _group_sums(values: np.ndarray, codes: np.ndarray, groups: int) -> np.ndarray:
    """Sum of `values` [n, d] per group code (sorted once, then one `reduceat`: no per-row loop)."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sums = np.zeros((groups, values.shape[1]), np.float64)
    if len(order):
        sums[sorted_codes[starts]] = np.add.reduceat(values[order].astype(np.float64), starts, axis=0)
    return sums


def _pair_mean(total_sq: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Mean dot product over all pairs of n unit vectors, from the squared norm of their sum."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, (total_sq - n) / (n * (n - 1.0)), np.nan)


def _cross_pair_mean(total: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> float:
    """Mean dot product over all pairs of vectors from different groups: (|sum|^2 - sum_g |S_g|^2) / pairs."""
    pairs = counts.sum() ** 2 - (counts**2).sum()
    return float(((total**2).sum() - (sums**2).sum()) / pairs) if pairs > 0 else float("nan")


def _standardized(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean, unit-norm rows (so a dot product is a Pearson correlation); flat maps -> 0 and False."""
    centred = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    valid = norm[:, 0] > 1e-9
    return np.where(valid[:, None], centred / np.maximum(norm, 1e-12), 0), valid


def peak_regions(means: np.ndarray) -> pd.DataFrame:
    """Peak cell and the box of the cells >= half the maximum, per mean map [g, grid, grid], as fractions."""
    g, grid, _ = means.shape
    flat = means.reshape(g, grid * grid)
    peak = flat.argmax(axis=1)
    hot = means >= 0.5 * flat.max(axis=1)[:, None, None]
    rows_hot, cols_hot = hot.any(axis=2), hot.any(axis=1)
    cells = np.arange(grid)
    first = lambda mask: np.where(mask, cells, grid).min(axis=1)  # noqa: E731 - two one-line helpers
    last = lambda mask: np.where(mask, cells, -1).max(axis=1)  # noqa: E731
    return pd.DataFrame(
        {
            "peak_x": (peak % grid + 0.5) / grid,
            "peak_y": (peak // grid + 0.5) / grid,
            "peak_x0": first(cols_hot) / grid,
            "peak_y0": first(rows_hot) / grid,
            "peak_x1": (last(cols_hot) + 1) / grid,
            "peak_y1": (last(rows_hot) + 1) / grid,
        }
    )


def class_patterns(
    images: pd.DataFrame, key: str, thresholds: Thresholds = Thresholds()
) -> tuple[pd.DataFrame, float, np.ndarray, np.ndarray, np.ndarray]:
    """Per group of `images` (one row per image, with maps): images, coherence, position lock, flag, peak.

    Returns the table (index: group names), the run's baseline, the grids [n, GRID, GRID] of the
    images, each image's group code (-1 when it has no group) and the mean maps [groups, GRID, GRID].
    """
    grids = grid_maps(images)
    names = images[key].astype(object)
    codes_index, uniques = pd.factorize(names, sort=True)
    codes = np.asarray(codes_index)
    z, valid = _standardized(grids.reshape(len(grids), GRID * GRID))
    keep = valid & (codes >= 0)
    groups = len(uniques)
    counts = np.bincount(codes[keep], minlength=groups).astype(float)
    sums = _group_sums(z[keep], codes[keep], groups)
    coherence = _pair_mean((sums**2).sum(axis=1), counts)
    baseline = _cross_pair_mean(z[keep].sum(axis=0), sums, counts)
    grouped = codes >= 0
    means = _group_sums(grids[grouped].reshape(int(grouped.sum()), GRID * GRID), codes[grouped], groups)
    means /= np.maximum(np.bincount(codes[grouped], minlength=groups), 1)[:, None]
    table = pd.DataFrame(
        {"images": np.bincount(codes[grouped], minlength=groups), "coherence": coherence},
        index=pd.Index([str(u) for u in uniques], name=key),
    )
    table["position_lock"] = table["coherence"] - baseline
    table["fixed_location"] = (table["images"] >= thresholds.min_lock_images) & (
        table["position_lock"] >= thresholds.lock_score
    )
    peaks = peak_regions(means.reshape(groups, GRID, GRID).astype(np.float32))
    peaks.index = table.index
    return table.join(peaks), baseline, grids, codes, means.reshape(groups, GRID, GRID).astype(np.float32)


def cluster_maps(grids: np.ndarray, *, max_clusters: int = MAX_CLUSTERS, sample: int = SPECTRAL_SAMPLE) -> np.ndarray:
    """Spectral clusters of one group's grids [n, GRID, GRID], k by the eigengap; cluster 0 the largest."""
    n = len(grids)
    if n < MIN_CLUSTER_IMAGES:
        return np.zeros(n, np.int64)
    flat = grids.reshape(n, -1).astype(np.float64)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    chosen = np.unique(np.linspace(0, n - 1, min(n, sample)).round().astype(int))
    labels = _spectral(flat[chosen], max_clusters)
    if len(chosen) < n:
        # The rest join their nearest cluster mean (by |x - c|^2 = |c|^2 - 2 x.c + const): no n x n matrix,
        # no n x k x cells array either.
        centres = np.stack([flat[chosen][labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)])
        labels = ((centres**2).sum(axis=1)[None] - 2 * flat @ centres.T).argmin(axis=1)
    # Consecutive numbers (a cluster can lose every image to its neighbours), largest first.
    _, labels = np.unique(labels, return_inverse=True)
    by_size = np.argsort(-np.bincount(labels), kind="stable")
    return np.argsort(by_size)[labels].astype(np.int64)


def _spectral(flat: np.ndarray, max_clusters: int) -> np.ndarray:
    """Ng-Jordan-Weiss spectral clustering of unit rows, k by the eigengap of the normalized Laplacian."""
    import scipy.linalg  # scikit-learn's own dependency
    from sklearn.cluster import KMeans  # here: summarize and mean maps work without scikit-learn

    distance = np.sqrt(np.maximum(2 - 2 * (flat @ flat.T), 0))
    # Local scaling (Zelnik-Manor & Perona 2004): each map's width is its distance to its m-th nearest
    # neighbour, so a tight group (a stamp: maps all alike) and a loose one (an object that moves)
    # both form their own blocks instead of one dense, wide kernel merging everything.
    m = min(LOCAL_NEIGHBOUR, len(flat) - 1)
    scale = np.maximum(np.sort(distance, axis=1)[:, m], MIN_SCALE)
    affinity = np.exp(-(distance**2) / np.outer(scale, scale))
    degree = affinity.sum(axis=1)
    normalized = affinity / np.sqrt(np.outer(degree, degree))
    top = min(max_clusters, len(flat) - 1)
    # Only the top + 1 largest eigenpairs (the Laplacian's smallest, 1 - these): LAPACK computes just those.
    eigenvalues, eigenvectors = scipy.linalg.eigh(normalized, subset_by_index=[len(flat) - top - 1, len(flat) - 1])
    laplacian = 1 - eigenvalues[::-1]
    k = int(np.argmax(np.diff(laplacian))) + 1
    if k == 1:
        return np.zeros(len(flat), np.int64)
    embedding = eigenvectors[:, ::-1][:, :k]
    embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=k, n_init=KMEANS_INITS, random_state=0).fit_predict(embedding).astype(np.int64)


def single_threaded(function, *args):
    """Run `function` with BLAS and OpenMP on one thread: on matrices this small (500 x 500, k-means in
    k <= 8 dimensions), threads cost more in start-up and spinning than they save, above all on a
    shared machine; threadpoolctl comes with scikit-learn.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return function(*args)
    with threadpool_limits(1):
        return function(*args)


def find_shortcuts(df: pd.DataFrame, by: GroupBy | None = None, thresholds: Thresholds = Thresholds()) -> Shortcuts:
    """Mean maps, position lock and map clusters per predicted class (or label) of a report read with maps.

    `df` comes from `load_report(out, maps=True)`; `by=None` groups by label when the run has labels.

    >>> import cambatch
    >>> found = cambatch.find_shortcuts(cambatch.load_report("cams", maps=True))  # doctest: +SKIP
    >>> found.classes[found.classes.fixed_location]                               # doctest: +SKIP
    """
    by = by or ("label" if has_labels(df) else "class")
    key = "label" if by == "label" else "class_name"
    images = per_image(df)
    images = images[images["map_height"].notna()].reset_index(drop=True)
    table, baseline, grids, codes, means = class_patterns(images, key, thresholds)
    names = list(table.index)
    cluster = np.full(len(images), -1, np.int64)
    example = np.zeros(len(images), bool)
    cluster_rows, cluster_means = [], {}
    for code, name in enumerate(names):
        members = np.flatnonzero(codes == code)
        labels = single_threaded(cluster_maps, grids[members])
        cluster[members] = labels
        for c in range(int(labels.max()) + 1 if len(labels) else 0):
            inside = members[labels == c]
            cluster_means[(name, c)] = grids[inside].mean(axis=0)
            example[inside[:EXAMPLES]] = True
            cluster_rows.append(
                {
                    "group": name,
                    "cluster": c,
                    "images": len(inside),
                    "share": len(inside) / len(members),
                    "examples": images["path"].iloc[inside[:EXAMPLES]].astype(str).tolist(),
                }
            )
    table["clusters"] = [int(cluster[codes == i].max()) + 1 for i in range(len(names))]
    per_image_table = pd.DataFrame(
        {
            **{column: images[column].astype(str) for column in image_key(images)},
            "group": [names[c] if c >= 0 else None for c in codes],
            "map_cluster": pd.array(np.where(codes >= 0, cluster, -1), dtype="Int64"),
            "example": example,
        }
    )
    per_image_table.loc[codes < 0, "map_cluster"] = pd.NA
    return Shortcuts(
        by=by,
        classes=table,
        baseline=baseline,
        mean_maps={name: means[i] for i, name in enumerate(names)},
        images=per_image_table,
        clusters=pd.DataFrame(cluster_rows, columns=["group", "cluster", "images", "share", "examples"]),
        cluster_maps=cluster_means,
    )


def shortcuts_run(out: Path | str, by: GroupBy | None = None, thresholds: Thresholds = Thresholds()) -> Shortcuts:
    """`find_shortcuts` on the report in `out`, reading only the columns it needs (maps included)."""
    present = set(report_columns(out))
    return find_shortcuts(load_report(out, columns=[c for c in COLUMNS if c in present]), by, thresholds)
