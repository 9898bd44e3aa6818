"""Big images: one image larger than memory, segmented tile by tile, its nuclei stitched.

In: a :class:`nucseg_utils.model.NucleusModel` (a fully convolutional, ``crop`` one) and one
2-D image read lazily: a path (:func:`open_lazy`: TIFF, BigTIFF, OME-TIFF, pyramidal or not,
through ``tifffile``'s Zarr store; a Zarr array or an OME-Zarr image) or an array-like (a
numpy, Zarr or Dask array) of (H, W) or (H, W, C).
Out (:func:`predict_big`), in an output folder, for the image ``<id>``:

- ``labels/<id>.ome.zarr``: the label image (uint32, 0 the background, 1..N one nucleus each)
  as OME-Zarr (NGFF 0.4, Zarr format 2, chunks of 1024 x 1024, compressed), with its
  resolution pyramid (halved by nearest neighbour until it fits 1024 px) and ``image-label``
  metadata, so napari opens it as a labels layer;
- ``measurements/<id>.csv``: one row per nucleus (:func:`nucseg_utils.export.measure`, its
  coordinates in the whole image's pixels), streamed tile by tile;
- ``geojson/<id>.geojson``: the nucleus outlines as a GeoJSON FeatureCollection of polygons
  (QuPath's *File > Import objects* reads them as detections, in the image's pixel coordinates;
  the polygons of :func:`nucseg_utils.export.nucleus_polygons`, named by their label);
- ``done/<id>.json``: written last, with the image's summary row (as :mod:`nucseg_utils.predict`).

**One scale and one normalisation per image.** The percentile normalisation and the nucleus
size rescaling (:mod:`nucseg_utils.scale`) are image statistics; computed per tile, they would
change from tile to tile and make seams. Both are estimated once, before any tile: the
normalisation's percentiles (and a float image's value range) from an overview of the whole
image (every ``s``-th pixel, ``s`` the smallest stride that brings it under
:data:`OVERVIEW_PIXELS`; read block by block), the rescaling factor as
:func:`nucseg_utils.scale.estimate_factor` finds it, on the whole image when the overview is
the image (``s`` = 1), else as the median of its estimates on :data:`SIZE_SAMPLES` windows of
1024 native pixels, those of the overview with the brightest normalised content (nuclei are
bright after normalisation). Every tile is then normalised with those statistics and predicted
at that factor on the whole image's own grid at the model's scale (:func:`predict_window`: the
pixels that rescaling the whole image would make, the network's 32-px downsampling steps where
the whole image's fall: a U-Net is not shift-invariant). On an image that fits the overview, tiled
and untiled predictions see the same pixels at the same factor: they differ only where a
window's edge is within the network's context.

**Tiles and seams.** The image is cut into a grid of square *cores* of ``tile`` native pixels
(the last row and column smaller); each core is predicted inside a *window*, the core grown by
``overlap`` pixels on every side (cut at the image's edge), and post-processed there
(``model.postprocess``). The overlap is the largest nucleus the model expects, plus the
network's context, plus the grid's alignment: (:data:`LARGEST_NUCLEUS` x ``target_diameter`` +
:data:`CONTEXT` + :data:`ALIGN`) = 60 + 96 + 32 pixels at the model's scale for the committed
model, divided by the factor. In stage1_train the largest nucleus' bounding box is at most
2.9 x the median diameter in 95 % of the images, 4.2 x in 99 %, and a nucleus reaches about half
its box from its centre, so a nucleus whose centre lies in a core is whole inside its window,
with 96 px of context around it (on the stage1_test tissue image that needs the most context,
windows on the grid with 96 px beyond the core gave the core's probabilities within about 0.02
of the whole image's; off the grid, 0.4 apart whatever the context). Stitching is of
*instances*, not pixels. Tiles are done in raster order (row by row), and a tile keeps an
object of its window when

1. it does not touch the window's edge inside the image (it is cut there: it belongs to a tile
   where it is whole), and
2. its centre (the centroid, rounded to a pixel) lies in this tile's core, or in the core of a
   tile done before but within half a nucleus (:func:`seam_tolerance`) of this one's (the
   earlier tile saw it centred here, and did not keep it), and
3. fewer than half of its pixels are already labelled by the tiles done before (else it is the
   same nucleus seen twice, and the first tile's version stays).

A kept object gets the pixels of it that no earlier nucleus holds (**conflicting pixels stay
with the tile done first**; an object left smaller than the model's ``min_size`` is dropped)
and the next label. So a nucleus crossing a tile border is one label, whole, written once: never
cut, never doubled. Objects that touch a window's inner edge while centred in its core are
larger than the overlap; they are dropped, counted (``too_large`` in the summary) and reported:
raise ``overlap``. What post-processing computes over the whole map it is given is the
window's: the ``paper`` method's Otsu threshold and mean nucleus size, the typical nucleus
area of a model with a relative size filter (``min_size_factor``), and, for every method,
the filling of holes (a hole that reaches a window's edge is not filled) and the watershed of
a foreground region larger than the overlap. On 9 stage1_test images tried with 128-px tiles
without TTA, 6 label images came out identical to the untiled ones, and on the 3 others a few
nuclei differed (each image's DSB unchanged or within 0.0012); with TTA, 5 of 5 identical (the
comparison on all of stage1_test is in ``benchmarks/bench_big.py``).

**Memory is bounded by the tile, not the image.** At any time one window is held: its pixels
(W x W x C in the file's type, W = ``tile`` + 2 ``overlap``), the normalised image (12 bytes a
pixel), its rescaled copy (12 f^2 bytes a pixel), the probabilities (4 bytes per target per
pixel, at both scales), the post-processing's arrays (a few W x W maps) and the label window
(4 bytes a pixel); the network sees the rescaled window (by default 1024 x 1024: ``tile`` is
chosen so that the window is :data:`WINDOW` pixels at the model's scale) in batches of 4 of the
8 test-time variants. Besides the window: the overview (at most :data:`OVERVIEW_PIXELS` pixels,
12 bytes each), one chunk of each output, and the list of tiles. The measurements and outlines
of one tile are written when it is done and never held for the whole image (only the areas,
8 bytes a nucleus, for the median). Bound, whatever the image size: about 2.5 GB for the whole
process with the committed model and the default tile (measured, ``benchmarks/REPORT.md``
section 7: a 19,968 x 19,968 mosaic peaked at 1.39 GB without TTA, a 2048 x 2048 one at
1.36 GB without and 2.44 GB with TTA, of which about 0.9 GB is the loaded model and 1.2 GB the
network's pass over 4 variants of a 1024 x 1024 window).

**Resume.** Every output is written to a temporary name and renamed when complete (the label
image to ``<id>.ome.zarr.partial``; each Zarr chunk itself is written atomically). A tile's
record (``tiles/<id>/<row>_<col>.json``, with its measurements and outlines beside it) is
written after its labels; an interrupted run, run again with the same settings, keeps the
overview's statistics and factor it recorded (``tiles/<id>/plan.json``), clears what the
unfinished tile had written, and goes on from there. Once the image is complete its tile
folder is removed.

**Many big images, many machines.** The tiles of one image are independent until they are
stitched: :func:`segment_window` (normalise, predict, post-process one window) needs only the
window's pixels, the plan and the model, so :func:`nucseg_utils.distributed.predict_big_distributed`
(and ``nucseg predict --workers N`` / ``--scheduler``) gives each tile to a Dask worker while
this process plans the image, reads the windows, and stitches the labels that come back in
raster order, as above: the outputs are those of the serial run, byte for byte, whatever the
number of workers. A cluster of several machines::

    dask scheduler                                   # on one machine: prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 1 --nthreads 1    # on each machine, as many as wanted
    nucseg predict --scheduler tcp://HOST:8786 --images DIR --out OUT

(the workers need nucseg installed and must see ``DIR`` and ``OUT`` at the same paths: a shared
file system). On SLURM or PBS, ``dask-jobqueue`` (not a dependency of nucseg) starts the
workers as batch jobs: ``SLURMCluster(cores=4, memory="8GB", processes=1)`` then
``cluster.scale(jobs=10)``; pass its ``cluster.scheduler_address`` as the scheduler.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from . import export, postprocessing, runs, scale
from .data import DataError, modality_of
from .data import plane_layout as _layout
from .data import to_rgb_float
from .outputs import done_marker
from .preprocessing import CLIP, PERCENTILES, background_is_bright, haematoxylin_density
from .tta import predict as tta_predict

# the tile's window at the model's scale (px a side) when ``tile`` is automatic: one network
# pass of 1024 x 1024, as :func:`nucseg_utils.forward.predict_probabilities` tiles
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
CHUNK = 1024  # the label image's Zarr chunks (px a side)
FORMATS = ("ome-zarr", "measurements", "geojson")
PLACES = {"ome-zarr": ("labels", ".ome.zarr"), "measurements": ("measurements", ".csv"),
         "geojson": ("geojson", ".geojson")}
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_OME_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
_UM = {"micrometer": 1.0, "micron": 1.0, "nanometer": 1e-3, "millimeter": 1e3}


# --------------------------------------------------------------------------- reading lazily
class LazyImage:
    """A 2-D image read region by region: ``shape`` (H, W), ``channels`` (0 for a grey image)
    and :meth:`read` of a window in the file's own values, (h, w) or channels last (h, w, C),
    as :func:`nucseg_utils.predict.read_plane` would give it for the whole image (a z-stack or
    time series refused, alpha dropped, ``channel`` kept alone)."""

    def __init__(self, array, axes: str, name: str = "image", channel: int | None = None,
                 pixel_size: float | None = None, closing=None):
        shape = tuple(int(n) for n in array.shape)
        axis, keep, alpha = _layout(axes, shape, name, channel)
        self.array, self.name, self.pixel_size, self._closing = array, name, pixel_size, closing
        self.dtype = np.dtype(array.dtype)
        self.shape = (shape[axes.index("Y")], shape[axes.index("X")])
        n = shape[axes.index(axis)] if axis else 1
        self._index = {a: (0 if a not in "YX" and a != axis else None) for a in axes}
        self._axes, self._axis, self._keep, self._alpha = axes, axis, keep, alpha
        self.channels = 0 if keep is not None or n - alpha <= 1 else n - alpha

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The window [y0:y1, x0:x1]."""
        index, kept = [], []
        for a in self._axes:
            if a == "Y":
                index.append(slice(y0, y1))
            elif a == "X":
                index.append(slice(x0, x1))
            elif a == self._axis:
                index.append(slice(None) if self._keep is None else
                             slice(self._keep, self._keep + 1))
            else:
                index.append(0)
                continue
            kept.append(a)
        arr = np.asarray(self.array[tuple(index)])
        arr = np.transpose(arr, [kept.index(a) for a in "YX" + (self._axis or "")])
        if self._alpha and self._keep is None:
            arr = arr[..., :-1]
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        return np.ascontiguousarray(arr)

    def close(self):
        if self._closing is not None:
            self._closing.close()
            self._closing = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"LazyImage({self.name}: {self.shape[0]}x{self.shape[1]}, "
                f"{self.channels or 'grey'}{' channels' if self.channels else ''}, {self.dtype})")


def guess_axes(shape) -> str:
    """Axis letters (tifffile's) of a bare array: (H, W) ``YX``; (H, W, C <= 4) ``YXS``;
    (C <= 4, H, W) ``CYX``; any other 3-D ``QYX`` (planes or channels: the reader refuses
    it without a channel)."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXS" if shape[-1] <= 4 else "CYX" if shape[0] <= 4 else "QYX"
    return "Q" * (len(shape) - 2) + "YX"


def open_lazy(image, channel: int | None = None, name: str | None = None) -> LazyImage:
    """A :class:`LazyImage` of ``image``: a path of a TIFF (BigTIFF, OME-TIFF; the full
    resolution of a pyramid, through ``tifffile``'s Zarr store), of a Zarr array or of an
    OME-Zarr image (NGFF 0.4 or 0.5: its first dataset, its axes and pixel size); an open
    binary TIFF file (``name`` its file name); or an array-like (numpy, Zarr, Dask) of (H, W),
    (H, W, C) or (C, H, W). DataError naming the file for anything that is not one 2-D
    image."""
    if isinstance(image, LazyImage):
        return image
    if hasattr(image, "read") and hasattr(image, "seek"):
        if not str(name).lower().endswith(_TIFF_SUFFIXES):
            raise DataError(f"{name}: only a TIFF is read lazily from an open file")
        return _open_tiff(image, str(name), channel)
    if not isinstance(image, (str, os.PathLike)):
        shape = tuple(np.shape(image)) if not hasattr(image, "shape") else tuple(image.shape)
        return LazyImage(image, guess_axes(shape), name or "image", channel)
    path = Path(image)
    name = name or str(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    import zarr
    if path.is_file() and path.suffix.lower() in _TIFF_SUFFIXES:
        return _open_tiff(path, name, channel)
    if path.is_dir():
        try:
            node = zarr.open(str(path), mode="r")
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{name}: not a Zarr array or group ({type(err).__name__}: "
                            f"{err})") from None
        if isinstance(node, zarr.Array):
            return LazyImage(node, guess_axes(node.shape), name, channel)
        return _open_ome_zarr(node, name, channel)
    raise DataError(f"{name}: not a TIFF or Zarr image; a big image is read lazily from a "
                    f"TIFF/BigTIFF/OME-TIFF file or a Zarr/OME-Zarr folder")


def _open_tiff(file, name: str, channel) -> LazyImage:
    import tifffile
    import zarr
    try:
        tif = tifffile.TiffFile(file)
        series = tif.series[0]
        array = zarr.open(series.aszarr(level=0), mode="r")
        size = export.tiff_pixel_size(tif)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        raise DataError(f"{name}: cannot read the TIFF ({type(err).__name__}: {err})") \
            from None
    if isinstance(array, zarr.Group):  # a multi-level store: its full resolution
        array = array[sorted(array.array_keys(), key=lambda k: int(k))[0]]
    return LazyImage(array, series.axes, name, channel, size, closing=tif)


def _open_ome_zarr(group, name: str, channel) -> LazyImage:
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise DataError(f"{name}: a Zarr group without OME-Zarr 'multiscales' metadata; "
                        f"point at its image array instead")
    ms = multiscales[0]
    axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    dataset = ms["datasets"][0]
    array = group[dataset["path"]]
    letters = "".join(_OME_AXES.get(str(a).lower(), "Q") for a in axes) or \
        guess_axes(array.shape)
    size = None
    units = {a["name"]: a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict)}
    for t in dataset.get("coordinateTransformations", []):
        if t.get("type") == "scale" and "x" in axes and _UM.get(units.get("x")):
            size = float(t["scale"][axes.index("x")]) * _UM[units["x"]]
    return LazyImage(array, letters, name, channel, size)


# --------------------------------------------------------------------------- one statistic
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
        """:func:`nucseg_utils.preprocessing.normalize` of an RGB window with this image's
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


# --------------------------------------------------------------------------- the tiles
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


def largest_nucleus(config: dict) -> float:
    """The largest nucleus (px across at the model's scale) the overlap is made for."""
    return LARGEST_NUCLEUS * float(config.get("target_diameter") or DEFAULT_DIAMETER)


def default_overlap(config: dict, factor: float) -> int:
    """The overlap (native px): the largest expected nucleus, :data:`CONTEXT` and
    :data:`ALIGN` at the model's scale, in native pixels."""
    return int(math.ceil((largest_nucleus(config) + CONTEXT + ALIGN) / factor))


def seam_tolerance(config: dict, factor: float) -> float:
    """How far (native px) from a tile's core an object's centre may lie in an earlier tile's
    core for this tile to keep it (the earlier tile saw it centred here): half the model's
    nucleus diameter. Two tiles see a nucleus on their border alike, so its centre moves
    by less; an object centred further away is the earlier tile's, seen with more context."""
    return 0.5 * float(config.get("target_diameter") or DEFAULT_DIAMETER) / factor


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
    config = model.config
    if config.get("input_mode") == "resize":
        raise ValueError("tiled prediction needs a fully convolutional model (input_mode "
                         "'crop'); this one resizes every image to its input size")
    stride = overview_stride(lazy.shape)
    overview, value_range = read_overview(lazy, stride)
    stats = image_stats(overview, config.get("normalization", "percentile"), value_range)
    if stride == 1:
        factor = scale.estimate_factor(model, stats.normalise(stats.unit_rgb(overview)),
                                       config, tta)
    else:
        factor = _sampled_factor(model, lazy, stats, overview, stride, tta)
    del overview
    overlap = default_overlap(config, factor) if overlap is None else int(overlap)
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
        factors.append(scale.estimate_factor(model, window, model.config, tta))
    return float(np.exp(np.median(np.log(factors))))


# --------------------------------------------------------------------------- one window
@dataclass(frozen=True)
class Grid:
    """The whole image at the model's scale, as :func:`nucseg_utils.scale.rescale_image`
    makes it: (``rows``, ``cols``) model pixels for an image of (``height``, ``width``) native
    ones; model pixel j's centre at native coordinate (j + 0.5) x height / rows - 0.5 (the
    same on columns). ``factor`` 1 is the native grid itself."""
    height: int
    width: int
    factor: float

    @property
    def native(self) -> bool:
        return abs(self.factor - 1.0) < 1e-6

    @property
    def rows(self) -> int:
        return self.height if self.native else max(1, int(round(self.height * self.factor)))

    @property
    def cols(self) -> int:
        return self.width if self.native else max(1, int(round(self.width * self.factor)))

    def span(self, a: int, b: int, axis: int) -> tuple:
        """For native pixels [a, b) of one axis: the model pixels [j0, j1) the network sees
        for them (whole in [a, b), their ends on the grid's 32-px steps counted from the image's
        start and from its end, or at the image's edges) and the native pixels [e0, e1)
        those give probabilities for."""
        n, m = (self.height, self.rows) if axis == 0 else (self.width, self.cols)
        s = n / m  # native pixels per model pixel
        first = 0 if a == 0 else math.ceil((a + 0.5) / s - 0.5)
        last = m if b == n else math.floor((b - 0.5) / s - 0.5) + 1
        j0 = 0 if a == 0 else ALIGN * math.ceil(first / ALIGN)
        j1 = m if b == n else m - ALIGN * math.ceil((m - last) / ALIGN)
        if j1 <= j0:
            raise ValueError(f"a window of {b - a} px is too small for the network's "
                             f"{ALIGN}-px grid at factor {self.factor:.3g}: raise the tile "
                             f"or the overlap")
        e0 = 0 if j0 == 0 else math.ceil((j0 + 0.5) * s - 0.5)
        e1 = n if j1 == m else math.floor((j1 - 0.5) * s - 0.5) + 1
        return (j0, j1), (e0, e1)


def _resample(image: np.ndarray, step: tuple, start: tuple, shape: tuple) -> np.ndarray:
    """``image`` (H, W[, C]) sampled bilinearly (edges repeated) at rows start[0] + k step[0],
    columns start[1] + k step[1], for an output of ``shape`` (rows, cols)."""
    img = np.asarray(image, np.float32)
    extra = img.ndim - 2
    return ndi.affine_transform(img, np.array(list(step) + [1.0] * extra),
                                offset=list(start) + [0.0] * extra,
                                output_shape=tuple(shape) + img.shape[2:], order=1,
                                mode="nearest")


def predict_window(model, normalised: np.ndarray, window: tuple, grid: Grid,
                   tta: bool) -> tuple[np.ndarray, tuple]:
    """The probabilities of one normalised native window (y0, y1, x0, x1) of an image of
    ``grid``, predicted on the image's own model-scale grid (:class:`Grid`): the window's
    model pixels are interpolated from it as rescaling the whole image would (anti-aliased
    when shrinking), the network sees them with its 32-px steps where the whole image's are,
    and its probabilities are resized back as the whole image's would be. Returns (the
    probabilities, float16-rounded as :meth:`NucleusModel.predict_probabilities` gives them,
    and the native window (y0, y1, x0, x1) they cover, inside ``window``)."""
    y0, y1, x0, x1 = window
    (j0, j1), (e0, e1) = grid.span(y0, y1, 0)
    (k0, k1), (f0, f1) = grid.span(x0, x1, 1)
    if grid.native:
        x = normalised[j0 - y0:j1 - y0, k0 - x0:k1 - x0]
        prob = tta_predict(model, np.ascontiguousarray(x), model.config, tta=tta)
    else:
        sy, sx = grid.height / grid.rows, grid.width / grid.cols
        src = scale.antialias(normalised, grid.factor)
        x = _resample(src, (sy, sx), ((j0 + 0.5) * sy - 0.5 - y0, (k0 + 0.5) * sx - 0.5 - x0),
                      (j1 - j0, k1 - k0))
        del src
        q = tta_predict(model, x, model.config, tta=tta)
        prob = _resample(q, (1 / sy, 1 / sx), ((e0 + 0.5) / sy - 0.5 - j0,
                                               (f0 + 0.5) / sx - 0.5 - k0), (e1 - e0, f1 - f0))
        prob = np.clip(prob, 0.0, 1.0)
    return prob.astype(np.float16).astype(np.float32), (e0, e1, f0, f1)


# --------------------------------------------------------------------------- stitching
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


# --------------------------------------------------------------------------- outputs
def output_paths(out, sid: str, formats=FORMATS) -> dict[str, Path]:
    """{format: path} of the outputs of big image ``sid``."""
    return {f: Path(out) / PLACES[f][0] / f"{sid}{PLACES[f][1]}" for f in formats}


def work_dir(out, sid: str) -> Path:
    return Path(out) / "tiles" / sid


def _create_labels(path: Path, shape):
    import numcodecs
    import zarr
    if path.exists():
        shutil.rmtree(path)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=tuple(shape), chunks=(CHUNK, CHUNK), dtype="uint32",
                       fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"},
                       compressors=numcodecs.Blosc(cname="zstd", clevel=5,
                                                   shuffle=numcodecs.Blosc.BITSHUFFLE))
    return group


def _open_labels(path: Path):
    import zarr
    return zarr.open_group(str(path), mode="r+")["0"]


def _finish_labels(path: Path, sid: str, pixel_size: float | None):
    """The resolution pyramid (each level halved by nearest neighbour, block by block) and
    the OME-Zarr (NGFF 0.4) metadata of a finished label image."""
    import zarr
    group = zarr.open_group(str(path), mode="r+")
    level, prev = 0, group["0"]
    while max(prev.shape) > CHUNK:
        level += 1
        shape = tuple(math.ceil(n / 2) for n in prev.shape)
        arr = group.create_array(str(level), shape=shape, chunks=(CHUNK, CHUNK),
                                 dtype="uint32", fill_value=0, overwrite=True,
                                 chunk_key_encoding={"name": "v2", "separator": "/"},
                                 compressors=prev.compressors)
        for y in range(0, shape[0], CHUNK):
            for x in range(0, shape[1], CHUNK):
                arr[y:y + CHUNK, x:x + CHUNK] = prev[2 * y:2 * y + 2 * CHUNK:2,
                                                     2 * x:2 * x + 2 * CHUNK:2]
        prev = arr
    px = pixel_size or 1.0
    unit = {"unit": "micrometer"} if pixel_size else {}
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": sid,
        "axes": [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}],
        "datasets": [{"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [px * 2 ** k, px * 2 ** k]}]} for k in range(level + 1)],
        "type": "nearest",
        "metadata": {"description": "nucleus labels (0 background, 1..N nuclei) by nucseg"}}]
    group.attrs["image-label"] = {"version": "0.4"}


def geojson_features(labels: np.ndarray, names, offset=(0, 0)) -> list[str]:
    """One GeoJSON Feature (a JSON string) per object of ``labels`` (1..n, named by
    ``names[k - 1]``): its outline (:func:`nucseg_utils.export.nucleus_polygons`, shifted by
    ``offset`` (y, x)) as a closed Polygon in pixel coordinates (x right, y down, the image's
    top-left corner at 0, 0), a QuPath detection of class Nucleus."""
    oy, ox = offset
    out = []
    for k, xy in export.nucleus_polygons(labels):
        ring = [[round(float(x) + ox, 3), round(float(y) + oy, 3)] for x, y in xy]
        ring.append(ring[0])
        out.append(json.dumps({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "detection", "name": str(names[k - 1]),
                           "classification": {"name": "Nucleus", "color": [0, 200, 0]}}},
            separators=(",", ":")))
    return out


def _write_tile_parts(work: Path, tile: Tile, canvas: np.ndarray, given, plane, px,
                      sid: str, formats):
    """A tile's measurements and outlines (its kept nuclei, labels ``given``) as part files."""
    first, last = given
    wy0, _, wx0, _ = tile.window
    mine = (canvas >= first) & (canvas < last)
    local = np.where(mine, canvas.astype(np.int64) - first + 1, 0)
    names = np.arange(first, last)
    if "measurements" in formats:
        table = export.measure(local, plane, px)
        table["label"] = names[table["label"].to_numpy() - 1] if len(table) else \
            table["label"]
        for c, off in (("centroid_y", wy0), ("centroid_x", wx0), ("bbox_top", wy0),
                       ("bbox_bottom", wy0), ("bbox_left", wx0), ("bbox_right", wx0)):
            table[c] = table[c] + off
        if px is not None:
            table["centroid_y_um"] = table["centroid_y"] * px
            table["centroid_x_um"] = table["centroid_x"] * px
        table.insert(0, "image", sid)
        export.write_measurements(work / "measurements" / f"{tile.name}.csv", table)
    if "geojson" in formats:
        lines = geojson_features(local, names, (wy0, wx0))
        runs.write_text(work / "geojson" / f"{tile.name}.jsonl",
                        "".join(line + "\n" for line in lines))


def _assemble_measurements(work: Path, tiles, path: Path) -> pd.DataFrame | None:
    """``measurements/<id>.csv`` from the tiles' parts, one part at a time; returns the
    columns the summary needs (area and integrated intensities) or None."""
    keep = []
    with runs.atomic_path(path) as tmp, open(tmp, "w") as f:
        for i, t in enumerate(tiles):
            with open(work / "measurements" / f"{t.name}.csv") as part:
                header = part.readline()
                if i == 0:
                    f.write(header)
                shutil.copyfileobj(part, f)
            cols = [c for c in header.strip().split(",")
                    if c in ("area", "area_um2") or c.startswith("integrated_intensity_")]
            keep.append(pd.read_csv(work / "measurements" / f"{t.name}.csv", usecols=cols))
    return pd.concat(keep, ignore_index=True)


def _assemble_geojson(work: Path, tiles, path: Path):
    """``geojson/<id>.geojson``, one FeatureCollection, streamed from the tiles' parts."""
    with runs.atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write('{"type":"FeatureCollection","features":[\n')
        first = True
        for t in tiles:
            with open(work / "geojson" / f"{t.name}.jsonl") as part:
                for line in part:
                    f.write(("" if first else ",\n") + line.rstrip("\n"))
                    first = False
        f.write("\n]}\n")


def _summary_row(sid: str, shape, table: pd.DataFrame | None, nuclei: int,
                 covered: int) -> dict:
    """The image's summary row (:func:`nucseg_utils.export.summary_row`'s columns) from the
    streamed measurements."""
    h, w = shape
    row = {"id": sid, "height": int(h), "width": int(w), "nuclei": int(nuclei),
           "mean_area": math.nan, "median_area": math.nan,
           "area_fraction": covered / float(h * w) if h * w else 0.0,
           "mean_intensity": math.nan}
    if table is not None and len(table):
        row["mean_area"] = float(table["area"].mean())
        row["median_area"] = float(table["area"].median())
        intensity = table[[c for c in table if c.startswith("integrated_intensity_")]]
        row["mean_intensity"] = float(intensity.to_numpy().sum() /
                                      (table["area"].sum() * max(1, intensity.shape[1])))
        if "area_um2" in table:
            row["mean_area_um2"] = float(table["area_um2"].mean())
            row["median_area_um2"] = float(table["area_um2"].median())
    return row


# --------------------------------------------------------------------------- one big image
@dataclass
class BigResult:
    """What :func:`predict_big` did: the outputs, the plan (its ``tiles()`` are where the
    seams are), the summary row, and whether it was done before."""
    sid: str
    paths: dict
    plan: Plan | None
    summary: dict
    skipped: bool = False
    tiles_done_before: int = 0
    notes: list = field(default_factory=list)


def _log_stderr(message: str):
    tqdm.write(message, file=sys.stderr)


def predict_big(model, image, out, *, sid: str | None = None, tile: int | None = None,
                overlap: int | None = None, tta: bool | None = None, method: str | None = None,
                channel: int | None = None, pixel_size: float | None = None,
                formats=FORMATS, overwrite: bool = False, progress: bool = True,
                log=_log_stderr, windows=None) -> BigResult:
    """Segment one big image tile by tile into ``out`` (see the module docstring for the
    outputs, the seam rules, the memory bound and resuming).

    ``image``: a path or an array-like (:func:`open_lazy`); ``sid``: its id in the output
    names (default: the file's name without its suffixes, or ``image``); ``tile``, ``overlap``:
    the core and the overlap in native pixels (None: automatic, from the model's nucleus size
    and the image's factor); ``tta``, ``method``: None is the model's setting; ``pixel_size``
    (micrometres) overrides the one the file records; ``formats``: of :data:`FORMATS`
    (``ome-zarr`` is always written: the tiles are stitched in it). A rerun of a complete
    image does nothing unless ``overwrite``. ``windows``: who segments the tiles (a function
    of (model, lazy image, plan, tiles, method, tta) that yields what :func:`serial_windows`
    yields, in its order; default that one, in this process;
    :func:`nucseg_utils.distributed.predict_big_distributed` gives them to Dask workers). The
    plan (statistics, factor) and the stitching stay in this process: the outputs are the
    same whoever segments the tiles."""
    out = Path(out)
    tta = model.settings.tta if tta is None else bool(tta)
    method = method or model.settings.postprocess
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown big-image format(s) {', '.join(sorted(unknown))}; choose "
                         f"from {', '.join(FORMATS)}")
    formats = tuple(f for f in FORMATS if f in set(formats) | {"ome-zarr"})
    with open_lazy(image, channel) as lazy:
        sid = sid or (Path(image).name.split(".")[0] if isinstance(image, (str, os.PathLike))
                      else "image")
        paths = output_paths(out, sid, formats)
        marker = done_marker(out, sid)
        if marker.exists() and not overwrite:
            made = runs.read_json(marker)
            if set(formats) <= set(made.get("formats", [])) and \
                    all(p.exists() for p in paths.values()):
                return BigResult(sid, paths, None, made["summary"], skipped=True)
        px = export.check_pixel_size(pixel_size) or lazy.pixel_size
        settings = {"model_fingerprint": model.fingerprint, "engine": model.engine,
                    "tta": tta, "postprocess": method, "channel": channel,
                    "tile": tile, "overlap": overlap, "formats": list(formats),
                    "shape": list(lazy.shape), "config": _jsonable(model.config)}
        work = work_dir(out, sid)
        labels_tmp = paths["ome-zarr"].with_name(paths["ome-zarr"].name + ".partial")
        plan = _resume_plan(work, settings, labels_tmp) if not overwrite else None
        if plan is None:
            if work.exists():
                shutil.rmtree(work)
            marker.unlink(missing_ok=True)
            plan = make_plan(model, lazy, settings, tile, overlap, tta)
            _create_labels(labels_tmp, lazy.shape)
            runs.write_json(work / "plan.json", plan.to_json())
        result = _run_tiles(model, lazy, plan, work, labels_tmp, sid, method, tta, px,
                            formats, progress, log, windows)
        result.paths = paths
        _finish(out, sid, plan, work, labels_tmp, paths, px, formats, lazy, result, log)
    return result


def _jsonable(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str))


def _resume_plan(work: Path, settings: dict, labels_tmp: Path) -> Plan | None:
    """The plan of an interrupted run with the same settings, or None (start afresh)."""
    path = work / "plan.json"
    if not (path.exists() and labels_tmp.exists()):
        return None
    plan = Plan.from_json(runs.read_json(path))
    return plan if plan.settings == settings else None


def _run_tiles(model, lazy, plan: Plan, work: Path, labels_tmp: Path, sid, method, tta, px,
               formats, progress, log, windows=None) -> BigResult:
    tiles = plan.tiles()
    rows, cols = tiles[-1].row + 1, tiles[-1].col + 1
    if tta and model.config.get("tta_scales"):
        raise ValueError("tiled prediction does not do test-time scaling (tta_scales): "
                         "predict with tta=False or a model without tta_scales")
    canvas = _open_labels(labels_tmp)
    min_size = int(postprocessing.settings(model.config)["min_size"])
    tolerance = seam_tolerance(model.config, plan.factor)
    records = {t.index: runs.read_json(work / f"{t.name}.json") for t in tiles
               if (work / f"{t.name}.json").exists()}
    done_before = len(records)
    next_label = 1 + max((r["labels"][1] - 1 for r in records.values()), default=0)
    result = BigResult(sid, {}, plan, {}, tiles_done_before=done_before)
    needed = math.ceil((largest_nucleus(model.config) + ALIGN) / plan.factor)
    if plan.overlap < needed:
        result.notes.append(f"{lazy.name}: an overlap of {plan.overlap} px is less than the "
                            f"largest nucleus the model expects plus the network's grid "
                            f"alignment at this image's scale ({needed} px): larger nuclei "
                            f"are dropped at tile borders")
        log(result.notes[-1])
    todo = [t for t in tiles if t.index not in records]
    if todo:  # an interrupted tile may have written some of its chunks: clear them
        y0, y1, x0, x1 = todo[0].window
        win = canvas[y0:y1, x0:x1]
        if (win >= next_label).any():
            canvas[y0:y1, x0:x1] = np.where(win >= next_label, 0, win).astype(np.uint32)
    bar = tqdm(total=len(todo), desc=f"{sid} tiles{' (TTA)' if tta else ''}", unit="tile",
               disable=not progress)
    segmented = (windows or serial_windows)(model, lazy, plan, todo, method, tta)
    for t, plane, lab, seen in segmented:
        y0, _, x0, _ = t.window
        ey0, ey1, ex0, ex1 = seen
        plane = plane[ey0 - y0:ey1 - y0, ex0 - x0:ex1 - x0]
        seen_tile = dataclasses.replace(t, window=seen)
        win, given, too_large = stitch_tile(lab, canvas[ey0:ey1, ex0:ex1], seen_tile,
                                            (rows, cols), plan.tile, plan.shape, next_label,
                                            min_size, tolerance)
        canvas[ey0:ey1, ex0:ex1] = win
        _write_tile_parts(work, seen_tile, win, given, plane, px, sid, formats)
        runs.write_json(work / f"{t.name}.json",
                        {"labels": list(given), "too_large": too_large,
                         "covered": int(((win >= given[0]) & (win < given[1])).sum())})
        next_label = given[1]
        bar.update()
    bar.close()
    return result


def segment_window(model, plane: np.ndarray, tile: Tile, plan: Plan, method: str,
                   tta: bool) -> tuple[np.ndarray, tuple]:
    """One tile's window ``plane`` (its pixels in the file's values) normalised with the
    image's statistics, predicted on the image's grid at its factor (:func:`predict_window`)
    and post-processed: (its labels, the native window (y0, y1, x0, x1) they cover). It
    depends on nothing but its arguments, so it runs wherever the model is: in this process
    (:func:`serial_windows`) or on a Dask worker
    (:func:`nucseg_utils.distributed.cluster_windows`), with the same result."""
    grid = Grid(plan.shape[0], plan.shape[1], plan.factor)
    x = plan.stats.normalise(plan.stats.unit_rgb(plane))
    prob, seen = predict_window(model, x, tile.window, grid, tta)
    del x
    return model.postprocess(prob, method), seen


def serial_windows(model, lazy: LazyImage, plan: Plan, todo, method: str, tta: bool):
    """The tiles ``todo`` segmented one after the other in this process: (tile, its
    window's pixels, labels, the window they cover), in the order of ``todo``. The stitching
    takes them in that order whoever segments them (``windows`` of :func:`predict_big`)."""
    for t in todo:
        plane = lazy.read(*t.window)
        lab, seen = segment_window(model, plane, t, plan, method, tta)
        yield t, plane, lab, seen


def _finish(out, sid, plan: Plan, work: Path, labels_tmp: Path, paths, px, formats, lazy,
            result: BigResult, log):
    """Assemble the outputs from the tiles, rename them into place, write the done-marker and
    remove the tile folder."""
    tiles = plan.tiles()
    records = [runs.read_json(work / f"{t.name}.json") for t in tiles]
    nuclei = sum(r["labels"][1] - r["labels"][0] for r in records)
    too_large = sum(r["too_large"] for r in records)
    covered = sum(r["covered"] for r in records)
    table = None
    if "measurements" in formats:
        table = _assemble_measurements(work, tiles, paths["measurements"])
    if "geojson" in formats:
        _assemble_geojson(work, tiles, paths["geojson"])
    _finish_labels(labels_tmp, sid, px)
    final = paths["ome-zarr"]
    if final.exists():
        shutil.rmtree(final)
    os.replace(labels_tmp, final)
    row = _summary_row(sid, plan.shape, table, nuclei, covered)
    row.update({"pixel_size_um": px, "file": lazy.name, "tiles": len(tiles),
                "tile": plan.tile, "overlap": plan.overlap, "factor": plan.factor,
                "too_large": too_large})
    if too_large:
        result.notes.append(f"{lazy.name}: {too_large} object(s) larger than the overlap "
                            f"({plan.overlap} px) reached a tile's edge and were dropped; "
                            f"segment it with a larger overlap")
        log(result.notes[-1])
    runs.write_json(done_marker(out, sid), {"formats": list(formats), "summary": row,
                                            "big": True})
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):  # the tiles' folder, once no image is left in it
        work.parent.rmdir()
    result.summary = row
