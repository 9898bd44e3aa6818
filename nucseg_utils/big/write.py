"""Big images, stage 5: the outputs, written tile by tile and assembled at the end.

In: the output folder, the image's id, each finished tile's labels.
Out, for the image ``<id>``:

- ``labels/<id>.ome.zarr``: the label image (uint32, 0 the background, 1..N one nucleus each)
  as OME-Zarr (NGFF 0.4, Zarr format 2, chunks of :data:`CHUNK` px, compressed), with its
  resolution pyramid (halved by nearest neighbour until it fits 1024 px) and ``image-label``
  metadata, so napari opens it as a labels layer;
- ``measurements/<id>.csv``: one row per nucleus (:func:`nucseg_utils.exports.files.measure`,
  its coordinates in the whole image's pixels), streamed tile by tile;
- ``geojson/<id>.geojson``: the nucleus outlines as a GeoJSON FeatureCollection of polygons
  (QuPath's *File > Import objects* reads them as detections, in the image's pixel
  coordinates; the polygons of :func:`nucseg_utils.exports.files.nucleus_polygons`, named by
  their label);
- ``done/<id>.json``: written last, with the image's summary row (as :mod:`nucseg_utils.predict`).

Every output is written to a temporary name and renamed when complete (the label image to
``<id>.ome.zarr.partial``; each Zarr chunk itself is written atomically). A tile's parts
(``tiles/<id>/<row>_<col>.json``, with its measurements and outlines beside it) are written
after its labels, so an interrupted run resumes at the first unfinished tile.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from nucseg_utils.big.plan import Tile
from nucseg_utils.core import runs
from nucseg_utils.exports import files as export

__all__ = ["CHUNK", "FORMATS", "PLACES", "assemble_geojson", "assemble_measurements", "create_labels", "finish_labels", "geojson_features", "open_labels", "output_paths", "summary_row", "work_dir", "write_tile_parts"]


CHUNK = 1024  # the label image's Zarr chunks (px a side)


FORMATS = ("ome-zarr", "measurements", "geojson")


PLACES = {"ome-zarr": ("labels", ".ome.zarr"), "measurements": ("measurements", ".csv"),
         "geojson": ("geojson", ".geojson")}


def output_paths(out, sid: str, formats=FORMATS) -> dict[str, Path]:
    """{format: path} of the outputs of big image ``sid``."""
    return {f: Path(out) / PLACES[f][0] / f"{sid}{PLACES[f][1]}" for f in formats}


def work_dir(out, sid: str) -> Path:
    return Path(out) / "tiles" / sid


def create_labels(path: Path, shape):
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


def open_labels(path: Path):
    import zarr
    return zarr.open_group(str(path), mode="r+")["0"]


def finish_labels(path: Path, sid: str, pixel_size: float | None):
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
    ``names[k - 1]``): its outline (:func:`nucseg_utils.exports.files.nucleus_polygons`, shifted by
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


def write_tile_parts(work: Path, tile: Tile, canvas: np.ndarray, given, plane, px,
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
    with runs.atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write('{"type":"FeatureCollection","features":[\n')
        first = True
        for t in tiles:
            with open(work / "geojson" / f"{t.name}.jsonl") as part:
                for line in part:
                    f.write(("" if first else ",\n") + line.rstrip("\n"))
                    first = False
        f.write("\n]}\n")


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
