"""Big images, stage 2: the image's statistics and its grid of tiles, decided once.

In: a :class:`nucseg_utils.model.NucleusModel` (fully convolutional, ``crop``), a
:class:`~nucseg_utils.big.lazy.LazyImage`, the model's settings.
Out: a :class:`Plan`: the normalisation's statistics (:class:`ImageStats`), the rescaling
factor, the tile and overlap sizes, and the grid of :class:`Tile` (a core and its window).

**One scale and one normalisation per image.** The percentile normalisation and the nucleus
size rescaling (:mod:`nucseg_utils.inference.scale`) are image statistics; computed per tile,
they would change from tile to tile and make seams. Both are estimated once, before any tile:
the percentiles (and a float image's value range) from an overview of the whole image (every
``s``-th pixel, ``s`` the smallest stride that brings it under :data:`OVERVIEW_PIXELS`; read
block by block), the rescaling factor as :func:`nucseg_utils.inference.scale.estimate_factor`
finds it, on the whole image when the overview is the image, else as the median of its
estimates on :data:`SIZE_SAMPLES` windows of :data:`SIZE_WINDOW` native pixels, those of the
overview with the brightest normalised content (nuclei are bright after normalisation).

**Tiles.** The image is cut into a grid of square *cores* of ``tile`` native pixels (the last
row and column smaller); each core is predicted inside a *window*, the core grown by
``overlap`` pixels on every side (cut at the image's edge). The overlap is the largest nucleus
the model expects, plus the network's context, plus the grid's alignment:
(:data:`LARGEST_NUCLEUS` x ``target_diameter`` + :data:`CONTEXT` + :data:`ALIGN`) pixels at the
model's scale, divided by the factor, so that a nucleus whose centre lies in a core is whole
inside its window with the network's context around it. When ``tile`` is automatic the window
is :data:`WINDOW` pixels at the model's scale. (What these sizes rest on, measured on
stage1_train and stage1_test: ``models/cpu/NOTES.md``, "Big images".)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from nucseg_utils.big.lazy import LazyImage
from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.data.dsb import DataError, modality_of, to_rgb_float
from nucseg_utils.inference import scale
from nucseg_utils.inference.preprocessing import (
    CLIP,
    PERCENTILES,
    background_is_bright,
    haematoxylin_density,
)

__all__ = ["ALIGN", "CONTEXT", "DEFAULT_DIAMETER", "ImageStats", "LARGEST_NUCLEUS", "OVERVIEW_PIXELS", "Plan", "SIZE_SAMPLES", "SIZE_WINDOW", "Tile", "WINDOW", "default_overlap", "default_tile", "image_stats", "largest_nucleus", "make_plan", "overview_stride", "read_overview", "seam_tolerance", "tile_grid"]


# the tile's window at the model's scale (px a side) when ``tile`` is automatic: one network
# pass of 1024 x 1024, as :func:`nucseg_utils.inference.forward.forward_pass` tiles
WINDOW = 1024


# the largest nucleus the model expects, in units of its target diameter; the context the
# network needs beyond it (px at the model's scale)
LARGEST_NUCLEUS = 3.0


CONTEXT = 96


# the network's windows start and end on its 32-px grid (that of the whole image at the
# model's scale): a U-Net's downsampling is not shift-invariant; aligning costs up to this
# much of the overlap on each side
ALIGN = 32


# a model without a target diameter sees nuclei at native size: this one is assumed (the median
# nucleus of stage1_train is 18 px across)
DEFAULT_DIAMETER = 20.0


OVERVIEW_PIXELS = 2048 * 2048


SIZE_SAMPLES, SIZE_WINDOW = 3, 1024


@dataclass(frozen=True)
class ImageStats:
    """The statistics of a whole image that normalising it needs, estimated once (from its
    overview): a float image's value range (None for integer images), the normalisation
    ``mode`` (``unit``, ``percentile``, or ``stained``: ``haematoxylin`` on stained tissue),
    the percentiles mapped to 0 and 1 (``lo``, ``hi``) and whether the image is inverted
    (bright background)."""
    mode: str
    lo: float = 0.0
    hi: float = 1.0
    invert: bool = False
    value_range: tuple | None = None

    def unit_rgb(self, window: np.ndarray) -> np.ndarray:
        """A window in file values as RGB in [0, 1] (:func:`nucseg_utils.data.to_rgb_float`,
        a float image scaled by the whole image's range, not the window's)."""
        a = np.asarray(window)
        if self.value_range is not None and np.issubdtype(a.dtype, np.floating):
            lo, hi = self.value_range
            if lo < 0 or hi > 1:
                a = a.astype(np.float32)
                a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return to_rgb_float(a)

    def normalise(self, rgb: np.ndarray) -> np.ndarray:
        """:func:`nucseg_utils.inference.preprocessing.normalize` of an RGB window with this image's
        statistics instead of the window's (the same arithmetic)."""
        img = np.asarray(rgb, np.float32)
        if self.mode == "unit":
            return img
        lo, hi = np.float64(self.lo), np.float64(self.hi)
        if self.mode == "stained":
            d = haematoxylin_density(img)
            grey = np.zeros_like(d) if hi - lo < 1e-6 else (d - lo) / (hi - lo)
            return np.repeat(np.clip(grey, *CLIP)[..., None], 3, axis=-1).astype(np.float32)
        out = np.zeros_like(img) if hi - lo < 1e-6 else (img - lo) / (hi - lo)
        if self.invert:
            out = 1.0 - out
        return np.clip(out, *CLIP).astype(np.float32)


def image_stats(overview: np.ndarray, mode: str, value_range=None) -> ImageStats:
    """The :class:`ImageStats` of an image from its overview (file values)."""
    rgb = ImageStats("unit", value_range=value_range).unit_rgb(overview)
    if mode == "unit":
        return ImageStats("unit", value_range=value_range)
    if mode == "haematoxylin" and modality_of(rgb) == "stained":
        lo, hi = np.percentile(haematoxylin_density(rgb), PERCENTILES)
        return ImageStats("stained", float(lo), float(hi), False, value_range)
    lo, hi = np.percentile(rgb, PERCENTILES)
    return ImageStats("percentile", float(lo), float(hi), background_is_bright(rgb),
                      value_range)


def overview_stride(shape) -> int:
    """The smallest stride that brings an image of ``shape`` under :data:`OVERVIEW_PIXELS`."""
    return max(1, math.ceil(math.sqrt(shape[0] * shape[1] / OVERVIEW_PIXELS)))


def read_overview(lazy: LazyImage, stride: int, block: int = 2048):
    """(every ``stride``-th pixel of the image in file values, its exact value range for a
    float image, else None), read block by block (one block in memory at a time); the whole
    image when ``stride`` is 1 and it fits :data:`OVERVIEW_PIXELS`. DataError for NaN."""
    h, w = lazy.shape
    step = max(h, w) if stride == 1 and h * w <= OVERVIEW_PIXELS else \
        stride * max(1, block // stride)  # blocks start on the stride's grid
    floating = np.issubdtype(lazy.dtype, np.floating)
    lo, hi = math.inf, -math.inf
    rows = []
    for y in range(0, h, step):
        row = []
        for x in range(0, w, step):
            b = lazy.read(y, min(y + step, h), x, min(x + step, w))
            if floating:
                if not np.isfinite(b).all():
                    raise DataError(f"{lazy.name}: image holds NaN or infinite values")
                lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
            row.append(b[::stride, ::stride] if stride > 1 else b)
        rows.append(np.concatenate(row, axis=1) if len(row) > 1 else row[0])
    overview = np.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]
    return overview, ((lo, hi) if floating else None)


@dataclass(frozen=True)
class Tile:
    """One tile: its place in the grid (``row``, ``col``, ``index`` in raster order), its
    ``core`` and its ``window`` as (y0, y1, x0, x1) in image pixels."""
    index: int
    row: int
    col: int
    core: tuple
    window: tuple

    @property
    def name(self) -> str:
        return f"{self.row:04d}_{self.col:04d}"


def tile_grid(shape, tile: int, overlap: int) -> list[Tile]:
    """The tiles of an image of ``shape`` (H, W): cores of ``tile`` px in raster order (the
    last row and column cut by the image), windows grown by ``overlap`` px (cut by it too)."""
    h, w = shape
    tile, overlap = int(tile), int(overlap)
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and overlap >= 0 pixels, got {tile}, {overlap}")
    cols = math.ceil(w / tile)
    out = []
    for r, y0 in enumerate(range(0, h, tile)):
        for c, x0 in enumerate(range(0, w, tile)):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            out.append(Tile(r * cols + c, r, c, (y0, y1, x0, x1),
                            (max(0, y0 - overlap), min(h, y1 + overlap),
                             max(0, x0 - overlap), min(w, x1 + overlap))))
    return out


def largest_nucleus(settings: ModelSettings) -> float:
    """The largest nucleus (px across at the model's scale) the overlap is made for."""
    return LARGEST_NUCLEUS * float(settings.target_diameter or DEFAULT_DIAMETER)


def default_overlap(settings: ModelSettings, factor: float) -> int:
    """The overlap (native px): the largest expected nucleus, :data:`CONTEXT` and
    :data:`ALIGN` at the model's scale, in native pixels."""
    return int(math.ceil((largest_nucleus(settings) + CONTEXT + ALIGN) / factor))


def seam_tolerance(settings: ModelSettings, factor: float) -> float:
    """How far (native px) from a tile's core an object's centre may lie in an earlier tile's
    core for this tile to keep it (the earlier tile saw it centred here): half the model's
    nucleus diameter. Two tiles see a nucleus on their border alike, so its centre moves
    by less; an object centred further away is the earlier tile's, seen with more context."""
    return 0.5 * float(settings.target_diameter or DEFAULT_DIAMETER) / factor


def default_tile(factor: float, overlap: int) -> int:
    """The core (native px) whose window is :data:`WINDOW` px at the model's scale (at
    least as wide as the overlap)."""
    return max(int(overlap), int(math.floor(WINDOW / factor)) - 2 * int(overlap))


@dataclass
class Plan:
    """What every tile of one image shares, decided once (``plan.json``): the settings it was
    made with, the image's statistics and rescaling factor, the tile and overlap."""
    settings: dict
    shape: tuple
    stats: ImageStats
    factor: float
    tile: int
    overlap: int

    def tiles(self) -> list[Tile]:
        return tile_grid(self.shape, self.tile, self.overlap)

    def to_json(self) -> dict:
        return {"settings": self.settings, "shape": list(self.shape),
                "stats": dataclasses.asdict(self.stats), "factor": self.factor,
                "tile": self.tile, "overlap": self.overlap}

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        stats = dict(d["stats"])
        if stats.get("value_range") is not None:
            stats["value_range"] = tuple(stats["value_range"])
        return cls(d["settings"], tuple(d["shape"]), ImageStats(**stats), float(d["factor"]),
                   int(d["tile"]), int(d["overlap"]))


def make_plan(model, lazy: LazyImage, settings: dict, tile=None, overlap=None,
              tta: bool = True) -> Plan:
    """The :class:`Plan` of an image: its statistics from its overview, its rescaling factor
    (see the module docstring), the tile and overlap (automatic when None)."""
    model_settings = model.settings
    if model_settings.input_mode == "resize":
        raise ValueError("tiled prediction needs a fully convolutional model (input_mode "
                         "'crop'); this one resizes every image to its input size")
    stride = overview_stride(lazy.shape)
    overview, value_range = read_overview(lazy, stride)
    stats = image_stats(overview, model_settings.normalization, value_range)
    if stride == 1:
        factor = scale.estimate_factor(model, stats.normalise(stats.unit_rgb(overview)),
                                       model_settings, tta)
    else:
        factor = _sampled_factor(model, lazy, stats, overview, stride, tta)
    del overview
    overlap = default_overlap(model_settings, factor) if overlap is None else int(overlap)
    tile = default_tile(factor, overlap) if tile is None else int(tile)
    return Plan(settings, tuple(lazy.shape), stats, float(factor), tile, overlap)


def _sampled_factor(model, lazy, stats, overview, stride, tta) -> float:
    """The median of the factors estimated on the :data:`SIZE_SAMPLES` windows of
    :data:`SIZE_WINDOW` native px whose overview is brightest once normalised."""
    h, w = lazy.shape
    side = min(SIZE_WINDOW, h, w)
    bright = stats.normalise(stats.unit_rgb(overview)).mean(axis=-1)
    cells = []
    for y in range(0, h - side + 1, side):
        for x in range(0, w - side + 1, side):
            part = bright[y // stride:(y + side) // stride, x // stride:(x + side) // stride]
            cells.append((-float(part.mean()) if part.size else 0.0, y, x))
    factors = []
    for _, y, x in sorted(cells)[:SIZE_SAMPLES]:
        window = stats.normalise(stats.unit_rgb(lazy.read(y, y + side, x, x + side)))
        factors.append(scale.estimate_factor(model, window, model.settings, tta))
    return float(np.exp(np.median(np.log(factors))))
