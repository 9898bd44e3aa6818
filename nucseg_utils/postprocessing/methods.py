"""Post-processing: from per-pixel probabilities to one label per nucleus.

In: a probability map (H, W) or (H, W, C) at the image's native size; channel 0 is the
nucleus probability; for models of two or three channels, channel 1 the probability of the
zone where two nuclei touch; for three-channel models, channel 2 the predicted distance to
the nucleus' edge as a fraction of its largest (1 at each centre; see
:func:`nucseg_utils.inference.preprocessing.centre_distance`).
Out: an instance label image (H, W) of uint16/int32, 0 = background.

Four methods, registered in :data:`METHODS` (name, the channels it reads, its calibration grid,
its steps, a description), which calibration, figures, the model package, the command line and
the notebooks read; a model's ``postprocess`` names one:

- ``paper``: Otsu threshold, hole filling, markers at the maxima of the distance transform at
  least ``min_distance_factor`` x the mean nucleus radius apart (the mean size is measured on
  the image's own foreground), marker-controlled watershed on the inverted distance, labelling.
- ``touching``: nucleus mask > threshold; markers are the connected parts of the mask once the
  predicted touching zone is removed; watershed on the inverted nucleus probability.
- ``distance``: nucleus mask > threshold; markers are the connected parts of the predicted
  distance map above ``distance_seed`` (the central part of every nucleus); watershed on the
  inverted distance map, so two touching nuclei meet where their distances fall to the edge.
- ``cc``: the plain connected components of the thresholded mask (an ablation).

All four return an empty label image for a map with no foreground or a constant map (the
paper's code crashed there), and drop objects smaller than ``min_size`` pixels.

Two filters follow any method (:func:`filter_objects`; both off by default, 0): an object
smaller than ``min_size_factor`` x the image's own typical nucleus area (:func:`typical_area`,
measured on its objects) is dropped, and so is one whose mean nucleus probability is below
``min_mean_prob``; then every nucleus is grown by ``dilation`` pixels (:func:`finish`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import expand_labels, watershed

# every setting of the post-processing, its defaults written once (in the core layer,
# beside the other settings of a recipe)
from nucseg_utils.core.settings import PostprocessSettings, config_key

__all__ = [
    "DEFAULTS", "DILATIONS", "DISTANCE_SEEDS", "MARKER_SPACINGS", "METHODS", "Method", "PAPER",
    "PostprocessSettings", "THRESHOLDS", "calibrated_settings", "cc_steps", "config_key",
    "dilate_labels", "distance_steps", "drop_border", "filter_objects", "finish", "get_method",
    "mean_radius", "methods_for", "nucleus_channel", "otsu_foreground", "paper_steps",
    "postprocess", "postprocess_all", "postprocess_as", "register", "remove_small",
    "seed_min_size", "setting_label", "setting_words", "settings", "touching_steps",
    "typical_area"
]


def _label_dtype(n: int):
    return np.uint16 if n < 65535 else np.int32


def otsu_foreground(prob: np.ndarray, fallback: float = 0.5) -> np.ndarray:
    """Otsu threshold of a probability map; a (near-)constant map is thresholded at
    ``fallback`` instead (Otsu is undefined there)."""
    p = np.asarray(prob, np.float32)
    if p.size == 0 or float(p.max() - p.min()) < 1e-3:
        return p > fallback
    t = float(threshold_otsu(p))
    return p > t


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove objects smaller than ``min_size`` pixels and relabel 1..N consecutively."""
    if labels.max() == 0:
        return labels.astype(np.uint16)
    areas = np.bincount(labels.ravel())
    keep = areas >= min_size
    keep[0] = False
    lut = np.zeros(areas.size, np.int64)
    lut[keep] = np.arange(1, keep.sum() + 1)
    return lut[labels].astype(_label_dtype(int(keep.sum())))


def mean_radius(mask: np.ndarray) -> float:
    """Mean equivalent radius of the connected components of a binary mask (0 if none)."""
    lab, n = ndi.label(mask)
    if n == 0:
        return 0.0
    areas = np.bincount(lab.ravel())[1:]
    return float(np.sqrt(areas.mean() / np.pi))


def paper_steps(prob: np.ndarray, min_distance_factor: float = 0.5, min_size: int = 10) -> dict:
    """The paper's post-processing, keeping every intermediate step (for notebook 05):
    ``foreground`` (Otsu + hole filling), ``distance``, ``markers``, ``labels``. ``prob`` is
    the nucleus probability (H, W), or a map (H, W, C) whose channel 0 it is."""
    p = np.asarray(prob, np.float32)
    fg = ndi.binary_fill_holes(otsu_foreground(p[..., 0] if p.ndim == 3 else p))
    if not fg.any():
        empty = np.zeros(fg.shape, np.uint16)
        return {"foreground": fg, "distance": np.zeros(fg.shape), "markers": empty,
                "labels": empty}
    dist = ndi.distance_transform_edt(fg)
    r = mean_radius(fg)
    min_dist = max(1, int(round(min_distance_factor * r)))
    comps, _ = ndi.label(fg)
    peaks = peak_local_max(dist, min_distance=min_dist, labels=comps, exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # a component without a peak (e.g. a flat plateau) still becomes one object
    missing = np.setdiff1d(np.unique(comps[fg]), np.unique(comps[markers > 0]))
    if missing.size:
        extra = np.isin(comps, missing)
        markers[extra] = comps[extra] + len(peaks)
    labels = watershed(-dist, markers, mask=fg)
    return {"foreground": fg, "distance": dist, "markers": markers,
            "labels": remove_small(labels, min_size)}


def touching_steps(prob: np.ndarray, threshold: float = 0.5, min_size: int = 10,
                   seed_threshold: float | None = None) -> dict:
    """The ``touching`` post-processing, keeping every intermediate step (for notebook 05).

    1. ``nucleus`` and ``touching``: the two probability channels;
    2. ``foreground``: nucleus probability > ``threshold``, holes filled;
    3. ``seed_map``: nucleus minus touching probability > ``seed_threshold`` (default
       ``threshold``): the nuclei with the zones where they touch cut away;
    4. ``seeds``: its connected parts, each a label (parts smaller than ``min_size // 2``
       dropped); a foreground component left without a seed becomes one seed of its own;
    5. ``watershed``: the seeds grown over the inverted nucleus probability, inside the
       foreground, so two touching nuclei meet where the probability dips between them;
    6. ``labels``: the watershed without objects smaller than ``min_size`` pixels, numbered
       1..N.
    """
    p = np.asarray(prob, np.float32)
    if p.ndim == 2 or p.shape[-1] < 2:
        raise ValueError("the 'touching' post-processing needs a two-channel map "
                         "(nucleus, touching zone)")
    seed_threshold = threshold if seed_threshold is None else seed_threshold
    nucleus, touch = p[..., 0], p[..., 1]
    fg = ndi.binary_fill_holes(nucleus > threshold)
    seed_map = (nucleus - touch) > seed_threshold
    steps = {"nucleus": nucleus, "touching": touch, "foreground": fg, "seed_map": seed_map}
    return _seeded_watershed(steps, -nucleus, min_size)


def distance_steps(prob: np.ndarray, threshold: float = 0.5, min_size: int = 10,
                   distance_seed: float = 0.5) -> dict:
    """The ``distance`` post-processing, keeping every intermediate step (for notebook 05).

    1. ``nucleus`` and ``distance``: channels 0 and 2 of the map;
    2. ``foreground``: nucleus probability > ``threshold``, holes filled;
    3. ``seed_map``: distance > ``distance_seed`` inside the foreground: the centre of every
       nucleus, well apart from its neighbours' centres even where the nuclei touch;
    4. ``seeds``: its connected parts, each a label (parts smaller than ``min_size // 2``
       dropped); a foreground component left without a seed becomes one seed of its own;
    5. ``watershed``: the seeds grown over the inverted distance map, inside the foreground;
    6. ``labels``: the watershed without objects smaller than ``min_size`` pixels.
    """
    p = np.asarray(prob, np.float32)
    if p.ndim == 2 or p.shape[-1] < 3:
        raise ValueError("the 'distance' post-processing needs a three-channel map "
                         "(nucleus, touching zone, distance to the edge)")
    nucleus, dist = p[..., 0], p[..., 2]
    fg = ndi.binary_fill_holes(nucleus > threshold)
    seed_map = fg & (dist > distance_seed)
    steps = {"nucleus": nucleus, "distance": dist, "foreground": fg, "seed_map": seed_map}
    return _seeded_watershed(steps, -dist, min_size)


def _seeded_watershed(steps: dict, relief: np.ndarray, min_size: int) -> dict:
    """``steps`` (with ``foreground`` and ``seed_map``) completed by the ``seeds`` (see
    :func:`_seeds`), their ``watershed`` over ``relief`` inside the foreground, and the
    ``labels`` without objects under ``min_size`` px; all empty for an empty foreground."""
    fg = steps["foreground"]
    if not fg.any():
        empty = np.zeros(fg.shape, np.uint16)
        return {**steps, "seeds": empty, "watershed": empty, "labels": empty}
    seeds = _seeds(steps["seed_map"], fg, min_size)
    grown = watershed(relief, seeds, mask=fg)
    return {**steps, "seeds": seeds, "watershed": grown,
            "labels": remove_small(grown, min_size)}


def _seeds(seed_map: np.ndarray, fg: np.ndarray, min_size: int) -> np.ndarray:
    """The connected parts of ``seed_map`` as labels, without those smaller than
    :func:`seed_min_size`; every component of ``fg`` left without one becomes a seed."""
    seeds, n = ndi.label(seed_map)
    if n:
        seeds = remove_small(seeds, seed_min_size(min_size)).astype(np.int32)
        n = int(seeds.max())
    comps, nc = ndi.label(fg)
    missing = np.setdiff1d(np.arange(1, nc + 1), np.unique(comps[seeds > 0]))
    if missing.size:
        extra = np.isin(comps, missing)
        seeds[extra] = comps[extra] + n
    return seeds


def cc_steps(prob: np.ndarray, threshold: float = 0.5, min_size: int = 10) -> dict:
    """Plain connected components: ``foreground`` (nucleus probability > ``threshold``, holes
    filled) and its connected parts as ``labels`` (objects under ``min_size`` px dropped)."""
    p = np.asarray(prob, np.float32)
    p = p[..., 0] if p.ndim == 3 else p
    fg = ndi.binary_fill_holes(p > threshold)
    labels, _ = ndi.label(fg)
    return {"nucleus": p, "foreground": fg, "labels": remove_small(labels, min_size)}


def typical_area(labels: np.ndarray) -> float:
    """The image's typical nucleus area in pixels, from its own objects: their area-weighted
    mean area (sum of areas squared over the sum of areas; 0 for no object), the area of the
    object a foreground pixel belongs to, on average. Many small specks hardly move it (4
    nuclei of 2,000 px and 138 specks of 20 px: 1,492 px, where the plain mean is 73 px)."""
    areas = np.bincount(np.asarray(labels).ravel())[1:].astype(np.float64)
    total = areas.sum()
    return float((areas ** 2).sum() / total) if total else 0.0


def filter_objects(labels: np.ndarray, nucleus: np.ndarray, min_size_factor: float = 0.0,
                   min_mean_prob: float = 0.0) -> np.ndarray:
    """Drop the objects smaller than ``min_size_factor`` x :func:`typical_area` of the label
    image and those whose mean nucleus probability (``nucleus``, the map's channel 0) is below
    ``min_mean_prob``; the others relabelled 1..N in their order. Both 0: ``labels`` as given."""
    if (min_size_factor <= 0 and min_mean_prob <= 0) or labels.max() == 0:
        return labels
    flat = labels.ravel()
    areas = np.bincount(flat)
    keep = areas > 0
    if min_size_factor > 0:
        keep &= areas >= min_size_factor * typical_area(labels)
    if min_mean_prob > 0:
        sums = np.bincount(flat, weights=np.asarray(nucleus, np.float64).ravel(),
                           minlength=areas.size)
        keep &= sums >= min_mean_prob * areas
    keep[0] = False
    lut = np.zeros(areas.size, np.int64)
    lut[keep] = np.arange(1, keep.sum() + 1)
    return lut[labels].astype(_label_dtype(int(keep.sum())))


def nucleus_channel(prob: np.ndarray) -> np.ndarray:
    """Channel 0 of a probability map, (H, W) or (H, W, C): the nucleus probability."""
    p = np.asarray(prob)
    return p[..., 0] if p.ndim == 3 else p


def finish(labels: np.ndarray, prob: np.ndarray, settings: dict) -> np.ndarray:
    """What follows every method: :func:`filter_objects` with the settings'
    ``min_size_factor`` and ``min_mean_prob`` (0 when absent), then :func:`dilate_labels` by
    their ``dilation``, then, with ``exclude_border``, :func:`drop_border`."""
    labels = filter_objects(labels, nucleus_channel(prob),
                            float(settings.get("min_size_factor") or 0),
                            float(settings.get("min_mean_prob") or 0))
    labels = dilate_labels(labels, int(settings.get("dilation") or 0))
    return drop_border(labels) if settings.get("exclude_border") else labels


def drop_border(labels: np.ndarray) -> np.ndarray:
    """``labels`` without the nuclei that touch the image's border (a nucleus cut by the
    field of view), the others numbered 1..N in their order."""
    lab = np.asarray(labels)
    if lab.size == 0 or lab.max() == 0:
        return labels
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    keep = np.ones(int(lab.max()) + 1, bool)
    keep[edge] = False
    keep[0] = False
    lut = np.zeros(keep.size, np.int64)
    lut[keep] = np.arange(1, keep.sum() + 1)
    return lut[lab].astype(_label_dtype(int(keep.sum())))


def dilate_labels(labels: np.ndarray, pixels: int) -> np.ndarray:
    """Grow every nucleus by ``pixels`` into the background, never into another nucleus
    (a calibration: a network trained on crisp masks tends to predict them a little small)."""
    if pixels <= 0 or labels.max() == 0:
        return labels
    return expand_labels(labels, distance=pixels).astype(labels.dtype)


def calibrated_settings() -> list[str]:
    """The settings calibration may choose (a ``label`` in their metadata), in field order."""
    return [f.name for f in fields(PostprocessSettings) if "label" in f.metadata]


def setting_label(name: str) -> str:
    """The column heading of a calibrated setting (:func:`calibrated_settings`)."""
    return next(f.metadata["label"] for f in fields(PostprocessSettings) if f.name == name)


DEFAULTS = PostprocessSettings().config()  # {config key: default}


def settings(config: dict) -> dict:
    """The post-processing settings of a model's config, as config keys, with the defaults
    of :class:`PostprocessSettings` for the keys it does not hold: what a :class:`Method`
    and :func:`finish` read, and what the model-zoo package's documentation describes."""
    return PostprocessSettings.from_config(config).config()


def seed_min_size(min_size: int) -> int:
    """Seeds of the ``touching`` and ``distance`` watersheds smaller than this are dropped:
    half an object."""
    return max(2, min_size // 2)


# --------------------------------------------------------------------------- the registry
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)  # 0.7 since both models of 0.3-0.6 chose 0.6, its edge
DILATIONS = (0, 1)
MARKER_SPACINGS = (0.5, 0.75, 1.0)
DISTANCE_SEEDS = (0.4, 0.5, 0.6, 0.7, 0.8)  # levels of the distance map for the seeds


@dataclass(frozen=True)
class Method:
    """One post-processing method.

    ``channels``: how many channels of the probability map it reads (1: the nucleus only).
    ``parameters``: the settings its ``steps`` function takes besides the map (``min_size``
    always). ``grid``: the values ``nucseg publish`` tries on the validation images, in order
    ({setting: values}, ``dilation`` last). ``steps(prob, **parameters)``: the intermediate
    steps, a dict ending with ``labels``. ``explain(settings)``: the method in words, with the
    settings' values (the model package's documentation); ``words(settings)`` in a few words.
    ``seeded``: the name of a seeded
    watershed in the lever table (None for the others). ``calibration_rank``: the order in
    which calibration tries the methods (on a tie the first tried wins)."""
    name: str
    channels: int
    description: str
    parameters: tuple
    grid: dict
    steps: Callable
    explain: Callable
    words: Callable
    seeded: str | None = None
    calibration_rank: int = 0

    def steps_of(self, prob: np.ndarray, settings: dict) -> dict:
        """:attr:`steps` with the values of ``settings`` (a model's, :func:`settings`) that
        this method reads."""
        return self.steps(prob, **{k: settings[k] for k in self.parameters})

    def run(self, prob: np.ndarray, settings: dict) -> np.ndarray:
        """The label image (before any dilation)."""
        return self.steps_of(prob, settings)["labels"]

    def candidates(self) -> list[dict]:
        """Every setting of :attr:`grid`, as ``{"postprocess": name, setting: value, ...}``."""
        keys = list(self.grid)
        return [{"postprocess": self.name, **dict(zip(keys, values))}
                for values in itertools.product(*(self.grid[k] for k in keys))]

    def phrase(self, settings: dict) -> str:
        """The method and its calibrated values in a few words (recipe names in the lever
        table), e.g. "touching at threshold 0.6"."""
        return self.words(PostprocessSettings.from_config(settings).config())


_SETTING_WORDS = {"threshold": lambda v: f"threshold {v:g}",
                  "distance_seed": lambda v: f"seeds above {v:g}",
                  "min_distance_factor": lambda v: f"marker spacing {v:g}",
                  "dilation": lambda v: f"dilation {v}"}


def setting_words(setting: dict, keys) -> str:
    """``{"threshold": 0.5, "dilation": 0}`` -> "threshold 0.5, dilation 0" (for ``keys``)."""
    return ", ".join(_SETTING_WORDS[k](setting[k]) for k in keys if k in setting)


def _grown(pp: dict) -> str:
    """The words of :func:`finish`'s filters and dilation ("" when all are off)."""
    words = ""
    if pp.get("min_size_factor"):
        words += (f"; objects under {pp['min_size_factor']:g} x the image's typical nucleus "
                  f"area dropped")
    if pp.get("min_mean_prob"):
        words += f"; objects of mean nucleus probability under {pp['min_mean_prob']:g} dropped"
    if pp["dilation"]:
        words += f"; every nucleus grown by {pp['dilation']} px"
    if pp.get("exclude_border"):
        words += "; nuclei touching the image's border dropped"
    return words


def _explain_paper(pp: dict) -> str:
    return (f"foreground = Otsu threshold of the nucleus probability (holes filled); markers = "
            f"maxima of its distance transform at least {pp['min_distance_factor']:g} x the "
            f"mean nucleus radius apart; watershed of the inverted distance from the markers "
            f"inside the foreground; objects under {pp['min_size']} px dropped{_grown(pp)}")


def _explain_seeded(pp: dict, seeds: str, relief: str) -> str:
    """The words of a seeded watershed (``touching``, ``distance``): ``seeds`` says what its
    seeds are the connected parts of, ``relief`` what it floods."""
    return (f"foreground = nucleus probability > {pp['threshold']:g} (holes filled); seeds = "
            f"connected parts of {seeds} (parts under {seed_min_size(pp['min_size'])} px "
            f"dropped; a foreground part without a seed becomes its own seed); watershed of the "
            f"inverted {relief} from the seeds inside the foreground; objects under "
            f"{pp['min_size']} px dropped{_grown(pp)}")


def _explain_touching(pp: dict) -> str:
    return _explain_seeded(pp, f"(nucleus - touching zone) > {pp['threshold']:g}",
                           "nucleus probability")


def _explain_distance(pp: dict) -> str:
    return _explain_seeded(pp, f"centre distance > {pp['distance_seed']:g} inside the "
                               f"foreground", "centre distance")


def _explain_cc(pp: dict) -> str:
    return (f"foreground = nucleus probability > {pp['threshold']:g} (holes filled); each "
            f"connected part one nucleus; objects under {pp['min_size']} px dropped"
            f"{_grown(pp)}")


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("paper", 1, "the paper's: Otsu threshold, markers from the distance transform "
           "spaced by the mean nucleus size, watershed", ("min_distance_factor", "min_size"),
           {"min_distance_factor": MARKER_SPACINGS, "dilation": DILATIONS}, paper_steps,
           _explain_paper,
           lambda pp: f"paper's watershed (marker spacing {pp['min_distance_factor']:g})",
           calibration_rank=2),
    Method("touching", 2, "seeds = nuclei minus the predicted touching zone, watershed of the "
           "nucleus probability", ("threshold", "min_size"),
           {"threshold": THRESHOLDS, "dilation": DILATIONS}, touching_steps, _explain_touching,
           lambda pp: f"touching at threshold {pp['threshold']:g}", seeded="touching-zone",
           calibration_rank=1),
    Method("distance", 3, "seeds = centres of the predicted distance map, watershed of the "
           "distance", ("threshold", "min_size", "distance_seed"),
           {"threshold": THRESHOLDS, "distance_seed": DISTANCE_SEEDS, "dilation": DILATIONS},
           distance_steps, _explain_distance,
           lambda pp: (f"distance watershed at threshold {pp['threshold']:g}, seeds above "
                       f"{pp['distance_seed']:g}"), seeded="distance-map", calibration_rank=0),
    Method("cc", 1, "connected components of the thresholded mask (a baseline)",
           ("threshold", "min_size"), {"threshold": THRESHOLDS, "dilation": (0,)}, cc_steps,
           _explain_cc, lambda pp: f"cc at threshold {pp['threshold']:g}", calibration_rank=3),
)}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (its settings must be fields of
    :class:`PostprocessSettings`): calibration, the command line's choices, the figures and
    the model package's documentation read it from there."""
    known = {f.name for f in fields(PostprocessSettings)}
    unknown = [k for k in (*method.parameters, *method.grid) if k not in known]
    if unknown:
        raise ValueError(f"post-processing '{method.name}': {', '.join(unknown)} not a field of "
                         f"PostprocessSettings (add it in nucseg_utils/core/settings.py, with its "
                         f"default)")
    METHODS[method.name] = method
    return method


PAPER = "paper"  # the paper's method: the lever table's baseline


def methods_for(n_channels: int) -> list[str]:
    """The names of the methods of :data:`METHODS` that a map of ``n_channels`` channels
    allows, in the registry's order."""
    return [m.name for m in METHODS.values() if m.channels <= n_channels]


def get_method(name: str) -> Method:
    """The registered method ``name``; ValueError naming the choices otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown post-processing '{name}'; choose one of "
                         f"{', '.join(METHODS)}")
    return METHODS[name]


def postprocess(prob: np.ndarray, method: str = "paper", **values) -> np.ndarray:
    """The label image of ``prob`` ((H, W) or (H, W, C)) by one of :data:`METHODS`, then
    :func:`finish` (the two object filters, then each nucleus grown by ``dilation`` pixels).
    ``values`` are settings of :class:`PostprocessSettings` (the defaults there for the rest):
    ``threshold`` is the nucleus-probability threshold of ``touching``, ``distance`` and ``cc``
    (``paper`` uses Otsu's), ``distance_seed`` the level of the distance map above which
    ``distance`` finds its seeds, and so on. A ValueError names an unknown setting."""
    return postprocess_as(prob, PostprocessSettings.from_config({}, method=method,
                                                                **values).config())


def postprocess_as(prob: np.ndarray, config: dict, method: str | None = None) -> np.ndarray:
    """The label image of one probability map, post-processed as a model's ``config`` says
    (:func:`settings`; ``method`` overrides its ``postprocess``)."""
    pp = settings(config)
    prob = np.asarray(prob, np.float32)
    labels = get_method(method or pp["postprocess"]).run(prob, pp)
    return finish(labels, prob, pp)


def postprocess_all(probs: dict, config: dict, method: str | None = None) -> dict:
    """{id: label image} of {id: probability map}, each by :func:`postprocess_as`."""
    return {sid: postprocess_as(p, config, method) for sid, p in probs.items()}
