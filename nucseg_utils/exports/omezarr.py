"""Export, the chunked formats: an image and its nuclei as OME-Zarr, the labels as a pyramidal
OME-TIFF, and an overview overlay, written block by block so that memory is bounded by a
block whatever the image's size.

In: a label image held in a Zarr array (the store :mod:`nucseg_utils.big` stitches its tiles
into) or in memory, and the image it was made from as a *reader*: anything with ``shape``
(H, W) and ``read(y0, y1, x0, x1)`` giving that window as (h, w) or channels last (h, w, C)
(:class:`nucseg_utils.big.lazy.LazyImage`, or :class:`ArrayReader` of an array).
Out:

- ``<id>.ome.zarr`` (OME-NGFF 0.4, Zarr format 2, chunks of :data:`CHUNK` px, zstd): the
  image at its root (axes ``c, y, x`` or ``y, x``, its resolution pyramid made by taking every
  second pixel until it fits :data:`CHUNK`) and the nuclei under it, at ``labels/nuclei``
  (uint32, 0 the background, 1..N one nucleus each; ``image-label`` metadata pointing at the
  image), as OME-Zarr readers (napari's, ome-zarr-py, QuPath's) expect;
- :func:`write_pyramid_tiff`: the labels as a tiled BigTIFF OME-TIFF with its pyramid in
  SubIFDs (uint16 up to 65535 nuclei, else uint32) that Fiji (Bio-Formats) and QuPath open;
- :func:`write_overview_overlay`: the image with its nuclei outlined, downsampled by a power of
  two until its longer side is at most :data:`OVERLAY_SIDE` pixels.

The pixel size, when known, is the scale of every level (micrometres) and the OME-TIFF's
``PhysicalSizeX/Y``.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from skimage.segmentation import find_boundaries

from nucseg_utils.core import runs
from nucseg_utils.exports.files import OUTLINE, display_rgb

__all__ = ["CHUNK", "LABELS", "OVERLAY_SIDE", "ArrayReader", "create_store", "finish_store",
           "label_levels", "open_labels", "write_ome_zarr", "write_overview_overlay",
           "write_pyramid_tiff"]

CHUNK = 1024        # chunks of every array (px a side), and the smallest pyramid level
LABELS = "labels/nuclei"  # where the label image sits inside an image's OME-Zarr
OVERLAY_SIDE = 4096  # the longest side of an overview overlay (px)
_TIFF_TILE = 512    # the OME-TIFF's tiles (px a side; a multiple of 16)


class ArrayReader:
    """A reader (see the module docstring) of an array held in memory."""

    def __init__(self, array):
        self.array = np.asarray(array)
        self.shape = self.array.shape[:2]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.array[y0:y1, x0:x1]


def _compressor():
    import numcodecs
    return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)


def _new_array(group, name: str, shape, dtype):
    chunks = (1,) * (len(shape) - 2) + (CHUNK, CHUNK)
    return group.create_array(name, shape=tuple(shape), chunks=chunks, dtype=dtype,
                              fill_value=0, overwrite=True, compressors=_compressor(),
                              chunk_key_encoding={"name": "v2", "separator": "/"})


def create_store(path: Path, shape):
    """A new ``<id>.ome.zarr`` at ``path`` (anything there removed) with an empty label image
    of ``shape`` (H, W) at :data:`LABELS`; returns that array, to be filled."""
    import zarr
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    return _new_array(root.require_group(LABELS), "0", shape, "uint32")


def open_labels(path: Path):
    """The full-resolution label array of a store made by :func:`create_store`."""
    import zarr
    return zarr.open_group(str(path), mode="r+")[f"{LABELS}/0"]


def label_levels(path: Path) -> list:
    """The label image's pyramid levels of a finished store, full resolution first."""
    import zarr
    group = zarr.open_group(str(path), mode="r")[LABELS]
    return [group[str(k)] for k in range(len(list(group.array_keys())))]


def _pyramid(group, first) -> int:
    """Levels 1, 2, ... of ``group`` below its array ``first`` (level 0), each taking every
    second pixel of the one above, block by block, until the longer side fits :data:`CHUNK`;
    returns the number of levels after the first."""
    level, prev = 0, first
    while max(prev.shape[-2:]) > CHUNK:
        level += 1
        shape = prev.shape[:-2] + tuple(math.ceil(n / 2) for n in prev.shape[-2:])
        arr = _new_array(group, str(level), shape, prev.dtype)
        for y in range(0, shape[-2], CHUNK):
            for x in range(0, shape[-1], CHUNK):
                arr[..., y:y + CHUNK, x:x + CHUNK] = \
                    prev[..., 2 * y:2 * y + 2 * CHUNK:2, 2 * x:2 * x + 2 * CHUNK:2]
        prev = arr
    return level


def _multiscales(name: str, axes: list[dict], levels: int, pixel_size, description: str):
    px = pixel_size or 1.0
    lead = [1.0] * (len(axes) - 2)
    return [{"version": "0.4", "name": name, "axes": axes,
             "datasets": [{"path": str(k), "coordinateTransformations": [
                 {"type": "scale", "scale": lead + [px * 2 ** k, px * 2 ** k]}]}
                 for k in range(levels + 1)],
             "type": "nearest", "metadata": {"description": description}}]


def _space_axes(pixel_size) -> list[dict]:
    unit = {"unit": "micrometer"} if pixel_size else {}
    return [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}]


def _copy_image(root, reader):
    """The image of ``reader`` at the store's root (level 0), block by block: (y, x) for a grey
    image, (c, y, x) for one with channels."""
    h, w = reader.shape
    probe = np.asarray(reader.read(0, 1, 0, 1))
    shape = (h, w) if probe.ndim == 2 else (probe.shape[-1], h, w)
    arr = _new_array(root, "0", shape, probe.dtype)
    for y in range(0, h, CHUNK):
        for x in range(0, w, CHUNK):
            block = np.asarray(reader.read(y, min(y + CHUNK, h), x, min(x + CHUNK, w)))
            arr[..., y:y + block.shape[0], x:x + block.shape[1]] = \
                block if block.ndim == 2 else np.moveaxis(block, -1, 0)
    return arr


def finish_store(path: Path, sid: str, pixel_size: float | None, reader=None):
    """Complete a store whose label image is filled: the labels' pyramid and metadata and,
    with ``reader``, the image at the root with its pyramid and metadata."""
    import zarr
    root = zarr.open_group(str(path), mode="r+")
    group = root[LABELS]
    levels = _pyramid(group, group["0"])
    group.attrs["multiscales"] = _multiscales(
        "nuclei", _space_axes(pixel_size), levels, pixel_size,
        "nucleus labels (0 background, 1..N nuclei) by nucseg")
    group.attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
    root["labels"].attrs["labels"] = ["nuclei"]
    if reader is not None:
        first = _copy_image(root, reader)
        axes = _space_axes(pixel_size)
        if first.ndim == 3:
            axes = [{"name": "c", "type": "channel"}] + axes
        root.attrs["multiscales"] = _multiscales(sid, axes, _pyramid(root, first), pixel_size,
                                                 "the image nucseg segmented")


def write_ome_zarr(path, labels: np.ndarray, image: np.ndarray | None, sid: str,
                   pixel_size: float | None = None) -> Path:
    """An image held in memory and its labels as ``<id>.ome.zarr`` (see the module
    docstring), written under a temporary name and renamed when complete."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    create_store(partial, np.shape(labels))[...] = np.asarray(labels, np.uint32)
    finish_store(partial, sid, pixel_size, None if image is None else ArrayReader(image))
    if path.exists():
        shutil.rmtree(path)
    partial.replace(path)
    return path


def _tiles(level, dtype):
    """The level's tiles of :data:`_TIFF_TILE` px in row-major order, padded at the edges."""
    h, w = level.shape
    t = _TIFF_TILE
    for y in range(0, h, t):
        for x in range(0, w, t):
            block = np.asarray(level[y:y + t, x:x + t], dtype)
            if block.shape != (t, t):
                block = np.pad(block, ((0, t - block.shape[0]), (0, t - block.shape[1])))
            yield block


def write_pyramid_tiff(path, levels: list, nuclei: int, pixel_size: float | None = None) -> Path:
    """The label image's ``levels`` (:func:`label_levels`) as a tiled BigTIFF OME-TIFF, the
    reduced levels in SubIFDs, atomically (uint16 when ``nuclei`` fit, else uint32)."""
    dtype = np.uint16 if nuclei <= 65535 else np.uint32
    meta = {"axes": "YX"}
    extra = {}
    if pixel_size:
        meta.update(PhysicalSizeX=pixel_size, PhysicalSizeXUnit="µm",
                    PhysicalSizeY=pixel_size, PhysicalSizeYUnit="µm")
        extra = {"resolution": (1e4 / pixel_size, 1e4 / pixel_size),
                 "resolutionunit": "CENTIMETER"}
    with runs.atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for k, level in enumerate(levels):
            kw = {"subifds": len(levels) - 1, "metadata": meta, **extra} if k == 0 else \
                {"subfiletype": 1}
            tif.write(_tiles(level, dtype), shape=tuple(level.shape), dtype=dtype,
                      tile=(_TIFF_TILE, _TIFF_TILE), compression="zlib", **kw)
    return Path(path)


def write_overview_overlay(path, reader, levels: list) -> tuple[Path, int]:
    """The image with its nuclei outlined, at the first pyramid level whose longer side is at
    most :data:`OVERLAY_SIDE` px (the image read block by block, every 2**k-th pixel), as a
    PNG, atomically; returns (the path, the downsampling 2**k)."""
    k = next((i for i, lv in enumerate(levels) if max(lv.shape) <= OVERLAY_SIDE),
             len(levels) - 1)
    step = 2 ** k
    labels = np.asarray(levels[k][...])
    h, w = reader.shape
    block = max(CHUNK, step) // step * step
    rows = []
    for y in range(0, h, block):
        rows.append(np.concatenate(
            [np.asarray(reader.read(y, min(y + block, h), x, min(x + block, w)))[::step, ::step]
             for x in range(0, w, block)], axis=1))
    rgb = display_rgb(np.concatenate(rows, axis=0))
    rgb[find_boundaries(labels, mode="inner")] = OUTLINE
    with runs.atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb, extension=".png")
    return Path(path), step
