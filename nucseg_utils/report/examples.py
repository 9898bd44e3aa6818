"""Examples: which images and windows the notebooks show, each by a stated criterion.

In: label images, or the per-image table of :mod:`nucseg_utils.evaluation.scoring`.
Out: ids (best, median and worst by DSB; the most crowded image; the worst images) and windows
(around the densest cluster of touching nuclei).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def examples_by_score(table, n: int = 3) -> list[str]:
    """Ids of the best, median and worst images by DSB (n spread over the ranking)."""
    ranked = table.sort_values("dsb", ascending=False)["id"].tolist()
    if len(ranked) <= n:
        return ranked
    idx = np.linspace(0, len(ranked) - 1, n).round().astype(int)
    return [ranked[i] for i in idx]


def touching_nuclei(labels: np.ndarray, gap: int = 1) -> int:
    """How many nuclei of a label image touch another one (at most ``gap`` background
    pixels between them): the criterion for a crowded image."""
    lab = np.asarray(labels)
    touching = set()
    for dy in range(0, gap + 2):
        for dx in range(-gap - 1, gap + 2):
            if (dy, dx) <= (0, 0) or max(abs(dy), abs(dx)) > gap + 1:
                continue
            a = lab[dy:, max(dx, 0):lab.shape[1] + min(dx, 0)]
            b = lab[:lab.shape[0] - dy, max(-dx, 0):lab.shape[1] + min(-dx, 0)]
            hit = (a > 0) & (b > 0) & (a != b)
            touching.update(np.unique(a[hit]).tolist())
            touching.update(np.unique(b[hit]).tolist())
    return len(touching)


def most_crowded(source, ids) -> tuple[str, int]:
    """(id, count) of the image whose ground truth has the most nuclei touching another."""
    counts = {sid: touching_nuclei(source.labels(sid)) for sid in ids}
    best = max(sorted(counts), key=lambda s: counts[s])
    return best, counts[best]


def densest_centre(mask: np.ndarray, size: int) -> tuple[int, int]:
    """The centre (row, col) of the ``size`` px window inside the image that holds the most
    of ``mask`` (the first such window in raster order; the image's centre when the mask is
    empty). For figures: where to look."""
    m = np.asarray(mask, np.float32)
    if not m.any():
        return m.shape[0] // 2, m.shape[1] // 2
    box = ndi.uniform_filter(m, size=size, mode="constant")
    lo = [min(size // 2, n // 2) for n in m.shape]  # window centres that keep it inside
    hi = [max(n - size // 2, n // 2 + 1) for n in m.shape]
    r, c = np.unravel_index(int(np.argmax(box[lo[0]:hi[0], lo[1]:hi[1]])),
                            (hi[0] - lo[0], hi[1] - lo[1]))
    return int(r + lo[0]), int(c + lo[1])


def window_around(shape, centre, size: int) -> tuple[slice, slice]:
    """Row and column slices of a ``size`` px window around ``centre``, inside ``shape``."""
    return tuple(slice(start, start + size) for start in (
        int(np.clip(round(c - size / 2), 0, max(n - size, 0)))
        for c, n in zip(centre, shape[:2])))


def crowded_window(labels: np.ndarray, size: int = 160) -> tuple[slice, slice]:
    """A ``size`` x ``size`` window of an image around its densest cluster of touching
    nuclei (for figures: seeds and markers stay visible)."""
    lab = np.asarray(labels).astype(np.int64)
    highest = ndi.grey_dilation(lab, size=3)
    lowest = ndi.grey_erosion(np.where(lab > 0, lab, lab.max() + 1), size=3)
    contact = (lab > 0) & (highest != lowest)  # a nucleus pixel next to another nucleus
    return window_around(lab.shape, densest_centre(contact, size), size)


def worst_images(table, n: int = 3) -> list[str]:
    """Ids of the ``n`` images with the lowest DSB (ties by id)."""
    return table.sort_values(["dsb", "id"])["id"].head(n).tolist()
