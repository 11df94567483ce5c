"""Class-level map patterns across a run: mean maps, position-locked classes, map clusters (SpRAy). Torch-free.

Everything is computed on demand from the report's maps (`map`, at feature resolution), one map
per image: the image's best-ranked explained class (its top-1 prediction, `report.reader.per_image`),
grouped by predicted class or by label. The maps stream past (`report.scan`) and every figure is a
running sum per group (`GroupMaps`), so memory grows with the groups, never with the images: a
report of a million images takes three passes (sums; the clustering samples; the members of each
cluster).

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
  in the number of images. The sums are kept in each map size's own cells, never on the grid: a grid
  is `unit @ R` for the resampling matrix R of its size, so a group's sum of grids is its sum of unit
  maps times R, and a grid's mean and norm are linear and quadratic forms of its unit map. Flat maps
  (no positive cell) take no part. About 0 for a class whose maps follow an
  object that moves; near 1 - baseline for one that always looks at the same spot (a watermark, a
  stamp, a caption band). A group of at least `Thresholds.min_lock_images` images with a score at
  or above `Thresholds.lock_score` is flagged `fixed-location`.
- **Clusters** (SpRAy, Lapuschkin et al. 2019): per group, spectral clustering of the unit-norm
  grids: a Gaussian affinity of their Euclidean distances with local scaling (Zelnik-Manor & Perona
  2004: `exp(-d_ij^2 / (s_i s_j))`, `s_i` the distance of map i to its 7th nearest neighbour), the
  symmetric normalized Laplacian, and k chosen by the **eigengap**: the k in 1..`MAX_CLUSTERS` with
  the largest gap between the Laplacian's k-th and (k+1)-th smallest eigenvalues. The rows of the
  first k eigenvectors, unit-normalized, are clustered by k-means (scikit-learn). A group larger than
  `SPECTRAL_SAMPLE` images is clustered on an evenly spaced sample (its raw maps are kept as they pass,
  once the group's size is known); the other images join the cluster whose mean grid is nearest.
  Cluster 0 is the largest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation.maps import resize_matrix
from ..render.overlay import unit_maps
from ..report.reader import has_labels, image_key, map_stack, per_image
from ..report.scan import ReportScan
from .options import GroupBy, Thresholds

GRID = 32  # cells per side of the common grid
CELLS = GRID * GRID
MAX_CLUSTERS = 8
SPECTRAL_SAMPLE = 500  # images per group that the affinity matrix is built from
EXAMPLES = 6  # example image paths kept per cluster
MIN_CLUSTER_IMAGES = 4  # smaller groups are one cluster
LOCAL_NEIGHBOUR = 7  # the neighbour whose distance sets a map's affinity width
KMEANS_INITS = 4  # k-means restarts on the spectral embedding (k <= 8 dimensions: they agree)
MIN_SCALE = 1e-2  # floor on that width (maps that are all alike have distance 0)
COLUMNS = ("class_name", "label", "correct", "map", "map_height", "map_width")  # beside `scan.IMAGE_COLUMNS`

# Per-image batches (`ReportScan.images`, or one in-memory frame), streamed anew on each call: one per pass.
Images = Callable[[], Iterable[pd.DataFrame]]


def group_key(by: GroupBy) -> str:
    """The column a grouping reads."""
    return "label" if by == "label" else "class_name"


@dataclass(frozen=True)
class Shortcuts:
    """Per group (class or label): mean maps, position lock and map clusters of a run."""

    by: GroupBy
    classes: pd.DataFrame  # index: group; images, coherence, position_lock, fixed_location, peak_*, clusters
    baseline: float  # mean correlation of pairs of maps from different groups
    mean_maps: dict[str, np.ndarray]  # group -> [GRID, GRID] mean of its normalized maps
    clusters: pd.DataFrame  # one row per group x cluster: group, cluster, images, share, examples
    cluster_maps: dict[tuple[str, int], np.ndarray]  # (group, cluster) -> [GRID, GRID] mean map
    per_image: Callable[[], pd.DataFrame] = field(repr=False, compare=False)

    @cached_property
    def images(self) -> pd.DataFrame:
        """One row per image with a map: input_root, path, group, map_cluster, example (one of its cluster's
        `clusters.examples`); read again on first use: a run's size.
        """
        return self.per_image()


@dataclass(frozen=True, eq=False)  # one per map size (`_resampling` is cached): a key by identity
class _Resampling:
    """Bilinear resampling of h x w unit maps (flattened) to the common grid: `grid = unit @ matrix`."""

    matrix: np.ndarray  # [h * w, CELLS]
    cell_sums: np.ndarray  # [h * w]: `unit @ cell_sums` is the grid's total
    gram: np.ndarray  # [h * w, h * w]: `unit @ gram @ unit` is the grid's squared norm


@cache
def _resampling(height: int, width: int) -> _Resampling:
    matrix = np.kron(resize_matrix(height, GRID), resize_matrix(width, GRID)).T
    return _Resampling(matrix, matrix.sum(axis=1), matrix @ matrix.T)


def _by_size(rows: pd.DataFrame) -> Iterable[tuple[_Resampling, np.ndarray, np.ndarray]]:
    """Per map size among `rows` (with maps): its resampling, the rows' positions, their unit maps [n, h * w]."""
    heights, widths = (rows[c].to_numpy(np.int64, na_value=0) for c in ("map_height", "map_width"))
    keys = heights * (1 << 16) + widths
    for key in np.unique(keys):
        positions = np.flatnonzero(keys == key)
        unit = unit_maps(map_stack(rows.iloc[positions])).reshape(len(positions), -1).astype(np.float64)
        yield _resampling(int(key) >> 16, int(key) & 0xFFFF), positions, unit


def grid_maps(rows: pd.DataFrame, grid: int = GRID) -> np.ndarray:
    """The rows' maps (read with `maps=True`) normalized and resampled to [rows, grid, grid], any mix of sizes."""
    out = np.zeros((len(rows), grid * grid), np.float32)
    for resampling, positions, unit in _by_size(rows):
        matrix = resampling.matrix if grid == GRID else _kron_matrix(rows, positions, grid)
        out[positions] = unit @ matrix
    return out.reshape(len(rows), grid, grid)


def _kron_matrix(rows: pd.DataFrame, positions: np.ndarray, grid: int) -> np.ndarray:
    height, width = int(rows["map_height"].iloc[positions[0]]), int(rows["map_width"].iloc[positions[0]])
    return np.kron(resize_matrix(height, grid), resize_matrix(width, grid)).T


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


def _grown(array: np.ndarray, groups: int) -> np.ndarray:
    """`array` with rows for `groups` groups (new groups start at zero)."""
    return array if len(array) >= groups else np.concatenate([array, np.zeros((groups - len(array), *array.shape[1:]))])


@dataclass
class _Fit:
    """A group's clusters: its sample's positions (in the group's order) and labels, and the cluster centres."""

    positions: np.ndarray  # sorted
    labels: np.ndarray
    centres: np.ndarray  # [k, CELLS], unit-norm grid space

    @cached_property
    def centre_sq(self) -> np.ndarray:
        return (self.centres**2).sum(axis=1)

    def in_map_space(self, resampling: _Resampling) -> np.ndarray:
        """The centres as vectors of a map size's cells: `unit @ result.T` is the grid's dot with each centre."""
        return self.centres @ resampling.matrix.T


class GroupMaps:
    """A run's maps per group, summed as per-image batches stream past; memory grows with the groups only.

    Pass 1: `add` every batch (position lock and mean maps: `patterns`). Clusters: pass 2 `sample` every
    batch, `fit`, pass 3 `assign` every batch (in the same order), then `shortcuts`.
    """

    def __init__(self, key: str, thresholds: Thresholds = Thresholds()):
        self.key, self.thresholds = key, thresholds
        self.codes: dict[str, int] = {}
        self.images = np.zeros(0)  # per group: its images with a map
        self.valid = np.zeros(0)  # ... of which not flat
        self.offset = np.zeros(0)  # sum of mean / norm over the valid: the centring of the sum of z
        self.weighted: dict[_Resampling, np.ndarray] = {}  # per size: sum of unit / norm per group (valid)
        self.plain: dict[_Resampling, np.ndarray] = {}  # per size: sum of unit maps per group
        self.samples: dict[int, list[pd.DataFrame]] = {}
        self.fits: dict[int, _Fit] = {}
        self.seen = np.zeros(0, np.int64)  # per group: images passed in this pass (positions of the next)
        self.members: dict[tuple[int, int], int] = {}  # (group, raw cluster) -> images
        self.member_sums: dict[tuple[int, int, _Resampling], np.ndarray] = {}  # ... their unit maps summed
        self.examples: dict[tuple[int, int], list[tuple[str, str]]] = {}  # ... their first images (input_root, path)

    def _rows(self, images: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """The rows with a map and a group, and their group codes (new groups numbered as they come)."""
        rows = images[images["map_height"].notna() & images[self.key].notna()] if len(images) else images
        names = rows[self.key].astype(str) if len(rows) else pd.Series([], dtype=str)
        for name in names.unique():
            self.codes.setdefault(name, len(self.codes))
        codes = names.map(self.codes).to_numpy(np.int64)
        groups = len(self.codes)
        self.images, self.valid, self.offset = (_grown(a, groups) for a in (self.images, self.valid, self.offset))
        self.seen = _grown(self.seen, groups).astype(np.int64)
        return rows.reset_index(drop=True), codes

    def add(self, images: pd.DataFrame) -> None:
        """Pass 1: a batch's maps into the sums of their groups."""
        rows, codes = self._rows(images)
        groups = len(self.codes)
        self.images += np.bincount(codes, minlength=groups)
        for resampling, positions, unit in _by_size(rows):
            total = unit @ resampling.cell_sums
            square = np.einsum("ij,ij->i", unit @ resampling.gram, unit)
            mean = total / CELLS
            norm = np.sqrt(np.maximum(square - CELLS * mean**2, 0))  # of the centred grid
            valid = norm > 1e-9
            weight = np.where(valid, 1 / np.where(valid, norm, 1), 0)
            group = codes[positions]
            self.valid += np.bincount(group, weights=valid, minlength=groups)
            self.offset += np.bincount(group, weights=weight * mean, minlength=groups)
            for sums, values in ((self.weighted, unit * weight[:, None]), (self.plain, unit)):
                sums[resampling] = _grown(sums.get(resampling, np.zeros((0, unit.shape[1]))), groups)
                sums[resampling] += _group_sums(values, group, groups)

    def patterns(self) -> tuple[pd.DataFrame, float, np.ndarray]:
        """Per group (index: names, sorted): images, coherence, position lock, flag, peak; the baseline; the
        mean maps [groups, GRID, GRID].
        """
        names = sorted(self.codes)
        order = np.array([self.codes[name] for name in names], np.int64)
        z_sums = np.zeros((len(self.codes), CELLS))
        grid_sums = np.zeros((len(self.codes), CELLS))
        for resampling, sums in self.weighted.items():
            z_sums += _grown(sums, len(self.codes)) @ resampling.matrix
            grid_sums += _grown(self.plain[resampling], len(self.codes)) @ resampling.matrix
        z_sums = (z_sums - self.offset[:, None])[order] if len(order) else z_sums
        valid, images = self.valid[order], self.images[order].astype(np.int64)
        means = (grid_sums[order] / np.maximum(images, 1)[:, None]).reshape(-1, GRID, GRID).astype(np.float32)
        baseline = _cross_pair_mean(z_sums.sum(axis=0), z_sums, valid)
        table = pd.DataFrame(
            {"images": images, "coherence": _pair_mean((z_sums**2).sum(axis=1), valid)},
            index=pd.Index(names, name=self.key),
        )
        table["position_lock"] = table["coherence"] - baseline
        table["fixed_location"] = (table["images"] >= self.thresholds.min_lock_images) & (
            table["position_lock"] >= self.thresholds.lock_score
        )
        peaks = peak_regions(means)
        peaks.index = table.index
        return table.join(peaks), baseline, means

    def _positions(self, rows: pd.DataFrame, codes: np.ndarray) -> np.ndarray:
        """Each row's position within its group in this pass (the scan's order)."""
        within = pd.Series(codes).groupby(codes).cumcount().to_numpy() if len(codes) else codes
        positions = self.seen[codes] + within
        self.seen += np.bincount(codes, minlength=len(self.seen))
        return positions

    def sample(self, images: pd.DataFrame) -> None:
        """Pass 2: keep the raw maps of each group's evenly spaced sample (its size is known from pass 1)."""
        rows, codes = self._rows(images)
        positions = self._positions(rows, codes)
        for code in np.unique(codes):
            here = codes == code
            chosen = here & np.isin(positions, sample_positions(int(self.images[code])))
            if chosen.any():
                self.samples.setdefault(int(code), []).append(rows.loc[chosen, ["map", "map_height", "map_width"]])

    def fit(self) -> None:
        """Cluster each group's sample (spectral, k by the eigengap)."""
        for code, parts in self.samples.items():
            sample = pd.concat(parts, ignore_index=True)
            flat = _unit_rows(grid_maps(sample).reshape(len(sample), -1).astype(np.float64))
            labels = single_threaded(_fit_labels, flat, MAX_CLUSTERS)
            centres = np.stack([flat[labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)])
            self.fits[code] = _Fit(sample_positions(int(self.images[code])), labels, centres)
        self.samples.clear()
        self.seen[:] = 0

    def labels(self, images: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """The batch's rows with a map and a group, their codes and raw cluster labels (the sampled images keep
        their spectral label, the others join the nearest centre); call in the order of pass 2.
        """
        rows, codes = self._rows(images)
        positions = self._positions(rows, codes)
        labels = np.zeros(len(rows), np.int64)
        for resampling, at, unit in _by_size(rows):
            norms = np.sqrt(np.maximum(np.einsum("ij,ij->i", unit @ resampling.gram, unit), 1e-24))
            for code in np.unique(codes[at]):
                fit, mine = self.fits.get(int(code)), codes[at] == code
                if fit is None:
                    continue
                if len(fit.positions) == self.images[code]:  # the whole group was clustered
                    labels[at[mine]] = fit.labels[positions[at[mine]]]
                else:
                    dots = (unit[mine] @ fit.in_map_space(resampling).T) / norms[mine, None]
                    labels[at[mine]] = _nearest(dots, fit.centre_sq)
        return rows, codes, labels

    def assign(self, images: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Pass 3: `labels`, and each cluster's members counted, summed and their first images kept."""
        rows, codes, labels = self.labels(images)
        for resampling, at, unit in _by_size(rows):
            keys = codes[at] * (MAX_CLUSTERS + 1) + labels[at]
            for key in np.unique(keys):
                mine = keys == key
                member = _member(key)
                self.members[member] = self.members.get(member, 0) + int(mine.sum())
                total = self.member_sums.get((*member, resampling), 0)
                self.member_sums[(*member, resampling)] = total + unit[mine].sum(axis=0)
        keys = codes * (MAX_CLUSTERS + 1) + labels
        identities = _identities(rows)
        for key in np.unique(keys):  # the examples: each cluster's first images, in the scan's order
            kept = self.examples.setdefault(_member(key), [])
            if len(kept) < EXAMPLES:
                kept.extend(identities[i] for i in np.flatnonzero(keys == key)[: EXAMPLES - len(kept)])
        return rows, codes, labels

    def renumbering(self) -> dict[int, np.ndarray]:
        """Per group: raw cluster label -> its number, consecutive and largest first (-1: a label with no image)."""
        found = {}
        for code in range(len(self.codes)):
            sizes = np.array([self.members.get((code, label), 0) for label in range(MAX_CLUSTERS + 1)])
            used = np.flatnonzero(sizes)
            by_size = used[np.argsort(-sizes[used], kind="stable")]
            mapping = np.full(MAX_CLUSTERS + 1, -1)
            mapping[by_size] = np.arange(len(by_size))
            found[code] = mapping
        return found

    def shortcuts(self, by: GroupBy, per_image: Callable[[], pd.DataFrame]) -> Shortcuts:
        """What the three passes found (`per_image` gives the per-image table on request)."""
        table, baseline, means = self.patterns()
        numbers = self.renumbering()
        rows, maps = [], {}
        for name in table.index:
            code = self.codes[name]
            for raw in np.argsort(numbers[code]):
                number = int(numbers[code][raw])
                if number < 0:
                    continue
                n = self.members[(code, int(raw))]
                grid = sum(
                    sums @ resampling.matrix
                    for (c, label, resampling), sums in self.member_sums.items()
                    if (c, label) == (code, raw)
                )
                maps[(name, number)] = (grid / n).reshape(GRID, GRID).astype(np.float32)
                examples = [path for _, path in self.examples[(code, int(raw))]]
                rows.append({"group": name, "cluster": number, "images": n, "share": n / table.loc[name, "images"]})
                rows[-1]["examples"] = examples
        table["clusters"] = [int(numbers[self.codes[name]].max()) + 1 for name in table.index]
        return Shortcuts(
            by=by,
            classes=table,
            baseline=baseline,
            mean_maps={name: means[i] for i, name in enumerate(table.index)},
            clusters=pd.DataFrame(rows, columns=["group", "cluster", "images", "share", "examples"]),
            cluster_maps=maps,
            per_image=per_image,
        )

    def per_image_table(self, read: Images) -> pd.DataFrame:
        """One row per image with a map: input_root, path, group, map_cluster, example (another pass, in the
        order of pass 2).
        """
        numbers = self.renumbering()
        examples = {(code, image) for (code, _), images in self.examples.items() for image in images}
        self.seen[:] = 0
        frames = []
        for images in read():
            mapped = images[images["map_height"].notna()].reset_index(drop=True)
            rows, codes, labels = self.labels(mapped)
            cluster = pd.array([pd.NA] * len(mapped), dtype="Int64")
            grouped = mapped[self.key].notna().to_numpy()
            cluster[grouped] = [int(numbers[c][label]) for c, label in zip(codes, labels, strict=True)]
            group = mapped[self.key].astype(object).where(grouped, None).map(lambda g: None if g is None else str(g))
            example = np.zeros(len(mapped), bool)
            example[grouped] = [(c, image) in examples for c, image in zip(codes, _identities(rows), strict=True)]
            keyed = {column: mapped[column].astype(str) for column in image_key(mapped)}
            frames.append(pd.DataFrame({**keyed, "group": group, "map_cluster": cluster, "example": example}))
        if frames:
            return pd.concat(frames, ignore_index=True)
        return pd.DataFrame(
            {"input_root": [], "path": [], "group": [], "map_cluster": pd.array([], dtype="Int64"), "example": []}
        )


def _member(key) -> tuple[int, int]:
    """(group code, raw cluster) of a combined key `code * (MAX_CLUSTERS + 1) + label`."""
    return int(key) // (MAX_CLUSTERS + 1), int(key) % (MAX_CLUSTERS + 1)


def _identities(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """Each row's image (input_root, path) as text (`input_root` empty in a frame without it)."""
    roots = rows["input_root"].astype(str) if "input_root" in rows.columns else [""] * len(rows)
    return list(zip(roots, rows["path"].astype(str), strict=True))


def sample_positions(n: int, sample: int = SPECTRAL_SAMPLE) -> np.ndarray:
    """The positions of a group's evenly spaced sample (all of a group of at most `sample`)."""
    return np.unique(np.linspace(0, n - 1, min(n, sample)).round().astype(np.int64)) if n else np.zeros(0, np.int64)


def _unit_rows(flat: np.ndarray) -> np.ndarray:
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def _nearest(dots: np.ndarray, centre_sq: np.ndarray) -> np.ndarray:
    """The nearest centre of unit rows, from their dots with the centres: |x - c|^2 = |c|^2 - 2 x.c + 1."""
    return (centre_sq[None] - 2 * dots).argmin(axis=1)


def _fit_labels(flat: np.ndarray, max_clusters: int) -> np.ndarray:
    """Spectral labels of unit rows; a group too small to split is one cluster."""
    return np.zeros(len(flat), np.int64) if len(flat) < MIN_CLUSTER_IMAGES else _spectral(flat, max_clusters)


def cluster_maps(grids: np.ndarray, *, max_clusters: int = MAX_CLUSTERS, sample: int = SPECTRAL_SAMPLE) -> np.ndarray:
    """Spectral clusters of one group's grids [n, GRID, GRID] in memory, k by the eigengap; cluster 0 the largest."""
    n = len(grids)
    flat = _unit_rows(grids.reshape(n, -1).astype(np.float64))
    chosen = sample_positions(n, sample)
    labels = _fit_labels(flat[chosen], max_clusters)
    if len(chosen) < n:
        # The rest join their nearest cluster mean: no n x n matrix, no n x k x cells array either.
        centres = np.stack([flat[chosen][labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)])
        labels = _nearest(flat @ centres.T, (centres**2).sum(axis=1))
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


def class_patterns(
    images: pd.DataFrame, key: str, thresholds: Thresholds = Thresholds()
) -> tuple[pd.DataFrame, float, np.ndarray]:
    """`GroupMaps.patterns` of one frame of images (one row per image, with maps)."""
    maps = GroupMaps(key, thresholds)
    maps.add(images)
    return maps.patterns()


def find_in(read: Images, by: GroupBy, thresholds: Thresholds = Thresholds()) -> Shortcuts:
    """Mean maps, position lock and clusters of the per-image batches `read()` streams (three passes)."""
    maps = GroupMaps(group_key(by), thresholds)
    for images in read():
        maps.add(images)
    for images in read():
        maps.sample(images)
    maps.fit()
    for images in read():
        maps.assign(images)
    return maps.shortcuts(by, lambda: maps.per_image_table(read))


def find_shortcuts(df: pd.DataFrame, by: GroupBy | None = None, thresholds: Thresholds = Thresholds()) -> Shortcuts:
    """Mean maps, position lock and map clusters per predicted class (or label) of a report read with maps.

    `df` comes from `load_report(out, maps=True)`; `by=None` groups by label when the run has labels.

    >>> import cambatch
    >>> found = cambatch.find_shortcuts(cambatch.load_report("cams", maps=True))  # doctest: +SKIP
    >>> found.classes[found.classes.fixed_location]                               # doctest: +SKIP
    """
    images = per_image(df)
    return find_in(lambda: [images], by or ("label" if has_labels(df) else "class"), thresholds)


def shortcuts_run(out: Path | str, by: GroupBy | None = None, thresholds: Thresholds = Thresholds()) -> Shortcuts:
    """`find_shortcuts` on the report in `out`, streamed: memory grows with the groups, not the images."""
    scan = ReportScan(out)
    return find_in(lambda: scan.images(COLUMNS), by or ("label" if scan.labelled else "class"), thresholds)
