"""The regions of a score map at every threshold in one pass: a component tree built by union-find.

A map's pixels are added from the brightest level down, each joined to its 8-neighbours already added,
so that just before the pixels of level `c` are added the sets are exactly the 8-connected regions of
the map above `c`. Each set carries its box, pixel count, first pixel in raster order and outline area
as it grows, and at every threshold's cut the live sets are copied out: one pass over the pixels and
one small copy per threshold, instead of one labelling of the whole map per threshold. Compiled with
numba (the `evaluation` extra); `boxes.components` is its only caller.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LEVELS = 256  # uint8 scores
# Columns of a set's integer attributes, and of a region copied out.
X0, Y0, X1, Y1, COUNT, FIRST = range(6)
TILE, FIRST_PIXEL, BOX_X0, BOX_Y0, BOX_X1, BOX_Y1, PIXELS = range(7)


@njit(cache=True, nogil=True)
def regions(scores, cuts):
    """Regions of each map scores [N, H, W] (uint8) above each cut cuts [N, T] (non-decreasing along T).

    Returns `found` [R, 7] int64 (tile = `map * T + threshold`, first pixel as a raster index, box x0, y0,
    x1, y1 in the protocol's convention, pixel count) and `area` [R], the outline area. A tile without
    region holds one `[0, 0, 0, 0]` box with first pixel -1 and area -1. The outline area is that of the
    polygon through the region's boundary pixel centres: each 2 x 2 cell of pixel centres adds 1/2 once
    three of its corners are in and 1/2 more with the fourth (any two pixels of a cell touch, so its
    corners in belong to one region). Unlike `cv2.contourArea` of the outer contour, a hole's area is left
    out: holes are rare in upsampled CAMs and matter only between regions of nearly equal area.
    """
    n, h, w = scores.shape
    t = cuts.shape[1]
    # The sets live on the map padded by a border of pixels that are never added: neighbours and cells
    # need no bounds checks, and a cell that holds a border pixel never has three corners in.
    stride = w + 2
    padded = (h + 2) * stride
    found = np.empty((max(64, n * t * 2), 7), np.int64)
    area_out = np.empty(len(found), np.float64)
    count = 0
    parent = np.empty(padded, np.int32)  # int32: half the memory the scattered accesses go through
    sets = np.empty((padded, 6), np.int32)
    area = np.empty(padded, np.float64)
    live = np.empty(padded, np.int32)  # the roots of the live sets, `alive` of them
    slot = np.empty(padded, np.int32)  # a root's place in `live`
    corners = np.empty(padded, np.uint8)  # per 2 x 2 cell (by its top-left pixel): its corners added
    order = np.empty(h * w, np.int32)
    for m in range(n):
        flat = scores[m].ravel()
        _by_level(flat, order)
        parent[:] = -1
        corners[:] = 0
        alive = 0
        j = t - 1
        added = 0
        for level in range(LEVELS - 1, -1, -1):
            # Every pixel above `level` is in: the sets are the regions above a cut equal to it.
            while j >= 0 and cuts[m, j] >= level:
                if count + max(alive, 1) > len(found):
                    found, area_out = _grown(found, area_out, 2 * (count + max(alive, 1)))
                count = _copy_out(found, area_out, count, m * t + j, sets, area, live, alive, w, h)
                j -= 1
            if j < 0:
                break
            while added < h * w and flat[order[added]] == level:
                alive = _add(order[added], w, stride, parent, sets, area, live, slot, alive, corners)
                added += 1
    return found[:count], area_out[:count]


@njit(cache=True, nogil=True)
def _by_level(flat, order):
    """`order`: the pixels of `flat` by level, brightest first (a counting sort over the 256 levels)."""
    starts = np.zeros(LEVELS + 1, np.int64)
    for p in range(len(flat)):
        starts[LEVELS - flat[p]] += 1
    for v in range(LEVELS):
        starts[v + 1] += starts[v]
    for p in range(len(flat)):
        k = LEVELS - 1 - flat[p]
        order[starts[k]] = p
        starts[k] += 1


@njit(cache=True, nogil=True, inline="always")
def _add(pixel, w, stride, parent, sets, area, live, slot, alive, corners):
    """Add a pixel (raster index) as a set of its own, join it with its 8-neighbours already in and count its
    cells; returns the number of live sets.
    """
    y, x = pixel // w, pixel % w
    p = (y + 1) * stride + x + 1
    parent[p] = p
    sets[p, X0], sets[p, X1], sets[p, Y0], sets[p, Y1] = x, x, y, y
    sets[p, COUNT], sets[p, FIRST] = 1, pixel
    area[p] = 0.0
    live[alive], slot[p] = p, alive
    alive += 1
    root = p
    for q in (p - stride - 1, p - stride, p - stride + 1, p - 1, p + 1, p + stride - 1, p + stride, p + stride + 1):
        if parent[q] < 0:  # not in yet, or the border
            continue
        other = _root(parent, q)
        if other == root:
            continue
        big, small = (root, other) if sets[root, COUNT] >= sets[other, COUNT] else (other, root)
        parent[small] = big  # the smaller set joins the larger: the trees stay shallow
        sets[big, X0], sets[big, Y0] = min(sets[big, X0], sets[small, X0]), min(sets[big, Y0], sets[small, Y0])
        sets[big, X1], sets[big, Y1] = max(sets[big, X1], sets[small, X1]), max(sets[big, Y1], sets[small, Y1])
        sets[big, COUNT] += sets[small, COUNT]
        sets[big, FIRST] = min(sets[big, FIRST], sets[small, FIRST])
        area[big] += area[small]
        alive -= 1
        moved = live[alive]
        live[slot[small]], slot[moved] = moved, slot[small]
        root = big
    for cell in (p - stride - 1, p - stride, p - 1, p):
        corners[cell] += 1
        if corners[cell] >= 3:
            area[root] += 0.5
    return alive


@njit(cache=True, nogil=True, inline="always")
def _root(parent, p):
    while parent[p] != p:
        parent[p] = parent[parent[p]]  # path halving
        p = parent[p]
    return p


@njit(cache=True, nogil=True)
def _copy_out(found, area_out, count, tile, sets, area, live, alive, w, h):
    """The live sets as the regions of `tile` (or its empty box); the new count of regions."""
    if alive == 0:
        found[count, :] = 0
        found[count, TILE], found[count, FIRST_PIXEL] = tile, -1
        area_out[count] = -1.0
        return count + 1
    for i in range(alive):
        r = live[i]
        found[count, TILE], found[count, FIRST_PIXEL] = tile, sets[r, FIRST]
        found[count, BOX_X0], found[count, BOX_Y0] = sets[r, X0], sets[r, Y0]
        found[count, BOX_X1], found[count, BOX_Y1] = min(sets[r, X1] + 1, w - 1), min(sets[r, Y1] + 1, h - 1)
        found[count, PIXELS] = sets[r, COUNT]
        area_out[count] = area[r]
        count += 1
    return count


@njit(cache=True, nogil=True)
def _grown(found, area_out, capacity):
    bigger, wider = np.empty((capacity, found.shape[1]), found.dtype), np.empty(capacity, area_out.dtype)
    bigger[: len(found)] = found
    wider[: len(area_out)] = area_out
    return bigger, wider
