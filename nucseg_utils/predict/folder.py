"""Prediction, one image at a time, end to end: read, predict, post-process, write, forget.

In: a :class:`nucseg_utils.model.NucleusModel`; the images (:func:`nucseg_utils.data.open_images`: a folder
or file of PNG/TIFF/JPEG images, a DSB split folder or zip); an output folder; the formats to
write (:data:`FORMATS`) and the other :class:`PredictOptions`.
Out, for every image ``<id>``, each file written atomically (a file that exists is complete),
the formats asked for (:data:`nucseg_utils.exports.files.FORMATS`, default
:data:`DEFAULT_FORMATS`):

- ``labels/<id>.png``: 16-bit label PNG (``labels-png``; ``submission.csv`` is built from them)
- ``labels/<id>.tif``: ImageJ label TIFF carrying the pixel size (``tiff``)
- ``rois/<id>.zip``: ImageJ ROI set, one polygon per nucleus (``rois``)
- ``overlays/<id>.png``: the image with the nuclei outlined (``overlay``)
- ``measurements/<id>.csv``: one row per nucleus (``measurements``, :func:`export.measure`)
- ``labels/<id>.ome.zarr``: the image with its nuclei under it (``ome-zarr``,
  :mod:`nucseg_utils.exports.omezarr`)
- ``geojson/<id>.geojson``: the outlines with their measurements, for QuPath (``geojson``)
- ``done/<id>.json``: written last, once the others are: the image is complete (with its
  summary row);

and for the whole folder ``summary.csv`` (one row per image; a failed one with its reason;
its ``quality`` column, :mod:`nucseg_utils.inference.quality`, ranks the images from likely
good to likely wrong and ``check`` marks those to look at), ``submission.csv`` (Kaggle's
format, from the label PNGs) and ``predict.json`` (the model and settings: a rerun with other
ones is refused unless ``overwrite``).

Memory holds two images at a time: the network predicts one while a second thread
post-processes and writes the one before. An image of more than :data:`TILE_ABOVE` pixels (or
every image, with ``PredictOptions(tile=N)``) is segmented tile by tile instead
(:func:`nucseg_utils.big.predict_big`: memory bounded by the tile, nuclei stitched across the
seams) into the same files, but for a label PNG (a one-line note says so; the label TIFF is
then a pyramidal OME-TIFF and the overlay downsampled): it has no rows in
``submission.csv`` and no quality score. :mod:`nucseg_utils.predict.distributed` runs the
same over a Dask cluster.

A rerun skips the images that are done. The inputs are checked first from their headers
(without decoding the pixels); an image that cannot be used (unreadable, a z-stack or time
series, too many channels, NaN values) is reported in one line naming its file and left out,
and the others are still written.
"""
from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import imageio.v3 as iio
import numpy as np
import pandas as pd
import tifffile
from tqdm.auto import tqdm

from nucseg_utils import big, postprocessing
from nucseg_utils.big.write import tiled_formats
from nucseg_utils.core import runs
from nucseg_utils.core.progress import progress as progress_bar
from nucseg_utils.data import outputs
from nucseg_utils.data.dsb import (
    DataError,
    channel_note,
    describe_channel,
    tiff_channel_names,
    to_rgb_float,
)
from nucseg_utils.data.dsb import plane_layout as _layout
from nucseg_utils.data.outputs import done_marker
from nucseg_utils.exports import files as export
from nucseg_utils.exports import omezarr
from nucseg_utils.exports.files import FORMATS, output_paths
from nucseg_utils.inference.quality import image_quality
from nucseg_utils.model import engines
from nucseg_utils.model.network import NucleusModel

__all__ = [
    "ADDED_SETTINGS", "Checked", "DEFAULT_FORMATS", "FORMATS", "Plane", "PredictOptions", "PredictResult", "SUMMARY_COUNTS",
    "SUMMARY_FIRST", "TILE_ABOVE", "check_image", "check_inputs", "finish_folder", "is_done",
    "is_tiled", "output_paths", "parse_formats", "predict_folder", "predict_one", "read_image",
    "read_measurements", "read_plane", "record_settings", "run_settings", "segment_tiled",
    "source_name", "stream_submission", "tiled_formats", "write_formats", "write_one"
]

# the formats an untiled image gets unless told (every name of FORMATS is accepted)
DEFAULT_FORMATS = ("labels-png", "tiff", "rois", "overlay", "measurements")
# settings newer than some output folders, with the value those folders were made with
ADDED_SETTINGS = {"bfloat16": False, "tile": None, "controls": {}}
# images of more pixels than this are segmented tile by tile (:mod:`nucseg_utils.big`): the
# whole image at once would take more than about 4 GB (a 3000 x 3000 one took 2.2 GB)
TILE_ABOVE = 4096 * 4096


def parse_formats(text: str) -> tuple[str, ...]:
    """``"tiff,rois"`` -> ("tiff", "rois") in :data:`FORMATS` order; ValueError for others."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown format(s) {', '.join(unknown) or repr(text)}; choose from "
                         f"{', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in names)


def is_tiled(opts, size) -> bool:
    """Whether an image of ``size`` (height, width) is segmented tile by tile."""
    return opts.tile is not None or (size is not None and size[0] * size[1] > TILE_ABOVE)


def is_done(out, sid: str, formats) -> bool:
    """True when image ``sid`` was completed with (at least) ``formats`` and its files exist."""
    marker = done_marker(out, sid)
    if not marker.exists():
        return False
    made = set(runs.read_json(marker).get("formats", []))
    return set(formats) <= made and all(p.exists() for p in output_paths(out, sid,
                                                                         formats).values())


# --------------------------------------------------------------------------- reading an image
class Plane(NamedTuple):
    """One image file read as the 2-D plane to segment: its ``pixels``, the ``pixel_size``
    its file records (or None), the ``channel`` segmented as the summary says it
    (:func:`nucseg_utils.data.describe_channel`; "" for a grey or colour image used whole) and
    the ``note`` said on the console about it (or None)."""
    pixels: np.ndarray
    pixel_size: float | None
    channel: str = ""
    note: str | None = None


def _frames_refused(name: str, n: int, h: int, w: int) -> DataError:
    return DataError(f"{name}: holds {n} frames of {h}x{w} (an animated image or a "
                     f"multi-image file); nucseg segments one 2-D image per file: save one "
                     f"frame per file")


def _tiff_axes(tif, name: str):
    """(axes, shape, channel names) of an open TIFF's first image; DataError when the file
    holds several images of that size (frames saved as separate series), which would
    otherwise be skipped (a whole-slide file's thumbnail or label image is no frame)."""
    series = tif.series[0]
    same = [s for s in tif.series if tuple(s.shape) == tuple(series.shape)]
    if len(same) > 1:
        dims = dict(zip(series.axes, series.shape))
        raise _frames_refused(name, len(same), dims.get("Y", 0), dims.get("X", 0))
    return series.axes, series.shape, tiff_channel_names(tif)


def _other_axes(props, name: str):
    """(axes, shape) of a PNG/JPEG/GIF... from its properties; DataError for several frames."""
    shape = tuple(props.shape)
    if getattr(props, "is_batch", False):
        if shape[0] > 1:
            raise _frames_refused(name, shape[0], shape[1], shape[2])
        shape = shape[1:]
    return ("YX" if len(shape) == 2 else "YXS"), shape


def _header(f, name: str):
    """(axes, shape, channel names or None) of an image file from its header, without
    decoding the pixels."""
    try:
        if name.lower().endswith((".tif", ".tiff")):
            with tifffile.TiffFile(f) as tif:
                return _tiff_axes(tif, name)
        data = f.read() if hasattr(f, "read") else f
        return (*_other_axes(iio.improps(data, extension=Path(name).suffix.lower()), name), None)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        raise DataError(f"{name}: cannot read the image header ({type(err).__name__}: "
                        f"{err})") from None


def check_image(f, name: str, channel: int | None = None) -> tuple[int, int, str | None]:
    """(height, width, the console's note on the channel or None) of an image file from its
    header; DataError naming the file if it cannot be segmented as one 2-D image (see
    :func:`read_plane`)."""
    axes, shape, names = _header(f, name)
    axis, keep, _ = _layout(axes, shape, name, channel, names)
    n = dict(zip(axes, shape)).get(axis, 1) if axis else 1
    note = channel_note(name, axis, keep, n, names, chosen=channel is not None)
    return shape[axes.index("Y")], shape[axes.index("X")], note


def read_plane(f, name: str, channel: int | None = None) -> Plane:
    """Decode an image file into the 2-D plane to segment (:class:`Plane`).

    The plane is (H, W) or channels last (H, W, 3, alpha dropped), in the file's own values.
    A TIFF's axes and channel names are read from its metadata: colour (RGB) is kept whole;
    of several channels one is kept: ``channel``, else the nuclear stain by its name (DAPI,
    Hoechst, DRAQ5, ...: :data:`nucseg_utils.data.NUCLEAR_STAINS`), else channel 0. A z-stack,
    a time series, several frames (pages, an animated GIF, images of one size in separate
    series) are refused, unless ``channel`` picks one of a file's unnamed planes. DataError
    naming the file for anything else."""
    size, names = None, None
    try:
        if name.lower().endswith((".tif", ".tiff")):
            with tifffile.TiffFile(f) as tif:
                axes, shape, names = _tiff_axes(tif, name)
                layout = _layout(axes, shape, name, channel, names)
                arr = tif.series[0].asarray()
                size = export.tiff_pixel_size(tif)
        else:
            ext = Path(name).suffix.lower()
            data = f.read() if hasattr(f, "read") else f
            axes, shape = _other_axes(iio.improps(data, extension=ext), name)
            arr = np.asarray(iio.imread(data, extension=ext))
            arr = arr.reshape(shape) if arr.size == int(np.prod(shape)) else arr
            layout = _layout(axes, shape, name, channel)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise DataError(f"{name}: cannot decode image ({type(err).__name__}: {err})") from None
    if arr.size == 0 or arr.shape != tuple(shape):
        raise DataError(f"{name}: cannot decode image (no pixel data; the file is corrupt or "
                        f"truncated)")
    axis, keep, alpha = layout
    n = dict(zip(axes, shape)).get(axis, 1) if axis else 1
    kept = [i for i, (a, k) in enumerate(zip(axes, shape)) if k > 1 or a in "YX"]
    arr = arr.reshape([shape[i] for i in kept])
    axes = "".join(axes[i] for i in kept)
    arr = np.transpose(arr, [axes.index(a) for a in "YX" + (axis or "")])
    if keep is not None and axis:
        arr = arr[..., keep]
    elif alpha:
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Plane(np.ascontiguousarray(arr), size, describe_channel(axis, keep, names),
                 channel_note(name, axis, keep, n, names, chosen=channel is not None))


@dataclass
class Checked:
    """The result of :func:`check_inputs`: usable ids, {id: why not}, {id: a warning}."""
    ok: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)  # {id: (height, width)} of the usable ones


def check_inputs(source, channel: int | None = None, ids=None) -> Checked:
    """Check every image of ``source`` (or its ``ids``) cheaply, from its name and header,
    before any is decoded: a bad one is listed with the reason (naming its file) instead of
    stopping all."""
    res = Checked()
    for sid in source.ids if ids is None else ids:
        try:
            name = source.image_name(sid)
            if any(c in sid for c in ',"\n\r'):
                raise DataError(f"{name}: the image name holds a comma, quote or line break, "
                                f"which submission.csv cannot hold; rename the file")
            with source.image_file(sid) as f:
                h, w, note = check_image(f, name, channel)
        except DataError as err:
            res.failed[sid] = _one_line(err)
            continue
        res.ok.append(sid)
        res.sizes[sid] = (h, w)
        if note:
            res.notes[sid] = note
        if min(h, w) < 2:
            res.notes[sid] = (f"{name}: is {h}x{w} pixels, too thin to hold a nucleus; "
                              f"segmented anyway (expect none)")
    return res


def _one_line(err) -> str:
    return " ".join(str(err).split())


# --------------------------------------------------------------------------- one image
def read_image(path, channel: int | None = None) -> np.ndarray:
    """One image file as the 2-D plane to segment, in the file's own values: (H, W) or
    channels last (see :func:`read_plane`; ``channel`` keeps one channel). DataError naming
    the file for anything that is not one 2-D image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        return read_plane(f, str(path), channel).pixels


@dataclass
class _Job:
    """One image between the network and the writer: its plane, pixel size, probabilities
    and the spread of the TTA variants (:mod:`nucseg_utils.inference.quality`)."""
    sid: str
    name: str
    plane: np.ndarray
    pixel_size: float | None
    prob: np.ndarray
    spread: np.ndarray | None = None
    channel: str = ""


@dataclass(frozen=True)
class PredictOptions:
    """How :func:`predict_folder` segments and what it writes. ``tta`` and ``method`` (a
    post-processing of :data:`nucseg_utils.postprocessing.METHODS`): None is the model's
    setting; ``channel``: the channel of multi-channel images to segment (None: all, as
    grey/RGB); ``pixel_size`` (micrometres) overrides the one a TIFF records; ``overwrite``
    redoes images that are done and accepts a folder made with other settings; ``tile``
    segments every image tile by tile with cores of that many pixels (None: only those over
    :data:`TILE_ABOVE` pixels, with the automatic tile of :mod:`nucseg_utils.big`)."""
    formats: tuple = DEFAULT_FORMATS
    tta: bool | None = None
    method: str | None = None
    channel: int | None = None
    pixel_size: float | None = None
    overwrite: bool = False
    tile: int | None = None

    def resolved(self, model: NucleusModel) -> "PredictOptions":
        """These options with the model's settings for what they leave to it, checked."""
        return dataclasses.replace(
            self, formats=tuple(self.formats),
            tta=model.settings.tta if self.tta is None else bool(self.tta),
            method=self.method or model.settings.postprocessing.method,
            pixel_size=export.check_pixel_size(self.pixel_size))


def predict_one(model: NucleusModel, source, sid: str, opts: PredictOptions) -> _Job:
    """The network's half of segmenting one image: read it and predict it (the other half,
    :func:`write_one`, runs in the writer thread of :func:`predict_folder`)."""
    name = source.image_name(sid)
    with source.image_file(sid) as f:
        plane = read_plane(f, name, opts.channel)
    prob, spread = model.predict_probabilities(to_rgb_float(plane.pixels, name), opts.tta,
                                               spread=True)
    return _Job(sid, name, plane.pixels, opts.pixel_size or plane.pixel_size, prob, spread,
                plane.channel)


def write_one(job: _Job, model: NucleusModel, out, opts: PredictOptions) -> dict:
    """The other half: post-process, measure and write every format, then the done-marker;
    returns the image's summary row."""
    sid, plane, px = job.sid, job.plane, job.pixel_size
    labels = model.postprocess(job.prob, opts.method)
    table = write_formats(output_paths(out, sid, opts.formats), labels, plane, px, sid)
    q = image_quality(job.prob, job.spread, labels,
                      lambda p: model.postprocess(p, opts.method))
    row = {**export.summary_row(sid, table, labels, plane), "pixel_size_um": px,
           "file": job.name, "channel": job.channel, "quality": round(q["quality"], 4),
           "check": q["check"]}
    runs.write_json(done_marker(out, sid), {"formats": list(opts.formats), "summary": row})
    return row


def write_formats(paths: dict, labels: np.ndarray, plane, px, sid: str):
    """Write one image's files, {format: path} (:func:`output_paths`), from its labels and
    its plane; returns its measurements (:func:`export.measure`)."""
    table = export.measure(labels, plane, px)
    if "labels-png" in paths:
        outputs.save_labels_png(paths["labels-png"], labels)
    if "tiff" in paths:
        export.write_label_tiff(paths["tiff"], labels, px)
    if "rois" in paths:
        export.write_roi_zip(paths["rois"], labels)
    if "overlay" in paths:
        export.write_overlay_png(paths["overlay"], plane, labels)
    if "geojson" in paths:
        export.write_geojson(paths["geojson"], labels, table, sid)
    if "ome-zarr" in paths:
        omezarr.write_ome_zarr(paths["ome-zarr"], labels, plane, sid, px)
    if "measurements" in paths:
        export.write_measurements(paths["measurements"], table.assign(image=sid)[
            ["image"] + list(table.columns)])
    return table


def segment_tiled(model: NucleusModel, source, sid: str, out, opts: PredictOptions,
                  progress: bool = False, log=None, windows=None) -> dict:
    """One image of a folder segmented tile by tile (:func:`nucseg_utils.big.predict_big`,
    its outputs :func:`tiled_formats`; ``windows``: who segments the tiles, as there);
    returns its summary row. A TIFF is read region by region from its file; other files are
    decoded whole first."""
    name = source.image_name(sid)
    with source.image_file(sid) as f:
        if name.lower().endswith((".tif", ".tiff")):
            image = big.open_lazy(f, opts.channel, name=name)
        else:
            plane = read_plane(f, name, opts.channel)
            image = big.LazyImage(plane.pixels, big.guess_axes(plane.pixels.shape), name)
            image.channel_used = plane.channel
        res = big.predict_big(model, image, out, sid=sid, tile=opts.tile, tta=opts.tta,
                              method=opts.method, channel=opts.channel,
                              pixel_size=opts.pixel_size, formats=opts.formats,
                              overwrite=opts.overwrite, progress=progress,
                              log=log or _log_stderr, windows=windows)
    return res.summary


# --------------------------------------------------------------------------- a folder
@dataclass
class PredictResult:
    out: Path
    done: list        # segmented by this call
    skipped: list     # complete from an earlier run
    failed: dict      # {id: one-line reason naming the file}
    summary: object   # the summary table (pandas), one row per image

    @property
    def nuclei(self) -> int:
        return int(self.summary["nuclei"].fillna(0).sum()) if len(self.summary) else 0


def _log_stderr(message: str):
    tqdm.write(message, file=sys.stderr)


SUMMARY_FIRST = ("id", "file", "height", "width", "nuclei", "quality", "check", "channel",
                 "mean_area", "median_area", "area_fraction", "mean_intensity", "pixel_size_um")
SUMMARY_COUNTS = ("height", "width", "nuclei")  # whole numbers, written without decimals


def predict_folder(model: NucleusModel, source, out, options: PredictOptions | None = None,
                   *, ids=None, checked: Checked | None = None, progress: bool = True,
                   log=_log_stderr) -> PredictResult:
    """Segment every image of ``source`` (or its ``ids``) into ``out``, one at a time, with
    ``options`` (:class:`PredictOptions`; see the module docstring for what is written).

    ``checked`` is :func:`check_inputs`' result if the caller has it already. Images that are
    done are skipped unless ``options.overwrite``. Problems with single images go to ``log``
    (one line each) and into the result's ``failed``."""
    out = Path(out)
    opts = (options or PredictOptions()).resolved(model)
    record_settings(out, *run_settings(model, source, opts), opts.overwrite)
    ids = list(source.ids if ids is None else ids)
    checked = checked or check_inputs(source, opts.channel, ids)
    failed = dict(checked.failed)
    for message in list(failed.values()) + list(checked.notes.values()):
        log(message)
    todo = checked.ok
    if progress:
        todo = progress_bar(todo, desc=f"predict{' (TTA)' if opts.tta else ''}", unit="img")
    done, skipped = _segment(model, source, out, opts, todo, failed, log, checked.sizes,
                             progress)
    summary = finish_folder(out, source, ids, failed, opts)
    return PredictResult(out, done, skipped, failed, summary)


def finish_folder(out: Path, source, ids, failed: dict, opts: PredictOptions):
    """The folder's tables once its images are done: ``summary.csv`` (in id order) and, with
    ``labels-png``, ``submission.csv`` of the images not segmented tile by tile (none when
    every image was tiled). Returns the summary table."""
    summary = _summary(out, source, ids, failed)
    if "labels-png" in opts.formats:
        whole = submission_ids(out, ids, failed)
        if whole:
            stream_submission(out / "labels", whole, out / "submission.csv")
    return summary


def submission_ids(out, ids, failed) -> list:
    """The images of a folder that are in its ``submission.csv``: those done and not tiled."""
    return [s for s in ids if s not in failed
            and not runs.read_json(done_marker(Path(out), s)).get("big")]


def _segment(model, source, out, opts: PredictOptions, todo, failed: dict, log, sizes=None,
             progress: bool = False):
    """The loop of :func:`predict_folder`: the network works on image i+1 while a second
    thread post-processes and writes image i (both release the GIL in their heavy parts); at
    most two images are held at a time; an image to tile (:func:`is_tiled`) is segmented
    alone, tile by tile. Returns (done, skipped) ids; ``failed`` gets the images that could
    not be segmented."""
    sizes = sizes or {}
    done, skipped = [], []

    def fail(sid, err):
        failed[sid] = _one_line(err)
        log(failed[sid])

    def finish(writing):
        sid, future = writing
        try:
            future.result()
        except DataError as err:
            fail(sid, err)
        else:
            done.append(sid)

    writing = None  # (id, future) of the image in the writer thread
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nucseg-write") as writer:
        try:
            for sid in todo:
                tiled = is_tiled(opts, sizes.get(sid))
                formats = tiled_formats(opts.formats) if tiled else opts.formats
                if not opts.overwrite and is_done(out, sid, formats):
                    skipped.append(sid)
                    continue
                if tiled:
                    if writing:
                        finish(writing)
                        writing = None
                    try:
                        segment_tiled(model, source, sid, out, opts, progress, log)
                    except DataError as err:
                        fail(sid, err)
                    else:
                        done.append(sid)
                    continue
                try:
                    job = predict_one(model, source, sid, opts)
                except DataError as err:
                    fail(sid, err)
                    continue
                if writing:  # the previous image's files, before this one's are queued
                    finish(writing)
                writing = (sid, writer.submit(write_one, job, model, out, opts))
                del job
            if writing:
                finish(writing)
        except BaseException:
            if writing:  # an interrupt: let the image being written finish
                writing[1].cancel()
            raise
    return done, skipped


def _summary(out: Path, source, ids, failed: dict):
    """``summary.csv``: one row per image, from its done-marker (or its reason for failing),
    counts as whole numbers."""
    rows = []
    for sid in ids:
        if sid in failed:
            rows.append({"id": sid, "file": source_name(source, sid), "error": failed[sid]})
        else:
            rows.append({**runs.read_json(done_marker(out, sid))["summary"], "error": ""})
    summary = pd.DataFrame(rows)
    summary = summary[[c for c in SUMMARY_FIRST if c in summary] +
                      [c for c in summary if c not in SUMMARY_FIRST]]
    for c in SUMMARY_COUNTS:
        if c in summary:
            summary[c] = summary[c].astype("Int64")  # NaN of a failed image stays empty
    runs.write_table(summary, out / "summary.csv")
    return summary


def source_name(source, sid) -> str:
    try:
        return source.image_name(sid)
    except DataError:
        return sid


def run_settings(model: NucleusModel, source, opts: PredictOptions) -> tuple[dict, dict]:
    """(the settings a folder's predictions depend on, what else ``predict.json`` records)."""
    settings = {"model_fingerprint": model.fingerprint, "tta": opts.tta,
                "postprocess": opts.method, "channel": opts.channel,
                "pixel_size_um": opts.pixel_size, "tile": opts.tile,
                # the one engine whose maps differ from the others'
                "bfloat16": not engines.ENGINES[model.engine].exact,
                # the model's settings a user changed (nucseg predict's controls)
                "controls": dict(sorted(model.overrides.items()))}
    info = {"model": str(model.path) if model.path else None,
            "images": str(source.source), "formats": list(opts.formats),
            # every setting the labels were made with: the model's, with the controls
            "postprocessing": {**postprocessing.settings(model.config),
                               "postprocess": opts.method},
            "diameter": model.settings.diameter}
    return settings, info


def record_settings(out: Path, settings: dict, info: dict, overwrite: bool):
    """Write ``predict.json``; refuse (FileExistsError) an output folder whose predictions
    were made with other settings, unless ``overwrite``."""
    path = out / "predict.json"
    if path.exists() and not overwrite:
        before = runs.read_json(path).get("settings", {})
        changed = [k for k in settings if before.get(k, ADDED_SETTINGS.get(k)) != settings[k]]
        if changed:
            raise FileExistsError(f"{out}: holds predictions made with other settings "
                                  f"({', '.join(changed)}); use --overwrite to redo them, or "
                                  f"another --out")
    runs.write_json(path, {"settings": settings, **info, "versions": runs.library_versions()})


def read_measurements(out, ids=None):
    """The per-nucleus tables written to ``out`` (for ``ids``, or all) as one table."""
    folder = Path(out) / "measurements"
    files = (sorted(folder.glob("*.csv")) if ids is None
             else [folder / f"{sid}.csv" for sid in ids])
    tables = [pd.read_csv(f, dtype={"image": str}) for f in files if f.exists()]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def stream_submission(label_dir, ids, path) -> Path:
    """Kaggle's submission CSV from the label PNGs of ``ids`` in ``label_dir``, read one at a
    time (the same file as :func:`outputs.write_submission` of them all), atomically."""
    with runs.atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("ImageId,EncodedPixels\n")
        for sid in sorted(ids):
            labels = outputs.read_labels_png(Path(label_dir) / f"{sid}.png")
            f.writelines(f"{a},{b}\n" for a, b in outputs.submission_rows(sid, labels))
    return Path(path)
