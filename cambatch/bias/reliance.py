"""`cambatch reliance OUT`: does a class's prediction depend on the place its maps point to? Runs the network.

A class whose mean map sits in one corner (`summarize`'s `fixed-location`) may be predicted from a
stamp there, or its objects may simply tend to sit there. Occlusion tells the two apart: for each
class (its images are those it is the top-1 prediction of; by default every class with at least
`RelianceOptions.min_images`), in each of a sample of its images (`images_per_class`, a hashed
sample as in `cambatch.bias.sampling`):

- the class's **region** (`cambatch.bias.regions`: where its mean map peaks) is occluded, and the
  class's probability read again: `reliance_drop` is the mean relative drop,
  max(0, p - p_occluded) / p (`methods.faithfulness.confidence_drop`). The images are split in two
  halves by their hash, and each half is occluded at the region of the *other* half's mean map: a
  region chosen where the measured images' own objects happen to pile up would beat any control by
  chance (sample splitting, as in cross-fitting);
- boxes of the same size at `CONTROLS` random places off the region (seeded) are occluded instead:
  `control_drop`, the mean drop a hole of that size causes elsewhere;
- `reliance_ratio` = reliance_drop / max(control_drop, `CONTROL_FLOOR`), and `reliance_z`, the mean
  of the paired differences (region drop less control drop, image by image) over its standard
  error. The class is flagged **`relies-on-place`** when the ratio is at least `ratio` (2), the drop
  at least `min_drop` (0.1) and z at least `min_z` (3: over a thousand classes, z >= 2 would flag
  some twenty by chance). A stamp-driven class scores far above; a class whose object moves around
  scores about 1 (its mean map's peak is no better a place to hide than any other).
- With ground truth in the report (a run with `--annotations`: `gt_box_coords`), each annotated
  image's own map's hottest box of the same size that overlaps no ground-truth box is occluded too:
  `off_object_drop`, its ratio and z against the same images' controls (`off_object_ratio`,
  `off_object_z`), and the flag **`relies-off-object`** on the same thresholds: the causal side of
  `summarize`'s `off-object`.

The occluder (`cambatch.bias.occlusion.blur_fill`) is one function; another can be passed. The model
and its preprocessing are rebuilt from what the run recorded (`RunSettings`: model, weights and
their SHA-256, input size, interpolation, mean and std); images are read again from `input_root` +
`path` (local files; an image inside a tar or Parquet file, or on a store, is skipped and counted).
The rebuilt model must reproduce the report's probabilities (median difference below
`REBUILD_TOLERANCE`), or the command refuses. Forward passes are batched: each batch of
`batch_size` images goes through the network once, with all its occluded copies.
"""

from __future__ import annotations

import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import torch

from ..data.inputs import Preprocess, prepare
from ..errors import UsageError
from ..inspection.shortcuts import GRID, grid_maps
from ..methods.base import probabilities
from ..methods.faithfulness import confidence_drop
from ..model.accel import Execution, prepare_network
from ..model.build import CamModel, load_model
from ..model.checkpoints import sha256_of
from ..report.parts import read_settings
from ..report.reader import report_columns, scan_report
from ..report.schema import GT_BOX_COLUMN, MAP_NAMES, name_key
from ..runner.engine import resolve_device
from .occlusion import Occluder, blur_fill, box_masks
from .options import RelianceOptions
from .regions import class_region, control_boxes, off_object_boxes, truth_cells
from .sampling import IDENTITY, GroupSample, image_keys

CONTROLS = 4  # random control places per image: their mean drop is the image's control drop
CONTROL_FLOOR = 0.01  # a control drop below this counts as this in the ratios
REBUILD_TOLERANCE = 0.05  # median |p - the report's probability| the rebuilt model may differ by
DECODE_THREADS = 4
BOX = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class Reliance:
    """Per class and per image: the drops of the class's probability when its region, a control box and (with
    ground truth) the hottest box off the object are occluded.
    """

    classes: pd.DataFrame  # index: class; see `reliance_run`
    images: pd.DataFrame  # one row per occluded image
    meta: dict[str, Any] = field(default_factory=dict)

    def shown(self, compact: bool = True) -> pd.DataFrame:
        """The classes as `cambatch reliance` prints them: `compact` for a terminal, else every column."""
        if not compact:
            return self.classes
        wanted = ["images", "reliance_drop", "control_drop", "reliance_ratio"]
        wanted += ["off_object_drop", "off_object_ratio", "flags"]
        return self.classes[[c for c in wanted if c in self.classes.columns]]

    @property
    def caption(self) -> str:
        m = self.meta
        skipped = f" · {m['skipped']:,} images not readable here, skipped" if m["skipped"] else ""
        return (
            f"{m['images']:,} images of {m['classes']} classes (at most {m['images_per_class']} a class), occluded "
            f"by {m['occluder']} at the class's region, at {CONTROLS} random places off it and off the object · "
            f"flags at a ratio >= {m['ratio']:g} with a drop >= {m['min_drop']:g} and z >= {m['min_z']:g}{skipped}"
        )


def reliance_run(
    out: Path | str,
    classes: list[str] | None = None,
    *,
    options: RelianceOptions = RelianceOptions(),
    device: str,
    occluder: Occluder = blur_fill,
) -> Reliance:
    """Occlude each class's region, a control box and the hottest box off the object (see the module's docstring).

    Columns of `classes`: `images` (occluded), `reliance_drop`, `control_drop`, `reliance_ratio`,
    `reliance_z`, `relies_on_place`, the region of the class's whole mean map `region_x0`,
    `region_y0`, `region_x1`, `region_y1` (fractions); with ground truth `annotated`,
    `off_object_drop`, `off_object_ratio`, `off_object_z`, `relies_off_object`; and `flags` (text).
    `images` holds one row per image: its boxes (the region it was occluded at, off its object),
    probabilities (`p`, `p_region`, `p_control`: the controls' mean, `p_off_object`) and drops.
    `device` as `cambatch run --device`.

    >>> import cambatch
    >>> found = cambatch.reliance_run("cams", device="cpu")  # doctest: +SKIP
    >>> found.classes[found.classes.relies_on_place]         # doctest: +SKIP
    """
    settings = read_settings(out)
    present = set(report_columns(out))
    model = rebuild_model(settings)
    plan = _plan(out, present, classes, options)
    torch_device = resolve_device(device)
    prepare_network(model.network, torch_device)
    measure = _Measure(
        model=model,
        settings=settings,
        device=torch_device,
        execution=Execution(device_type=torch_device.type, precision="fp32", compile=False),
        occluder=occluder,
        batch_size=options.batch_size,
    )
    rows = [measure.class_images(name, regions, images, options.seed) for name, (regions, images) in plan.items()]
    images = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    table = _class_table(images, plan, options)
    meta = {
        "model": settings.get("model"),
        "run_id": settings.get("run_id"),
        "classes": len(table),
        "images": int(len(images)),
        "skipped": measure.skipped,
        "images_per_class": options.images_per_class,
        "ratio": options.ratio,
        "min_drop": options.min_drop,
        "min_z": options.min_z,
        "controls": CONTROLS,
        "control_floor": CONTROL_FLOOR,
        "seed": options.seed,
        "occluder": getattr(occluder, "__name__", type(occluder).__name__),
        "probability_difference": measure.median_difference(),
    }
    return Reliance(table, images, meta)


def rebuild_model(settings: dict[str, Any]) -> CamModel:
    """The run's model, rebuilt from its recorded settings; `UsageError` (one line) when it cannot be."""
    weights = settings.get("weights")
    if not settings.get("model") or weights is None:
        raise UsageError("the report records no model to rebuild (written by an older cambatch?)")
    if weights == "none":
        raise UsageError(
            "the run used random weights (--weights none), which cannot be rebuilt: rerun it with saved weights"
        )
    if weights != "pretrained":
        recorded = settings.get("weights_sha256")
        if Path(weights).is_file() and recorded and sha256_of(Path(weights)) != recorded:
            raise UsageError(f"{weights} changed since the run (its SHA-256 differs): the model cannot be rebuilt")
    options = settings.get("options") or {}
    return load_model(
        settings["model"],
        None if weights == "pretrained" else weights,
        num_classes=options.get("num_classes"),
        image_size=settings.get("input_size"),
        trust_checkpoint=bool(options.get("trust_checkpoint")),
        require_cam_head=False,
    )


def _plan(
    out: Path | str, present: set[str], classes: list[str] | None, options: RelianceOptions
) -> dict[str, tuple[np.ndarray, pd.DataFrame]]:
    """Per class measured: its regions (`_regions`) and a hashed sample of its images, each with its `half`."""
    columns = [*IDENTITY, "class_index", "class_name", "probability", "width", "height", *MAP_NAMES]
    columns += [GT_BOX_COLUMN.name] if GT_BOX_COLUMN.name in present else []
    where = (ds.field("status") == "ok") & (ds.field("rank") == 1) & ds.field("map").is_valid()
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    sample = GroupSample(options.images_per_class)
    for frame in scan_report(out, columns=columns, where=where):
        frame["half"] = (image_keys(frame) & np.uint64(1)).astype(np.int64)  # the hash's last bit: a fair coin
        names = frame["class_name"].astype(str)
        grids = grid_maps(frame)
        for (name, half), positions in frame.groupby([names, frame["half"]]).indices.items():
            sums.setdefault(name, np.zeros((2, GRID, GRID)))[half] += grids[positions].sum(0)
            counts.setdefault(name, np.zeros(2, int))[half] += len(positions)
        sample.add(frame, names)
    if not counts:
        raise UsageError(f"the report in {out} holds no top-1 row with a map")
    chosen = _chosen_classes(classes, {name: int(c.sum()) for name, c in counts.items()}, options.min_images)
    groups = sample.groups()
    return {name: (_regions(sums[name], counts[name]), sample.rows.iloc[groups[name]]) for name in chosen}


def _regions(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[3, 4]: the region of the class's mean map, then of each half's mean map (a half without images: the
    class's). An image of one half is occluded at the other half's region (`_Measure.class_images`).
    """
    whole = class_region(sums.sum(0) / counts.sum())
    return np.stack([whole, *(class_region(sums[h] / counts[h]) if counts[h] else whole for h in (0, 1))])


def _chosen_classes(classes: list[str] | None, counts: dict[str, int], min_images: int) -> list[str]:
    """The classes asked for (by `name_key`), or every class predicted for at least `min_images` images."""
    if classes is None:
        chosen = sorted(name for name, count in counts.items() if count >= min_images)
        if not chosen:
            raise UsageError(f"no class is the top-1 prediction of {min_images} images or more: name some (--classes)")
        return chosen
    by_key = {name_key(name): name for name in counts}
    unknown = [c for c in classes if name_key(c) not in by_key]
    if unknown:
        raise UsageError(
            f"no image's top-1 prediction is {', '.join(map(repr, unknown))}; predicted: "
            + ", ".join(sorted(counts)[:20])
        )
    return [by_key[name_key(c)] for c in classes]


@dataclass(kw_only=True)
class _Measure:
    """The network side: images decoded as the run decoded them, occluded, and run through the network in batches."""

    model: CamModel
    settings: dict[str, Any]
    device: torch.device
    execution: Execution
    occluder: Occluder
    batch_size: int
    skipped: int = 0
    differences: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        size = int(self.settings["input_size"])
        self.prep = Preprocess(image_size=size, interpolation=self.settings.get("interpolation", "bilinear"))
        self.mean = torch.tensor(self.settings["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.settings["std"], device=self.device).view(1, 3, 1, 1)
        self.activation = self.settings.get("activation", "softmax")

    def class_images(self, name: str, regions: np.ndarray, rows: pd.DataFrame, seed: int) -> pd.DataFrame:
        """The class's sampled images occluded: one row per image readable, with its probabilities and drops.

        Each image is occluded at the region of the other half's mean map: a region picked where the
        measured images' own maps happen to pile up would win over the control by chance alone.
        """
        rows = rows.reset_index(drop=True)
        boxes = self._boxes(name, regions, rows, seed)
        pixels = self._decode(rows)
        readable = np.array([p is not None for p in pixels], bool)
        self.skipped += int((~readable).sum())
        rows, boxes = rows[readable].reset_index(drop=True), {k: v[readable] for k, v in boxes.items()}
        pixels = [p for p in pixels if p is not None]
        if rows.empty:
            return rows
        found = [
            self._batch(
                pixels[start : start + self.batch_size],
                rows["class_index"].to_numpy(np.int64)[start : start + self.batch_size],
                {k: v[start : start + self.batch_size] for k, v in boxes.items()},
            )
            for start in range(0, len(rows), self.batch_size)
        ]
        scores = {key: np.concatenate([f[key] for f in found]) for key in found[0]}
        self._check_rebuild(name, scores["p"], rows["probability"].to_numpy(float))
        shown = {
            f"{prefix}_{side}": boxes[prefix][:, k] / GRID for prefix in ("region", "off") for k, side in enumerate(BOX)
        }
        measured = rows.drop(columns=[*MAP_NAMES, GT_BOX_COLUMN.name], errors="ignore")
        measured = measured.assign(annotated=boxes["off"][:, 0] >= 0, **shown, **scores)
        measured[[f"off_{s}" for s in BOX]] = measured[[f"off_{s}" for s in BOX]].where(measured["annotated"], np.nan)
        return measured

    def _boxes(self, name: str, regions: np.ndarray, rows: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
        """Each image's boxes in cells: `region` [n, 4], `control` [n, CONTROLS, 4], `off` [n, 4] (-1: none)."""
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # the same controls whatever the classes
        boxes = {
            "region": np.zeros((len(rows), 4), int),
            "control": np.zeros((len(rows), CONTROLS, 4), int),
            "off": np.full((len(rows), 4), -1),
        }
        for half, positions in rows.groupby("half").indices.items():
            region = regions[2 - int(half)]  # [whole, half 0, half 1]: the other half's
            boxes["region"][positions] = region
            boxes["control"][positions] = control_boxes(region, len(positions) * CONTROLS, rng).reshape(-1, CONTROLS, 4)
            boxes["off"][positions] = self._off_object(rows.iloc[positions], region)
        return boxes

    def _check_rebuild(self, name: str, p: np.ndarray, reported: np.ndarray) -> None:
        """Refuse when the rebuilt model does not give the report's probabilities (other weights, other images)."""
        self.differences.append(np.abs(p - reported))
        median = float(np.median(self.differences[-1]))
        if median > REBUILD_TOLERANCE:
            raise UsageError(
                f"the model rebuilt from the run's settings does not give the report's probabilities for {name!r} "
                f"(median difference {median:.3f}): were its weights or images changed?"
            )

    def _off_object(self, rows: pd.DataFrame, region: np.ndarray) -> np.ndarray:
        """The box off the object [n, 4] of each image with ground truth, the region's size (-1 where it has none)."""
        coords = rows[GT_BOX_COLUMN.name] if GT_BOX_COLUMN.name in rows.columns else pd.Series([None] * len(rows))
        annotated = np.array([c is not None and not np.isscalar(c) and len(c) >= 4 for c in coords], bool)
        boxes = np.full((len(rows), 4), -1)
        if annotated.any():
            sizes = zip(coords[annotated], rows["width"][annotated], rows["height"][annotated], strict=True)
            truth = [truth_cells(c, w, h) for c, w, h in sizes]
            width, height = int(region[2] - region[0]), int(region[3] - region[1])
            boxes[annotated] = off_object_boxes(grid_maps(rows[annotated]), truth, width, height)
        return boxes

    def _decode(self, rows: pd.DataFrame) -> list[np.ndarray | None]:
        """Each image's model input (uint8 [3, S, S]) as the run made it; None for one not readable here."""
        paths = [Path(root) / rel for root, rel in zip(rows["input_root"], rows["path"], strict=True)]

        def load(path: Path) -> np.ndarray | None:
            try:
                return prepare(path.read_bytes(), self.prep).pixels
            except (OSError, ValueError):  # not a local file (a tar member, a URL), gone, or unreadable now
                return None

        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            return list(pool.map(load, paths))

    @torch.inference_mode()
    def _batch(
        self, pixels: list[np.ndarray], classes: np.ndarray, boxes: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One forward pass of the images and all their occluded copies: each one's probability of its class,
        and the drops.
        """
        images = (torch.from_numpy(np.stack(pixels)).to(self.device).float() / 255 - self.mean) / self.std
        n, side = len(images), images.shape[-1]
        annotated = boxes["off"][:, 0] >= 0

        def occluded(which: np.ndarray, cells: np.ndarray) -> torch.Tensor:
            masks = box_masks(torch.from_numpy(cells.astype(np.float32) / GRID).to(self.device), side)
            return self.occluder(images[torch.from_numpy(which).to(self.device)], masks)

        repeat = np.repeat(np.arange(n), CONTROLS)
        variants = [
            images,
            occluded(np.arange(n), boxes["region"]),
            occluded(repeat, boxes["control"].reshape(-1, 4)),
            occluded(np.flatnonzero(annotated), boxes["off"][annotated]),
        ]
        logits = self.execution.forward(self.model.network, torch.cat(variants))
        index = np.concatenate([classes, classes, classes[repeat], classes[annotated]])
        p = probabilities(logits, self.activation)
        p = p.gather(1, torch.from_numpy(index).to(self.device)[:, None])[:, 0].cpu()
        original, region = p[:n], p[n : 2 * n]
        control = p[2 * n : (2 + CONTROLS) * n].reshape(n, CONTROLS)
        off = torch.full((n,), float("nan"))
        off[torch.from_numpy(annotated)] = p[(2 + CONTROLS) * n :]
        return {
            "p": original.numpy(),
            "p_region": region.numpy(),
            "p_control": control.mean(1).numpy(),
            "p_off_object": off.numpy(),
            "region_drop": confidence_drop(original, region).numpy(),
            "control_drop": confidence_drop(original[:, None], control).mean(1).numpy(),
            "off_object_drop": confidence_drop(original, off).numpy(),
        }

    def median_difference(self) -> float:
        return float(np.median(np.concatenate(self.differences))) if self.differences else float("nan")


def _class_table(images: pd.DataFrame, plan: dict, options: RelianceOptions) -> pd.DataFrame:
    """Per class: the mean drops, their ratios and the flags."""
    records = []
    for name, (regions, _) in plan.items():
        rows = images[images["class_name"].astype(str) == name] if len(images) else images
        box = {f"region_{s}": v / GRID for s, v in zip(BOX, regions[0], strict=True)}
        record = {"class": name, "images": len(rows), **box}
        if len(rows):
            record.update(_figures(rows, options))
        records.append(record)
    table = pd.DataFrame(records).set_index("class")
    flags = {"relies-on-place": "relies_on_place", "relies-off-object": "relies_off_object"}
    table["flags"] = [
        ", ".join(flag for flag, column in flags.items() if column in table and row.get(column) is True)
        for _, row in table.iterrows()
    ]
    return table


def _figures(rows: pd.DataFrame, options: RelianceOptions) -> dict[str, Any]:
    """A class's mean drops, ratios, z scores and flags, from its images' rows."""
    drop, control, ratio, z = _compared(rows["region_drop"], rows["control_drop"])
    figures = {"reliance_drop": drop, "control_drop": control, "reliance_ratio": ratio, "reliance_z": z}
    figures["relies_on_place"] = options.flags(drop, ratio, z)
    annotated = rows[rows["annotated"]]
    if len(annotated):
        off, _, ratio, z = _compared(annotated["off_object_drop"], annotated["control_drop"])
        figures.update(annotated=len(annotated), off_object_drop=off, off_object_ratio=ratio, off_object_z=z)
        figures["relies_off_object"] = options.flags(off, ratio, z)
    return figures


def _compared(drops: pd.Series, controls: pd.Series) -> tuple[float, float, float, float]:
    """Mean drop, mean control drop, their ratio (the control floored at `CONTROL_FLOOR`), and the z score of
    their paired difference (mean / standard error; each image is its own control).
    """
    difference = (drops - controls).to_numpy(float)
    mean = float(difference.mean())
    if len(difference) < 2:  # one image has no spread to judge chance by: no z, so no flag
        z = math.nan
    else:
        se = difference.std(ddof=1) / np.sqrt(len(difference))
        z = mean / se if se > 0 else (math.copysign(math.inf, mean) if mean else 0.0)
    drop, control = float(drops.mean()), float(controls.mean())
    return drop, control, drop / max(control, CONTROL_FLOOR), float(z)
