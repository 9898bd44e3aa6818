"""Big images, stage 1: reading one image lazily.

In: a path (:func:`open_lazy`: TIFF, BigTIFF, OME-TIFF, pyramidal or not, through
``tifffile``'s Zarr store; a Zarr array or an OME-Zarr image) or an array-like (a numpy, Zarr
or Dask array) of (H, W) or (H, W, C).
Out: a :class:`LazyImage`: its 2-D plane's shape, axes and pixel size, and any window of it read
on demand, never the whole image.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nucseg_utils.data.dsb import DataError, describe_channel, tiff_channel_names
from nucseg_utils.data.dsb import plane_layout as _layout
from nucseg_utils.exports import files as export

__all__ = ["LazyImage", "guess_axes", "open_lazy"]


_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")


_OME_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


_UM = {"micrometer": 1.0, "micron": 1.0, "nanometer": 1e-3, "millimeter": 1e3}


class LazyImage:
    """A 2-D image read region by region: ``shape`` (H, W), ``channels`` (0 for a grey image)
    and :meth:`read` of a window in the file's own values, (h, w) or channels last (h, w, C),
    as :func:`nucseg_utils.predict.read_plane` would give it for the whole image (a z-stack or
    time series refused, alpha dropped, ``channel`` kept alone)."""

    def __init__(self, array, axes: str, name: str = "image", channel: int | None = None,
                 pixel_size: float | None = None, closing=None, names=None):
        shape = tuple(int(n) for n in array.shape)
        axis, keep, alpha = _layout(axes, shape, name, channel, names)
        self.array, self.name, self.pixel_size, self._closing = array, name, pixel_size, closing
        self.dtype = np.dtype(array.dtype)
        self.shape = (shape[axes.index("Y")], shape[axes.index("X")])
        n = shape[axes.index(axis)] if axis else 1
        self._index = {a: (0 if a not in "YX" and a != axis else None) for a in axes}
        self._axes, self._axis, self._keep, self._alpha = axes, axis, keep, alpha
        self.channels = 0 if keep is not None or n - alpha <= 1 else n - alpha
        # the channel segmented, as the summary says it ("" for a grey or colour image)
        self.channel_used = describe_channel(axis, keep, names)

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
    (C <= 4, H, W) ``SYX`` (colour, channels first); any other 3-D ``QYX`` (planes or
    channels: the reader refuses it without a channel)."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXS" if shape[-1] <= 4 else "SYX" if shape[0] <= 4 else "QYX"
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
        names = tiff_channel_names(tif)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        raise DataError(f"{name}: cannot read the TIFF ({type(err).__name__}: {err})") \
            from None
    if isinstance(array, zarr.Group):  # a multi-level store: its full resolution
        array = array[sorted(array.array_keys(), key=lambda k: int(k))[0]]
    return LazyImage(array, series.axes, name, channel, size, closing=tif, names=names)


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
