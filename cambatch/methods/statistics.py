"""Statistics of every map in a batch, computed together on the device.

Location statistics are measured on the map upsampled bilinearly to a fixed GRID x GRID, the
way the overlay shows it, so they do not depend on the model's feature resolution. Coordinates
are fractions of the image (the model sees the whole image, so map and photo line up).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRID = 64
BOX_THRESHOLD = 0.2  # of the map's max, as in the CAM paper's localization
ACTIVE_THRESHOLD = 0.5  # of the ReLU'd, min-max normalized map
BORDER = 0.1  # outer frame, as a fraction of each side


def map_statistics(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics of raw maps [N, h, w]: float32 [N] per report column (`cambatch.report.schema`); NaN where undefined.

    Undefined: centroid, border_energy and entropy of a map with no positive mass; the box of a
    map whose max is not positive.
    """
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    positive = flat.clamp(min=0)
    mass = positive.sum(1)
    share = positive / mass[:, None]
    entropy = (
        -(share * share.clamp(min=1e-30).log()).sum(1) / math.log(h * w)
        if h * w > 1
        else torch.zeros(n, device=maps.device)
    )

    grid = F.interpolate(maps[:, None], size=(GRID, GRID), mode="bilinear", align_corners=False)[:, 0]
    centers = (torch.arange(GRID, device=maps.device, dtype=maps.dtype) + 0.5) / GRID
    peak = grid.reshape(n, -1).argmax(1)
    peak_x, peak_y = centers[peak % GRID], centers[peak // GRID]

    relu = grid.clamp(min=0)
    relu_mass = relu.sum((1, 2))
    centroid_x = (relu.sum(1) * centers).sum(1) / relu_mass
    centroid_y = (relu.sum(2) * centers).sum(1) / relu_mass
    frame = (centers < BORDER) | (centers > 1 - BORDER)
    border = frame[None, :] | frame[:, None]
    border_energy = (relu * border).sum((1, 2)) / relu_mass

    low = relu.amin((1, 2), keepdim=True)
    span = relu.amax((1, 2), keepdim=True) - low
    normalized = torch.where(span > 0, (relu - low) / span.clamp(min=1e-12), torch.zeros_like(relu))
    active_area = (normalized >= ACTIVE_THRESHOLD).float().mean((1, 2))

    peak_value = grid.amax((1, 2))
    box = largest_component_box(grid >= BOX_THRESHOLD * peak_value[:, None, None].clamp(min=0))
    box = torch.where((peak_value > 0)[:, None], box, torch.full_like(box, float("nan")))

    box_x0, box_y0, box_x1, box_y1 = box.unbind(1)
    columns = {
        "cam_max": flat.amax(1),
        "cam_mean": flat.mean(1),
        "cam_std": flat.std(1, unbiased=False),
        "peak_x": peak_x,
        "peak_y": peak_y,
        "centroid_x": centroid_x,
        "centroid_y": centroid_y,
        "active_area": active_area,
        "bbox_x0": box_x0,
        "bbox_y0": box_y0,
        "bbox_x1": box_x1,
        "bbox_y1": box_y1,
        "border_energy": border_energy,
        "entropy": entropy,
    }
    return {name: value.float() for name, value in columns.items()}


def largest_component_box(mask: torch.Tensor) -> torch.Tensor:
    """Box (x0, y0, x1, y1 as fractions) of each mask's largest 8-connected component. Masks [N, G, G]."""
    n, rows, cols = mask.shape
    labels = component_labels(mask)
    offsets = torch.arange(n, device=mask.device)[:, None] * (rows * cols + 1)
    flat = labels.reshape(n, -1)
    counts = torch.bincount((flat + offsets).reshape(-1), minlength=n * (rows * cols + 1)).reshape(n, -1)
    counts[:, 0] = 0  # background
    component = labels == counts.argmax(1)[:, None, None]
    component &= mask
    cols_hit, rows_hit = component.any(1), component.any(2)
    col_ids = torch.arange(cols, device=mask.device)
    row_ids = torch.arange(rows, device=mask.device)
    big = max(rows, cols) + 1
    x0 = torch.where(cols_hit, col_ids, big).amin(1)
    x1 = torch.where(cols_hit, col_ids, -1).amax(1) + 1
    y0 = torch.where(rows_hit, row_ids, big).amin(1)
    y1 = torch.where(rows_hit, row_ids, -1).amax(1) + 1
    return torch.stack([x0 / cols, y0 / rows, x1 / cols, y1 / rows], 1).float()


def component_labels(mask: torch.Tensor) -> torch.Tensor:
    """Each cell of each mask [N, H, W] labelled by its 8-connected component: 1 + the largest flat index in
    it (0 outside the mask), for the whole batch at once.

    Every label names a cell of its own component (label L, cell L - 1), and only grows. A round hooks:
    each cell takes the largest label among its neighbours, and so does the cell its label names (a
    scatter), so whole trees merge at once; then every label jumps twice (it takes the label of the cell
    it names). The largest index of a component names itself, so every cell of it ends there; the labels
    settle in a few rounds (4-6 on 64x64 maps and random masks), where spreading the largest label one
    cell per step took tens of 3x3 filters.
    """
    n, rows, cols = mask.shape
    size = rows * cols
    keep = mask.reshape(n, size)
    cells = torch.arange(1, size + 1, device=mask.device)
    # Column 0 is the background's: label 0 names it, and it stays 0, so labels index this table directly.
    table = torch.cat([torch.zeros(n, 1, dtype=torch.long, device=mask.device), cells * keep], 1)
    while True:
        labels = table[:, 1:]
        best = _max3x3(labels.reshape(n, rows, cols)).reshape(n, size) * keep
        hooked = table.scatter_reduce(1, labels, best, reduce="amax")
        hooked[:, 1:] = hooked[:, 1:].maximum(best)
        for _ in range(2):
            hooked[:, 1:] = hooked.gather(1, hooked[:, 1:])
        if torch.equal(hooked, table):
            return labels.reshape(n, rows, cols)
        table = hooked


def _max3x3(values: torch.Tensor) -> torch.Tensor:
    """3x3 maximum filter of non-negative [N, H, W] values (zero outside), as two separable passes.

    Equal to `max_pool2d(values, 3, stride=1, padding=1)` for values >= 0, and about 15x faster
    on a CPU (max_pool2d over one channel is slow there), which matters: connected components
    take one filter per round, a few rounds per batch.
    """
    padded = F.pad(values, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
    return torch.maximum(torch.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
