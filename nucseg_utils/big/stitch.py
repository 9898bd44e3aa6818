"""Big images, stage 4: stitching instances, not pixels.

In: one tile's label window (post-processed there), the canvas of the labels kept so far,
the tile and the grid's shape.
Out: the objects of the window this tile keeps, written into the canvas with the next labels.

Tiles are done in raster order (row by row), and a tile keeps an object of its window when

1. it does not touch the window's edge inside the image (it is cut there: it belongs to a tile
   where it is whole), and
2. its centre (the centroid, rounded to a pixel) lies in this tile's core, or in the core of a
   tile done before but within half a nucleus (:func:`nucseg_utils.big.plan.seam_tolerance`) of
   this one's (the earlier tile saw it centred here, and did not keep it), and
3. fewer than half of its pixels are already labelled by the tiles done before (else it is the
   same nucleus seen twice, and the first tile's version stays).

A kept object gets the pixels of it that no earlier nucleus holds (**conflicting pixels stay
with the tile done first**; an object left smaller than the model's ``min_size`` is dropped)
and the next label. So a nucleus crossing a tile border is one label, whole, written once:
never cut, never doubled. Objects that touch a window's inner edge while centred in its core
are larger than the overlap; they are dropped, counted (``too_large`` in the summary) and
reported: raise ``overlap``. What post-processing computes over the whole map it is given is
the window's: the ``paper`` method's Otsu threshold and mean nucleus size, the typical nucleus
area of the relative size filter, the filling of holes (a hole that reaches a window's edge is
not filled) and the watershed of a foreground region larger than the overlap.
"""
from __future__ import annotations

import numpy as np

from nucseg_utils.big.plan import Tile

__all__ = ["stitch_tile"]


def stitch_tile(labels: np.ndarray, canvas: np.ndarray, tile: Tile, tiles_shape, tile_size,
                image_shape, next_label: int, min_size: int, tolerance: float = 0.0):
    """Keep the objects of one tile's window ``labels`` by the seam rules of the module
    docstring, against ``canvas`` (the label image over the window, as the tiles done before
    left it). Returns (the new canvas window, the labels given (first, last + 1), the number
    of objects too large for the overlap). ``tiles_shape``: (rows, cols) of the grid;
    ``tolerance``: how far (px) from this tile's core the centre of an object may lie in an
    earlier tile's core for this tile to keep it."""
    lab = np.asarray(labels)
    n = int(lab.max()) if lab.size else 0
    canvas = np.array(canvas, np.uint32, copy=True)
    if n == 0:
        return canvas, (next_label, next_label), 0
    wy0, wy1, wx0, wx1 = tile.window
    h, w = lab.shape
    flat = lab.ravel().astype(np.int64)
    area = np.bincount(flat, minlength=n + 1).astype(np.float64)
    yy, xx = np.indices(lab.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1) / area + wy0
        cx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1) / area + wx0
        taken = np.bincount(flat, weights=(canvas.ravel() > 0).astype(np.float64),
                            minlength=n + 1) / area
    edge = np.zeros(n + 1, bool)  # objects cut by the window's edge inside the image
    ih, iw = image_shape
    for inside, strip in ((wy0 > 0, lab[0]), (wy1 < ih, lab[-1]),
                          (wx0 > 0, lab[:, 0]), (wx1 < iw, lab[:, -1])):
        if inside:
            edge[np.unique(strip)] = True
    rows, cols = tiles_shape
    ok = area > 0
    ok[0] = False
    owner_row = np.clip(np.floor(np.where(ok, cy, 0) + 0.5).astype(np.int64) // tile_size,
                        0, rows - 1)
    owner_col = np.clip(np.floor(np.where(ok, cx, 0) + 0.5).astype(np.int64) // tile_size,
                        0, cols - 1)
    owner = owner_row * cols + owner_col
    cy0, cy1, cx0, cx1 = tile.core
    py = np.floor(np.where(ok, cy, 0) + 0.5)
    px = np.floor(np.where(ok, cx, 0) + 0.5)
    near = np.maximum(np.maximum(cy0 - py, py - (cy1 - 1)),
                      np.maximum(cx0 - px, px - (cx1 - 1))) <= tolerance
    too_large = int((ok & edge & (owner == tile.index)).sum())
    keep = ok & ~edge & ((owner == tile.index) | ((owner < tile.index) & near)) & \
        (taken < 0.5)
    free = canvas == 0
    left = np.bincount(flat[free.ravel()], minlength=n + 1)
    keep &= left >= max(1, int(min_size))
    ids = np.flatnonzero(keep)
    lut = np.zeros(n + 1, np.uint32)
    lut[ids] = np.arange(next_label, next_label + ids.size, dtype=np.uint32)
    new = lut[lab]
    write = free & (new > 0)
    canvas[write] = new[write]
    return canvas, (next_label, next_label + int(ids.size)), too_large
