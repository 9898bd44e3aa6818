"""Export: the files a bio-image user opens after segmentation (Fiji, napari, a spreadsheet).

In: an instance label image (H, W) (0 = background, 1..N = nuclei), the image it was made from
as read from its file (grey (H, W) or channels last (H, W, C), in the file's own units), and,
when known, the pixel size in micrometres.
Out:

- :func:`measure`: one row per nucleus (``skimage.measure.regionprops_table``): centroid,
  bounding box, area, perimeter, equivalent diameter, eccentricity, solidity, mean and
  integrated intensity per channel, in pixels; with a pixel size also ``*_um`` / ``area_um2``;
- :func:`geojson_features`: the outlines as GeoJSON Features with an ``id`` and QuPath
  ``measurements``, for QuPath's *File > Import objects*;
- :func:`summary_row`: one row per image (count, mean and median area, area covered, intensity);
- :func:`write_label_tiff`: the labels as an ImageJ TIFF (uint16; int32 beyond 65535 nuclei)
  carrying the pixel size, for Fiji and napari;
- :func:`write_roi_zip`: an ImageJ ROI set, one polygon per nucleus named by its label, for
  Fiji's ROI Manager;
- :func:`write_overlay_png`: the image with every nucleus outlined;
- :func:`read_pixel_size`: the pixel size recorded in a TIFF, or None.

**One pixel convention** in every file: coordinates are in pixels with the image's top-left
corner at (0, 0), x to the right and y down, so that the pixel in row r and column c covers
[c, c+1) x [r, r+1) and its centre is at (c + 0.5, r + 0.5). That is ImageJ's, QuPath's and
GeoJSON's convention: a centroid in the measurements table, the centroid of the same nucleus's
ROI in Fiji and of its GeoJSON polygon agree (scikit-image puts pixel centres at integers;
:func:`measure` adds the half pixel). Bounding boxes are pixel edges (top/left inclusive,
bottom/right exclusive as indices), which is the same thing in both conventions.

Every file is written atomically (:func:`nucseg_utils.core.runs.atomic_path`): a file that exists is
complete.
"""
from __future__ import annotations

import json
import math
import uuid
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import tifffile
from roifile import ImagejRoi, roiwrite
from scipy import ndimage as ndi
from skimage.measure import find_contours, regionprops_table
from skimage.segmentation import find_boundaries

from nucseg_utils.core import runs
from nucseg_utils.data.dsb import to_rgb_float

OUTLINE = (0, 255, 0)  # overlay outline colour: green shows on dark and on stained images

# every file nucseg writes for an image, by name (``nucseg predict --formats``), and where:
# (folder, suffix) of ``<out>/<folder>/<id><suffix>``
PLACES = {"labels-png": ("labels", ".png"), "tiff": ("labels", ".tif"),
          "rois": ("rois", ".zip"), "overlay": ("overlays", ".png"),
          "measurements": ("measurements", ".csv"), "ome-zarr": ("labels", ".ome.zarr"),
          "geojson": ("geojson", ".geojson")}
FORMATS = tuple(PLACES)


def output_paths(out, sid: str, formats=FORMATS) -> dict[str, Path]:
    """{format: path} of the files written for image ``sid`` in ``out``."""
    return {f: Path(out) / PLACES[f][0] / f"{sid}{PLACES[f][1]}" for f in formats}

_PROPERTIES = ("label", "centroid", "bbox", "area", "perimeter", "equivalent_diameter_area",
               "eccentricity", "solidity", "intensity_mean")
_NAMES = {"centroid-0": "centroid_y", "centroid-1": "centroid_x", "bbox-0": "bbox_top",
          "bbox-1": "bbox_left", "bbox-2": "bbox_bottom", "bbox-3": "bbox_right",
          "equivalent_diameter_area": "equivalent_diameter"}
_LENGTHS = ("centroid_y", "centroid_x", "perimeter", "equivalent_diameter")

# micrometres per unit, for the unit names TIFF writers use (ImageJ writes "micron")
_UNITS = {"um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0,
          "micrometer": 1.0, "micrometre": 1.0, "micrometers": 1.0, "micrometres": 1.0,
          "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "mm": 1e3, "millimeter": 1e3,
          "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4, "m": 1e6}
# TIFF ResolutionUnit -> micrometres; INCH is left out on purpose: it is the 72/96/300 dpi
# that office and screen software stamps on every file, not a microscope's calibration
_RESOLUTION_UNITS = {3: 1e4, 4: 1e3, 5: 1.0}  # CENTIMETER, MILLIMETER, MICROMETER


def check_pixel_size(pixel_size) -> float | None:
    """``pixel_size`` as a float (micrometres per pixel), None for None; ValueError unless it
    is a finite number > 0."""
    if pixel_size is None:
        return None
    try:
        value = float(pixel_size)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"pixel size must be a positive number of micrometres per pixel, "
                         f"got {pixel_size}")
    return value


def _channels_last(image, shape) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[:2] != tuple(shape):
        raise ValueError(f"image of shape {np.shape(image)} does not match labels of shape "
                         f"{tuple(shape)}")
    return img.astype(np.uint8) if img.dtype == bool else img


def measure(labels: np.ndarray, image: np.ndarray, pixel_size: float | None = None):
    """One row per nucleus of ``labels``, measured with ``regionprops_table``.

    Lengths and areas are in pixels (the centroid and bounding box in the module's pixel
    convention: a pixel's centre at +0.5, the box's edges at pixel edges); ``mean_intensity_<c>`` and
    ``integrated_intensity_<c>`` (the sum of the pixel values) are per channel of ``image``, in
    its own units. With ``pixel_size`` (micrometres) the table also has ``centroid_y_um``,
    ``centroid_x_um``, ``area_um2``, ``perimeter_um`` and ``equivalent_diameter_um``. An image
    with no nuclei gives an empty table with the same columns."""
    px = check_pixel_size(pixel_size)
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be an integer image, got {lab.dtype}")
    img = _channels_last(image, lab.shape)
    table = pd.DataFrame(regionprops_table(lab, img, properties=_PROPERTIES))
    table = table.rename(columns=_NAMES)
    table["area"] = table["area"].astype(np.int64)
    table["centroid_y"] += 0.5  # pixel centres at +0.5, as ImageJ, QuPath and GeoJSON
    table["centroid_x"] += 0.5
    for c in range(img.shape[-1]):
        mean = table.pop(f"intensity_mean-{c}")
        table[f"mean_intensity_{c}"] = mean
        table[f"integrated_intensity_{c}"] = mean * table["area"]
    if px is not None:
        for name in _LENGTHS:
            table[f"{name}_um"] = table[name] * px
        table["area_um2"] = table["area"] * px * px
    return table


def summary_row(image_id: str, table, labels: np.ndarray, image: np.ndarray) -> dict:
    """One row for the per-image summary: size, number of nuclei, their mean and median area
    (pixels; also in square micrometres when ``table`` has ``area_um2``), the fraction of the
    image they cover and the mean intensity of their pixels (all channels; NaN if none)."""
    lab = np.asarray(labels)
    inside = lab > 0
    area = table["area"]
    row = {"id": image_id, "height": int(lab.shape[0]), "width": int(lab.shape[1]),
           "nuclei": int(len(table)),
           "mean_area": float(area.mean()) if len(table) else math.nan,
           "median_area": float(area.median()) if len(table) else math.nan,
           "area_fraction": float(inside.mean()) if lab.size else 0.0,
           "mean_intensity": (float(_channels_last(image, lab.shape)[inside].mean())
                              if inside.any() else math.nan)}
    if "area_um2" in table:
        row["mean_area_um2"] = float(table["area_um2"].mean()) if len(table) else math.nan
        row["median_area_um2"] = float(table["area_um2"].median()) if len(table) else math.nan
    return row


def write_measurements(path, table) -> Path:
    """Write a measurement table as CSV, atomically."""
    with runs.atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    return Path(path)


def write_label_tiff(path, labels: np.ndarray, pixel_size: float | None = None) -> Path:
    """The labels as a TIFF that Fiji and napari open: an ImageJ uint16 TIFF, with the pixel
    size in micrometres as its resolution when known. Beyond 65535 nuclei (ImageJ has no
    32-bit integer images) a plain int32 TIFF, its resolution in pixels per centimetre."""
    px = check_pixel_size(pixel_size)
    lab = np.asarray(labels)
    if lab.size and int(lab.max()) > 65535:
        kwargs = {"resolution": (1e4 / px, 1e4 / px), "resolutionunit": "CENTIMETER"} \
            if px else {}
        data = lab.astype(np.int32)
    else:
        kwargs = {"imagej": True}
        if px:
            kwargs.update(resolution=(1 / px, 1 / px), metadata={"unit": "um"})
        data = lab.astype(np.uint16)
    with runs.atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib", **kwargs)
    return Path(path)


def read_pixel_size(path) -> float | None:
    """The pixel size (micrometres) recorded in a TIFF file (a path or a binary file object):
    ImageJ's resolution and ``unit``, an OME-TIFF's ``PhysicalSizeX``, or a resolution in
    pixels per centimetre, millimetre or micrometre. None for other files and when the TIFF
    records none (a resolution in dots per inch is not taken for a calibration)."""
    if isinstance(path, (str, Path)) and Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    with tifffile.TiffFile(path) as tif:
        return tiff_pixel_size(tif)


def tiff_pixel_size(tif) -> float | None:
    """The pixel size (micrometres) of an open ``tifffile.TiffFile``, or None."""
    if tif.is_ome:
        size = _ome_pixel_size(tif.ome_metadata)
        if size is not None:
            return size
    page = tif.pages.first
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    per_unit = num / den if den else 0.0
    if per_unit <= 0:
        return None
    unit = (tif.imagej_metadata or {}).get("unit") if tif.is_imagej else None
    if unit:
        factor = _UNITS.get(str(unit).strip().lower())
    else:
        factor = _RESOLUTION_UNITS.get(int(page.tags["ResolutionUnit"].value)
                                       if "ResolutionUnit" in page.tags else 2)
    return None if factor is None else factor / per_unit


def _ome_pixel_size(xml: str | None) -> float | None:
    try:
        root = ET.fromstring(xml or "")
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
            factor = _UNITS.get(el.get("PhysicalSizeXUnit", "µm").strip().lower())
            size = float(el.get("PhysicalSizeX"))
            return factor * size if factor and size > 0 else None
    return None


def _polygon_area(yx: np.ndarray) -> float:
    y, x = yx[:, 0], yx[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def nucleus_polygons(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """[(label, (n, 2) x/y vertices in ImageJ's pixel coordinates)] for every nucleus: the
    outer contour of its mask (``find_contours`` at 0.5 on the padded mask, diagonal
    neighbours joined), through the edge midpoints between its pixels and the background, so
    that filling the polygon by pixel centres gives back the mask. Vertices in the middle of a
    straight run are dropped (:func:`drop_collinear`: the same polygon, fewer vertices). Holes are not traced; of a nucleus in several pieces the largest is kept."""
    lab = np.asarray(labels)
    out = []
    for k, box in enumerate(ndi.find_objects(lab), start=1):
        if box is None:
            continue
        mask = np.pad(lab[box] == k, 1).astype(np.float32)
        outer = max(find_contours(mask, 0.5, fully_connected="high"), key=_polygon_area)
        yx = outer[:-1] if len(outer) > 1 and np.allclose(outer[0], outer[-1]) else outer
        # padded row/column index -> image pixel index -> ImageJ (pixel centres at +0.5)
        x = yx[:, 1] + box[1].start - 1 + 0.5
        y = yx[:, 0] + box[0].start - 1 + 0.5
        out.append((k, drop_collinear(np.c_[x, y])))
    return out


def drop_collinear(xy: np.ndarray) -> np.ndarray:
    """A closed polygon's (n, 2) vertices without those that lie on the straight line between
    their neighbours (the same shape and area); a polygon of fewer than 4 vertices as it is."""
    if len(xy) < 4:
        return xy
    before = xy - np.roll(xy, 1, axis=0)
    after = np.roll(xy, -1, axis=0) - xy
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    keep = np.abs(cross) > 1e-9
    return xy[keep] if keep.sum() >= 3 else xy


# the measurements a GeoJSON feature carries (QuPath shows them in its measurement table)
GEOJSON_MEASUREMENTS = ("area", "perimeter", "equivalent_diameter", "eccentricity",
                        "solidity", "area_um2", "perimeter_um", "equivalent_diameter_um")


def geojson_features(labels: np.ndarray, names=None, offset=(0, 0), table=None,
                     image_id: str = "") -> list[str]:
    """One GeoJSON Feature (a JSON string) per nucleus of ``labels`` (1..n): its outline
    (:func:`nucleus_polygons`, shifted by ``offset`` (y, x) into the whole image) as a closed
    Polygon in the module's pixel convention, a QuPath detection of class Nucleus. Each
    feature has an ``id`` (a UUID derived from ``image_id`` and its name, the same on every
    run, as QuPath wants), its ``name`` (``names[k - 1]``, default its label k) and, with
    ``table`` (:func:`measure` of the same ``labels``), QuPath ``measurements``: the
    :data:`GEOJSON_MEASUREMENTS` and each channel's mean intensity."""
    oy, ox = offset
    rows = {}
    if table is not None and len(table):
        cols = [c for c in table if c in GEOJSON_MEASUREMENTS or c.startswith("mean_intensity_")]
        rows = {int(k): {c: round(float(v), 4) for c, v in zip(cols, vals)}
                for k, vals in zip(table["label"], table[cols].to_numpy())}
    out = []
    for k, xy in nucleus_polygons(labels):
        name = str(names[k - 1]) if names is not None else str(k)
        ring = [[round(float(x) + ox, 3), round(float(y) + oy, 3)] for x, y in xy]
        ring.append(ring[0])
        props = {"objectType": "detection", "name": name,
                 "classification": {"name": "Nucleus", "color": [0, 200, 0]}}
        if k in rows:
            props["measurements"] = rows[k]
        out.append(json.dumps({
            "type": "Feature", "id": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                     f"nucseg:{image_id}/{name}")),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props}, separators=(",", ":")))
    return out


def write_features(path, features) -> Path:
    """One GeoJSON FeatureCollection of ``features`` (JSON strings, any iterable: written as
    they come, one per line), atomically."""
    with runs.atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write('{"type":"FeatureCollection","features":[\n')
        for i, feature in enumerate(features):
            f.write(("" if i == 0 else ",\n") + feature)
        f.write("\n]}\n")
    return Path(path)


def write_geojson(path, labels: np.ndarray, table=None, image_id: str = "") -> Path:
    """The nuclei's outlines as one GeoJSON FeatureCollection (:func:`geojson_features`),
    atomically."""
    return write_features(path, geojson_features(labels, table=table, image_id=image_id))


def write_roi_zip(path, labels: np.ndarray, names=None, offset=(0, 0),
                  width: int | None = None) -> Path:
    """An ImageJ ROI set (``.zip``, for Fiji's ROI Manager): one polygon per nucleus, named by
    its label (``names[k - 1]`` when given; zero-padded to ``width`` digits, by default those
    of the largest, at least 4, so the ROI Manager lists them in label order) and shifted by
    ``offset`` (y, x). An image with no nuclei gives an empty zip."""
    oy, ox = offset
    polygons = nucleus_polygons(labels)
    named = [(int(names[k - 1]) if names is not None else k, xy) for k, xy in polygons]
    width = width or (max(4, len(str(named[-1][0]))) if named else 4)
    rois = [ImagejRoi.frompoints(xy + (ox, oy), name=f"{k:0{width}d}") for k, xy in named]
    with runs.atomic_path(path) as tmp:
        if rois:
            roiwrite(tmp, rois, mode="w")
        else:
            zipfile.ZipFile(tmp, "w").close()
    return Path(path)


def join_roi_zips(parts, path) -> Path:
    """One ROI set from several (:func:`write_roi_zip`'s, in order), entry by entry,
    atomically."""
    with runs.atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as out:
        for part in parts:
            with zipfile.ZipFile(part) as z:
                for info in z.infolist():
                    out.writestr(info, z.read(info))
    return Path(path)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An image as 8-bit RGB for display: contrast stretched between its 0.5 and 99.8
    percentiles (as the report's figures show images)."""
    img = to_rgb_float(image)
    lo, hi = np.percentile(img, [0.5, 99.8]) if img.size else (0.0, 1.0)
    img = np.clip((img - lo) / max(float(hi - lo), 1e-6), 0, 1)
    return np.round(img * 255).astype(np.uint8)


def write_overlay_png(path, image: np.ndarray, labels: np.ndarray) -> Path:
    """The image at its native size with the outline of every nucleus (its pixels that touch
    the background or another nucleus) drawn in :data:`OUTLINE` green."""
    rgb = display_rgb(image)
    rgb[find_boundaries(np.asarray(labels), mode="inner")] = OUTLINE
    with runs.atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb, extension=".png")
    return Path(path)
