"""What the napari plugin does, without napari: segment an image layer's data as ``nucseg
predict`` would, score a segmentation against ground truth as ``nucseg score`` does, read
nucseg's outputs back as layers, and the sample images. The widgets (:mod:`.widgets`) call
these and only draw; the tests call them without a viewer too.

**The network runs in a worker process** (:class:`Segmenter`, one spawned process that keeps
the model loaded): TensorFlow and a napari viewer cannot share a process on Linux with Mesa's
OpenGL (both bring their own LLVM; importing TensorFlow after the viewer's OpenGL set-up
crashes the process, measured with napari 0.9.2, PyQt5 5.15 and PyQt6 6.11, TensorFlow 2.21), and a
model that fails or runs out of memory then never takes the viewer down. The viewer's
process reads only the model file's settings (:func:`model_settings`).

In: an image layer's array (grey (H, W), RGB (H, W, 3) or channels first), a
:class:`nucseg_utils.model.NucleusModel` and the controls of ``nucseg predict``.
Out: :class:`Segmentation` (labels, the probability map, the nucleus count, the quality),
:func:`evaluation_table` and :func:`error_layers`, the layer data tuples of :func:`read`.
"""
from __future__ import annotations

import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nucseg_utils import big
from nucseg_utils.core import runs
from nucseg_utils.data import synthetic
from nucseg_utils.evaluation import metrics
from nucseg_utils.exports import files as export
from nucseg_utils.model import (
    ModelSettings,
    NucleusModel,
    control_changes,
    model_file,
    read_config,
)
from nucseg_utils.predict import folder as predict

__all__ = ["ERROR_COLOURS", "Segmentation", "describe", "error_layers", "evaluation_table",
           "Segmenter", "load_model", "methods_for_model", "model_settings", "read",
           "reader_for", "sample_fluorescence",
           "sample_images", "sample_stained", "save", "segment"]

# the paper's Fig. 9 colours: predicted nuclei with no true match, true nuclei missed
ERROR_COLOURS = {"extra": (0.0, 0.35, 1.0, 1.0), "missed": (1.0, 0.1, 0.1, 1.0)}


@dataclass
class Segmentation:
    """One image segmented: ``labels`` (0 background, 1..N nuclei), the nucleus
    ``probability`` (None for a tiled image), ``quality`` (the estimate and ``check`` of
    :mod:`nucseg_utils.inference.quality`, empty for a tiled image), the ``settings`` it ran
    with, and ``notes`` for the user (e.g. that it was tiled)."""
    labels: np.ndarray
    probability: np.ndarray | None
    quality: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def nuclei(self) -> int:
        return int(np.asarray(self.labels).max()) if np.size(self.labels) else 0


def load_model(name_or_path=None) -> NucleusModel:
    """A committed model by name (``release``, ``cpu``) or a model file; the default model
    when None (this loads the network: in the worker process)."""
    return NucleusModel.load(model_file(name_or_path))


def model_settings(name_or_path=None) -> ModelSettings:
    """A model's settings read from its file, without loading the network (the viewer's
    process never imports TensorFlow)."""
    return ModelSettings.from_config(read_config(model_file(name_or_path)))


_MODELS: dict = {}  # the worker process's loaded models, by file


def _segment_job(model_key, plane, options: dict) -> "Segmentation":
    """In the worker process: load the model once, segment, and return what pickles (a
    tiled image's labels as the path of their store)."""
    from nucseg_utils.core import quiet
    key = str(model_file(model_key))
    if key not in _MODELS:
        with quiet.tensorflow_logs():
            _MODELS[key] = load_model(model_key)
    seg = segment(_MODELS[key], plane, **options)
    if seg.settings.get("tiled"):
        seg.labels = None  # reopened from seg.settings["store"] by the viewer's process
    return seg


class Segmenter:
    """Segments in one worker process (spawned, so that it starts clean) that keeps its model
    loaded between calls: :meth:`segment` takes what :func:`segment` takes, with the model
    by name or file, and blocks until done (call it from a worker thread)."""

    def __init__(self):
        self._pool = None

    def segment(self, model_key, data, **options) -> "Segmentation":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1,
                                             mp_context=multiprocessing.get_context("spawn"))
        seg = self._pool.submit(_segment_job, model_key, as_plane(data), options).result()
        if seg.labels is None:
            import zarr
            store = export.output_paths(seg.settings["store"], "layer", ("ome-zarr",))["ome-zarr"]
            seg.labels = zarr.open_group(str(store), mode="r")["labels/nuclei/0"]
        return seg

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def as_plane(data) -> np.ndarray:
    """An image layer's data as the 2-D plane nucseg segments: (H, W) or (H, W, 3); a
    channels-first (C <= 4, H, W) array moved to channels last."""
    arr = np.asarray(data)
    if arr.ndim == 3 and arr.shape[0] <= 4 < arr.shape[-1]:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] > 4):
        raise ValueError(f"a {arr.ndim}-D layer of shape {arr.shape}: nucseg segments one 2-D "
                         f"image (grey or colour); choose a plane or a channel first")
    return arr


def segment(model: NucleusModel, data, *, tta: bool | None = None, diameter=None,
            threshold=None, min_size=None, method: str | None = None,
            exclude_border: bool = False, tile_above: int | None = None,
            progress=None) -> Segmentation:
    """Segment one image layer's data with ``nucseg predict``'s controls: the labels equal
    :meth:`NucleusModel.predict_instances` with the same settings. An image of more pixels
    than ``tile_above`` (default :data:`nucseg_utils.predict.folder.TILE_ABOVE`) is segmented
    tile by tile (:func:`nucseg_utils.big.predict_big`, memory bounded by the tile) and its
    labels come back lazily from the OME-Zarr it wrote; ``progress(done, total)`` is called
    per tile."""
    plane = as_plane(data)
    changes = control_changes(diameter, threshold, min_size, exclude_border)
    model = model.with_settings(**changes) if changes else model
    tta = model.settings.tta if tta is None else bool(tta)
    limit = predict.TILE_ABOVE if tile_above is None else tile_above
    settings = {"tta": tta, "method": method or model.settings.postprocessing.method,
                "diameter": diameter or None, **model.overrides}
    if plane.shape[0] * plane.shape[1] > limit:
        return _segment_tiled(model, plane, tta, method, settings, progress)
    labels, details = model.predict_instances(plane, tta=tta, method=method)
    return Segmentation(labels, details["probabilities"][..., 0], details["quality"], settings)


def _segment_tiled(model, plane, tta, method, settings, progress) -> Segmentation:
    import zarr
    out = Path(tempfile.mkdtemp(prefix="nucseg-napari-"))
    notes = [f"{plane.shape[0]}x{plane.shape[1]} px is above the tile limit: segmented tile "
             f"by tile into {out}"]
    log = notes.append if progress is None else (lambda m: (notes.append(m), progress(m)))
    res = big.predict_big(model, big.LazyImage(plane, big.guess_axes(plane.shape), "layer"),
                          out, sid="layer", tta=tta, method=method, formats=("ome-zarr",),
                          progress=False, log=log)
    labels = zarr.open_group(str(res.paths["ome-zarr"]), mode="r")["labels/nuclei/0"]
    return Segmentation(labels, None, {}, {**settings, "tiled": True, "store": str(out)},
                        notes)


def save(seg: Segmentation, image, folder, name: str, pixel_size: float | None = None) -> dict:
    """The ROI set, the label TIFF and the measurements of a segmentation, as ``nucseg
    predict`` writes them (``rois/``, ``labels/``, ``measurements/`` under ``folder``);
    returns {format: path}."""
    paths = export.output_paths(folder, name, ("tiff", "rois", "measurements"))
    predict.write_formats(paths, np.asarray(seg.labels), as_plane(image), pixel_size, name)
    return paths


def evaluation_table(truth, labels) -> tuple[pd.DataFrame, dict]:
    """The paper's "performance of a model" for one image: a table with one row per IoU
    threshold (TP, FP, FN, precision, recall, F1 and the image score TP/(TP+FP+FN)) and the
    summary (DSB, precision, recall and F1 at IoU 0.5), from
    :func:`nucseg_utils.evaluation.metrics.image_scores`: the numbers ``nucseg score`` gives."""
    r = metrics.image_scores(np.asarray(truth), np.asarray(labels))
    tp, fp, fn = r["tp"], r["fp"], r["fn"]
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame({
            "IoU threshold": np.round(r["thresholds"], 2), "TP": tp, "FP": fp, "FN": fn,
            "precision": np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0 * (fn == 0)),
            "recall": np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 1.0 * (fp == 0)),
            "F1": np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0),
            "score": r["score"]})
    summary = {k: r[k] for k in ("dsb", "precision", "recall", "f1", "n_true", "n_pred")}
    return table, summary


def error_layers(truth, labels, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(the predicted nuclei with no true match at IoU > ``iou``, the true nuclei missed),
    each as a label image of those objects alone (their own label values)."""
    truth, labels = np.asarray(truth), np.asarray(labels)
    errors = metrics.object_errors(truth, labels, iou=iou)
    extra = [k for k, c in errors["pred"].items() if c != "matched"]
    missed = [k for k, c in errors["true"].items() if c != "matched"]
    return (np.where(np.isin(labels, extra), labels, 0),
            np.where(np.isin(truth, missed), truth, 0))


# --------------------------------------------------------------------------- reading
def _is_store(path: Path) -> bool:
    return path.is_dir() and (path / ".zattrs").is_file() and path.suffix == ".zarr"


def reader_for(path):
    """:func:`read` when ``path`` is something nucseg wrote (an output folder with its
    ``predict.json``, or an ``.ome.zarr`` image), else None (napari tries other readers)."""
    if isinstance(path, list):
        path = path[0] if len(path) == 1 else None
    if path is None:
        return None
    p = Path(path)
    if (p.is_dir() and (p / "predict.json").is_file()) or _is_store(p):
        return read
    return None


def _scale(pixel_size) -> tuple:
    return (pixel_size, pixel_size) if pixel_size else (1.0, 1.0)


def read_ome_zarr(path) -> list[tuple]:
    """An image's OME-Zarr as nucseg writes it: the image (its pyramid, channels as
    separate layers are left to napari's own reader) and, under it, the nuclei as a labels
    layer; the pixel size as the layers' scale."""
    import zarr
    root = zarr.open_group(str(path), mode="r")
    name = Path(path).name.split(".")[0]
    layers = []
    with big.open_lazy(path) if "multiscales" in root.attrs else nullcontext() as lazy:
        if lazy is not None:
            levels = [root[d["path"]] for d in root.attrs["multiscales"][0]["datasets"]]
            rgb = levels[0].ndim == 3
            if rgb:
                levels = [_ChannelsLast(a) for a in levels]
            layers.append((levels if len(levels) > 1 else levels[0],
                           {"name": name, "scale": _scale(lazy.pixel_size), "rgb": rgb,
                            "multiscale": len(levels) > 1}, "image"))
    if "labels" in root and "nuclei" in root["labels"]:
        group = root["labels/nuclei"]
        with big.open_lazy(Path(path) / "labels" / "nuclei") as lazy:
            px = lazy.pixel_size
        levels = [group[d["path"]] for d in group.attrs["multiscales"][0]["datasets"]]
        layers.append((levels if len(levels) > 1 else levels[0],
                       {"name": f"{name} nuclei", "scale": _scale(px),
                        "multiscale": len(levels) > 1}, "labels"))
    return layers


class _ChannelsLast:
    """A (c, y, x) array seen as (y, x, c), for napari's RGB image layers."""

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape[1:]) + (array.shape[0],)
        self.dtype = array.dtype
        self.ndim = 3

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        return np.moveaxis(np.asarray(self.array[(key[2],) + key[:2]]), 0, -1)

    def __array__(self, dtype=None, copy=None):
        out = np.moveaxis(np.asarray(self.array), 0, -1)
        return out.astype(dtype) if dtype is not None else out


def read_output_folder(path) -> list[tuple]:
    """A ``nucseg predict`` output folder: for each image done, its labels (the label TIFF,
    else the PNG, else the OME-Zarr's) as a labels layer named by the image, with the pixel
    size the run recorded as its scale."""
    import tifffile

    from nucseg_utils.data import outputs
    path = Path(path)
    layers = []
    for done in sorted((path / "done").glob("*.json")):
        sid = done.stem
        row = runs.read_json(done).get("summary", {})
        px = row.get("pixel_size_um")
        meta = {"name": f"{sid} nuclei", "scale": _scale(px),
                "metadata": {"nucseg": {k: v for k, v in row.items() if k != "error"}}}
        files = export.output_paths(path, sid)
        if files["tiff"].is_file():
            with tifffile.TiffFile(files["tiff"]) as tif:
                layers.append((tif.series[0].levels[0].asarray(), meta, "labels"))
        elif files["labels-png"].is_file():
            layers.append((outputs.read_labels_png(files["labels-png"]), meta, "labels"))
        elif files["ome-zarr"].is_dir():
            layers += [layer for layer in read_ome_zarr(files["ome-zarr"])
                       if layer[2] == "labels"]
    return layers


def read(path) -> list[tuple]:
    """napari's reader: the layer data tuples of what nucseg wrote at ``path``."""
    if isinstance(path, list):
        path = path[0]
    p = Path(path)
    return read_output_folder(p) if (p / "predict.json").is_file() else read_ome_zarr(p)


# --------------------------------------------------------------------------- sample data
SAMPLES = {"fluorescence": ("fluorescence", 7, (256, 320)),
           "stained tissue": ("stained", 11, (256, 320))}


def sample_images(kind: str = "fluorescence") -> list[tuple]:
    """A synthetic nuclei image of nucseg's built-in set (no download) and its true nuclei,
    as layer data tuples."""
    look, seed, shape = SAMPLES[kind]
    image, labels = synthetic.make_image(np.random.default_rng(seed), shape, look,
                                         channels=3)
    return [(image, {"name": f"nuclei ({kind}, synthetic)", "rgb": True}, "image"),
            (labels, {"name": "true nuclei", "visible": False}, "labels")]


def sample_fluorescence() -> list[tuple]:
    return sample_images("fluorescence")


def sample_stained() -> list[tuple]:
    return sample_images("stained tissue")


def methods_for_model(settings: ModelSettings) -> list[str]:
    """The post-processing methods a model's outputs allow."""
    from nucseg_utils.postprocessing import methods_for
    return methods_for(len(settings.targets))


def describe(seg: Segmentation) -> str:
    """One line for the widget: the count, the quality and what to do with it."""
    if not seg.quality:
        return f"{seg.nuclei} nuclei (tiled: no quality score)"
    q = seg.quality
    check = "check this image by eye" if q["check"] else "no sign of trouble"
    return f"{seg.nuclei} nuclei; quality {q['quality']:.2f} ({check})"
