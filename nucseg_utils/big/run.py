"""Big images, the whole run: plan, predict each window, stitch, write, resume.

In: a :class:`nucseg_utils.model.NucleusModel`, one image (a path or an array-like,
:func:`nucseg_utils.big.lazy.open_lazy`), an output folder.
Out: :func:`predict_big`'s :class:`BigResult` and the files of :mod:`nucseg_utils.big.write`.

**Memory is bounded by the tile, not the image.** At any time one window is held: its pixels,
the normalised image, its rescaled copy, the probabilities, the post-processing's arrays and
the label window; the network sees the rescaled window in batches of 4 of the 8 test-time
variants. Besides the window: the overview (at most
:data:`nucseg_utils.big.plan.OVERVIEW_PIXELS` pixels), one chunk of each output, and the list of
tiles. The measurements and outlines of one tile are written when it is done and never held
for the whole image (only the areas, for the median). The peak measured on large mosaics is in
``benchmarks/REPORT.md`` (section 7).

**Resume.** An interrupted run, run again with the same settings, keeps the overview's
statistics and factor it recorded (``tiles/<id>/plan.json``), clears what the unfinished tile
had written, and goes on from there. Once the image is complete its tile folder is removed.

**Many big images, many machines.** The tiles of one image are independent until they are
stitched: :func:`segment_window` (normalise, predict, post-process one window) needs only the
window's pixels, the plan and the model, so
:func:`nucseg_utils.predict.distributed.predict_big_distributed` (and ``nucseg predict
--workers N`` / ``--scheduler``) gives each tile to a Dask worker while this process plans the
image, reads the windows, and stitches the labels that come back in raster order: the outputs
are those of the serial run, byte for byte, whatever the number of workers. A cluster of
several machines::

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
from tqdm.auto import tqdm

from nucseg_utils.big.lazy import LazyImage, open_lazy
from nucseg_utils.big.plan import (
    ALIGN,
    Plan,
    Tile,
    largest_nucleus,
    make_plan,
    seam_tolerance,
)
from nucseg_utils.big.stitch import stitch_tile
from nucseg_utils.big.window import Grid, predict_window
from nucseg_utils.big.write import (
    BIG_FORMATS,
    NOT_TILED,
    assemble_geojson,
    assemble_measurements,
    assemble_rois,
    summary_row,
    tiled_formats,
    work_dir,
    write_tile_parts,
)
from nucseg_utils.core import runs
from nucseg_utils.core.progress import progress as progress_bar
from nucseg_utils.data.outputs import done_marker
from nucseg_utils.exports import files as export
from nucseg_utils.exports import omezarr
from nucseg_utils.exports.files import FORMATS, output_paths

__all__ = ["BigResult", "BigRun", "predict_big", "segment_window", "serial_windows"]


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


@dataclass
class BigRun:
    """One image's run, as :func:`predict_big` resolved it: what every stage after the plan
    reads (the model and image, the plan, where each output and the tiles' work go, and how
    the tiles are segmented and reported)."""
    model: object
    lazy: LazyImage
    plan: Plan
    out: Path
    sid: str
    method: str
    tta: bool
    pixel_size: float | None
    formats: tuple
    paths: dict
    work: Path
    labels_tmp: Path
    progress: bool = True
    log: object = _log_stderr
    windows: object = None


def predict_big(model, image, out, *, sid: str | None = None, tile: int | None = None,
                overlap: int | None = None, tta: bool | None = None, method: str | None = None,
                channel: int | None = None, pixel_size: float | None = None,
                formats=BIG_FORMATS, overwrite: bool = False, progress: bool = True,
                log=_log_stderr, windows=None) -> BigResult:
    """Segment one big image tile by tile into ``out`` (see the module docstring for the
    outputs, the seam rules, the memory bound and resuming).

    ``image``: a path or an array-like (:func:`open_lazy`); ``sid``: its id in the output
    names (default: the file's name without its suffixes, or ``image``); ``tile``, ``overlap``:
    the core and the overlap in native pixels (None: automatic, from the model's nucleus size
    and the image's factor); ``tta``, ``method``: None is the model's setting; ``pixel_size``
    (micrometres) overrides the one the file records; ``formats``: of
    :data:`nucseg_utils.exports.files.FORMATS` (default :data:`BIG_FORMATS`; those of
    :data:`nucseg_utils.big.write.NOT_TILED` are left out, with a note why). A rerun of a complete
    image does nothing unless ``overwrite``. ``windows``: who segments the tiles (a function
    of (model, lazy image, plan, tiles, method, tta) that yields what :func:`serial_windows`
    yields, in its order; default that one, in this process;
    :func:`nucseg_utils.predict.distributed.predict_big_distributed` gives them to Dask workers). The
    plan (statistics, factor) and the stitching stay in this process: the outputs are the
    same whoever segments the tiles."""
    out = Path(out)
    tta = model.settings.tta if tta is None else bool(tta)
    method = method or model.settings.postprocessing.method
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(sorted(unknown))}; choose "
                         f"from {', '.join(FORMATS)}")
    left_out = [f for f in FORMATS if f in set(formats) and f in NOT_TILED]
    formats = tiled_formats(formats)
    with open_lazy(image, channel) as lazy:
        sid = sid or (Path(image).name.split(".")[0] if isinstance(image, (str, os.PathLike))
                      else "image")
        notes = [f"{lazy.name}: no {f} for a tiled image: {NOT_TILED[f]}" for f in left_out]
        for note in notes:
            log(note)
        paths = output_paths(out, sid, formats)
        done = None if overwrite else _done_before(out, sid, formats, paths)
        if done is not None:
            return done
        store = output_paths(out, sid, ("ome-zarr",))["ome-zarr"]
        settings = {"model_fingerprint": model.fingerprint, "engine": model.engine,
                    "tta": tta, "postprocess": method, "channel": channel,
                    "tile": tile, "overlap": overlap, "formats": list(formats),
                    "shape": list(lazy.shape), "config": _jsonable(model.config)}
        work, labels_tmp = work_dir(out, sid), store.with_name(store.name + ".partial")
        plan = _plan(model, lazy, settings, (tile, overlap, tta),
                     (work, labels_tmp, done_marker(out, sid)), not overwrite, log)
        px = export.check_pixel_size(pixel_size) or lazy.pixel_size
        run = BigRun(model, lazy, plan, out, sid, method, tta, px, formats, paths, work,
                     labels_tmp, progress, log, windows)
        result = _run_tiles(run)
        result.notes[:0] = notes
        _finish(run, result, store)
    return result


def _done_before(out: Path, sid: str, formats, paths: dict) -> BigResult | None:
    """The result of an image completed before with (at least) these formats, or None."""
    marker = done_marker(out, sid)
    if not marker.exists():
        return None
    made = runs.read_json(marker)
    if set(formats) <= set(made.get("formats", [])) and all(p.exists() for p in paths.values()):
        return BigResult(sid, paths, None, made["summary"], skipped=True)
    return None


def _plan(model, lazy: LazyImage, settings: dict, sizes: tuple, places: tuple, resume: bool,
          log) -> Plan:
    """The plan of an interrupted run with the same settings (when ``resume``), else a new
    one with a new label store (``places``: the tile folder, the store, the done-marker,
    cleared); says which first, before the overview and size passes (which take a while on a
    big image). ``sizes``: (tile, overlap, tta)."""
    work, labels_tmp, marker = places
    plan = _resume_plan(work, settings, labels_tmp) if resume else None
    h, w = lazy.shape
    log(f"{lazy.name}: {h}x{w} px, segmented tile by tile" +
        (f" (resuming: {len(list(work.glob('*_*.json')))} tiles done before)" if plan else
         "; first the image's statistics and nucleus size from an overview"))
    if plan is None:
        if work.exists():
            shutil.rmtree(work)
        marker.unlink(missing_ok=True)
        tile, overlap, tta = sizes
        plan = make_plan(model, lazy, settings, tile, overlap, tta)
        omezarr.create_store(labels_tmp, lazy.shape)
        runs.write_json(work / "plan.json", plan.to_json())
    return plan


def _jsonable(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str))


def _resume_plan(work: Path, settings: dict, labels_tmp: Path) -> Plan | None:
    """The plan of an interrupted run with the same settings, or None (start afresh)."""
    path = work / "plan.json"
    if not (path.exists() and labels_tmp.exists()):
        return None
    plan = Plan.from_json(runs.read_json(path))
    return plan if plan.settings == settings else None


def _run_tiles(run: BigRun) -> BigResult:
    """Segment and stitch every tile not yet done (an interrupted run resumes at the first
    one), writing each tile's parts; the result with the notes for the user."""
    model, lazy, plan, work, sid, tta = run.model, run.lazy, run.plan, run.work, run.sid, run.tta
    tiles = plan.tiles()
    rows, cols = tiles[-1].row + 1, tiles[-1].col + 1
    if tta and model.settings.tta_scales:
        raise ValueError("tiled prediction does not do test-time scaling (tta_scales): "
                         "predict with tta=False or a model without tta_scales")
    canvas = omezarr.open_labels(run.labels_tmp)
    min_size = int(model.settings.postprocessing.min_size)
    tolerance = seam_tolerance(model.settings, plan.factor)
    records = {t.index: runs.read_json(work / f"{t.name}.json") for t in tiles
               if (work / f"{t.name}.json").exists()}
    done_before = len(records)
    next_label = 1 + max((r["labels"][1] - 1 for r in records.values()), default=0)
    result = BigResult(sid, run.paths, plan, {}, tiles_done_before=done_before)
    needed = math.ceil((largest_nucleus(model.settings) + ALIGN) / plan.factor)
    if plan.overlap < needed:
        result.notes.append(f"{lazy.name}: an overlap of {plan.overlap} px is less than the "
                            f"largest nucleus the model expects plus the network's grid "
                            f"alignment at this image's scale ({needed} px): larger nuclei "
                            f"are dropped at tile borders")
        run.log(result.notes[-1])
    todo = [t for t in tiles if t.index not in records]
    if todo:  # an interrupted tile may have written some of its chunks: clear them
        y0, y1, x0, x1 = todo[0].window
        win = canvas[y0:y1, x0:x1]
        if (win >= next_label).any():
            canvas[y0:y1, x0:x1] = np.where(win >= next_label, 0, win).astype(np.uint32)
    bar = progress_bar(total=len(todo), desc=f"{sid} tiles{' (TTA)' if tta else ''}", unit="tile",
               disable=not run.progress)
    segmented = (run.windows or serial_windows)(model, lazy, plan, todo, run.method, tta)
    for t, plane, lab, seen in segmented:
        y0, _, x0, _ = t.window
        ey0, ey1, ex0, ex1 = seen
        plane = plane[ey0 - y0:ey1 - y0, ex0 - x0:ex1 - x0]
        seen_tile = dataclasses.replace(t, window=seen)
        win, given, too_large = stitch_tile(lab, canvas[ey0:ey1, ex0:ex1], seen_tile,
                                            (rows, cols), plan.tile, plan.shape, next_label,
                                            min_size, tolerance)
        canvas[ey0:ey1, ex0:ex1] = win
        write_tile_parts(work, seen_tile, win, given, plane, run.pixel_size, sid, run.formats)
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
    (:func:`nucseg_utils.predict.distributed.cluster_windows`), with the same result."""
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


def _finish(run: BigRun, result: BigResult, store: Path):
    """Assemble the outputs from the tiles and the stitched labels, rename them into place,
    write the done-marker and remove the tile folder (and the stitched store unless it is
    an output)."""
    plan, work, paths, formats, sid = run.plan, run.work, run.paths, run.formats, run.sid
    tiles = plan.tiles()
    records = [runs.read_json(work / f"{t.name}.json") for t in tiles]
    nuclei = sum(r["labels"][1] - r["labels"][0] for r in records)
    too_large = sum(r["too_large"] for r in records)
    covered = sum(r["covered"] for r in records)
    table = None
    if "measurements" in formats:
        table = assemble_measurements(work, tiles, paths["measurements"])
    if "geojson" in formats:
        assemble_geojson(work, tiles, paths["geojson"])
    if "rois" in formats:
        assemble_rois(work, tiles, paths["rois"])
    omezarr.finish_store(run.labels_tmp, sid, run.pixel_size,
                         run.lazy if "ome-zarr" in formats else None)
    levels = omezarr.label_levels(run.labels_tmp)
    if "tiff" in formats:
        omezarr.write_pyramid_tiff(paths["tiff"], levels, nuclei, run.pixel_size)
    step = None
    if "overlay" in formats:
        _, step = omezarr.write_overview_overlay(paths["overlay"], run.lazy, levels)
    if store.exists():
        shutil.rmtree(store)
    if "ome-zarr" in formats:
        os.replace(run.labels_tmp, store)
    else:
        shutil.rmtree(run.labels_tmp)
    row = summary_row(sid, plan.shape, table, nuclei, covered)
    row.update({"pixel_size_um": run.pixel_size, "file": run.lazy.name,
                "channel": run.lazy.channel_used, "tiles": len(tiles),
                "tile": plan.tile, "overlap": plan.overlap, "factor": plan.factor,
                "too_large": too_large, "overlay_downsampling": step})
    if too_large:
        result.notes.append(f"{run.lazy.name}: {too_large} object(s) larger than the overlap "
                            f"({plan.overlap} px) reached a tile's edge and were dropped; "
                            f"segment it with a larger overlap")
        run.log(result.notes[-1])
    runs.write_json(done_marker(run.out, sid), {"formats": list(formats), "summary": row,
                                            "big": True})
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):  # the tiles' folder, once no image is left in it
        work.parent.rmdir()
    result.summary = row
