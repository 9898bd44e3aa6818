"""Big images, stage 5: the outputs, written tile by tile and assembled at the end.

In: the output folder, the image's id, each finished tile's labels.
Out, for the image ``<id>``, the files an untiled image gets
(:data:`nucseg_utils.exports.files.FORMATS`), but a label PNG (:data:`NOT_TILED`):

- the labels are stitched into an OME-Zarr store (:mod:`nucseg_utils.exports.omezarr`),
  ``labels/<id>.ome.zarr.partial`` while the tiles run; at the end it gets its pyramid and,
  for ``ome-zarr``, the image at its root and is renamed ``labels/<id>.ome.zarr`` (else it is
  removed once the other files are made from it);
- ``tiff``: ``labels/<id>.tif``, a pyramidal BigTIFF OME-TIFF made from the store, block by
  block;
- ``overlay``: ``overlays/<id>.png``, the outlines on the image downsampled by a power of two
  to at most :data:`nucseg_utils.exports.omezarr.OVERLAY_SIDE` px (the factor is in the
  summary row);
- ``measurements``, ``geojson``, ``rois``: one row / feature / ROI per nucleus
  (:mod:`nucseg_utils.exports.files`, in the whole image's pixels), written per tile and
  joined in tile order;
- ``done/<id>.json``: written last, with the image's summary row (as :mod:`nucseg_utils.predict`).

Every output is written to a temporary name and renamed when complete (each Zarr chunk itself
is written atomically). A tile's parts (``tiles/<id>/<row>_<col>.json``, with its
measurements, outlines and ROIs beside it) are written after its labels, so an interrupted run
resumes at the first unfinished tile.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from nucseg_utils.big.plan import Tile
from nucseg_utils.core import runs
from nucseg_utils.exports import files as export
from nucseg_utils.exports.files import FORMATS

__all__ = ["BIG_FORMATS", "NOT_TILED", "ROI_NAME_WIDTH", "assemble_geojson", "assemble_measurements", "assemble_rois", "summary_row", "tiled_formats", "work_dir", "write_tile_parts"]


# what :func:`nucseg_utils.big.predict_big` writes unless told: the whole-slide formats
BIG_FORMATS = ("ome-zarr", "measurements", "geojson")
# the digits of a tiled image's ROI names (zero-padded: sorted by name up to 10 million nuclei)
ROI_NAME_WIDTH = 7
# what a tiled image cannot get, and why (said once per image)
NOT_TILED = {"labels-png": "a PNG is written from the whole label image in memory; a tiled "
                           "image's labels are in its label TIFF and OME-Zarr"}


def tiled_formats(formats) -> tuple[str, ...]:
    """The ``formats`` (of :data:`nucseg_utils.exports.files.FORMATS`) a tiled image gets:
    all but those of :data:`NOT_TILED`."""
    return tuple(f for f in FORMATS if f in set(formats) and f not in NOT_TILED)


def work_dir(out, sid: str) -> Path:
    return Path(out) / "tiles" / sid


def write_tile_parts(work: Path, tile: Tile, canvas: np.ndarray, given, plane, px,
                      sid: str, formats):
    """A tile's measurements, outlines and ROIs (its kept nuclei, labels ``given``) as part
    files."""
    first, last = given
    wy0, _, wx0, _ = tile.window
    mine = (canvas >= first) & (canvas < last)
    local = np.where(mine, canvas.astype(np.int64) - first + 1, 0)
    names = np.arange(first, last)
    table = export.measure(local, plane, px) if {"measurements", "geojson"} & set(formats) \
        else None
    if "geojson" in formats:
        lines = export.geojson_features(local, names, (wy0, wx0), table, sid)
        runs.write_text(work / "geojson" / f"{tile.name}.jsonl",
                        "".join(line + "\n" for line in lines))
    if "rois" in formats:
        export.write_roi_zip(work / "rois" / f"{tile.name}.zip", local, names, (wy0, wx0),
                             width=ROI_NAME_WIDTH)
    if "measurements" in formats:
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


def assemble_measurements(work: Path, tiles, path: Path) -> pd.DataFrame | None:
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


def assemble_geojson(work: Path, tiles, path: Path):
    """``geojson/<id>.geojson``, one FeatureCollection, streamed from the tiles' parts."""
    def lines():
        for t in tiles:
            with open(work / "geojson" / f"{t.name}.jsonl") as part:
                yield from (line.rstrip("\n") for line in part)
    export.write_features(path, lines())


def assemble_rois(work: Path, tiles, path: Path):
    """``rois/<id>.zip`` from the tiles' ROI sets, in tile order (labels increasing)."""
    export.join_roi_zips([work / "rois" / f"{t.name}.zip" for t in tiles], path)


def summary_row(sid: str, shape, table: pd.DataFrame | None, nuclei: int,
                 covered: int) -> dict:
    """The image's summary row (:func:`nucseg_utils.exports.files.summary_row`'s columns) from the
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
