"""Post-processing: from per-pixel probabilities to one label per nucleus.

In: a probability map (H, W) or (H, W, C) at the image's native size; channel 0 is the
nucleus probability; for models of two or three channels, channel 1 the probability of the
zone where two nuclei touch; for three-channel models, channel 2 the predicted distance to
the nucleus' edge as a fraction of its largest (1 at each centre; see
:func:`nucseg_utils.preprocessing.centre_distance`).
Out: an instance label image (H, W) of uint16/int32, 0 = background.

Four methods, chosen by the profile's ``postprocess``:

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
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .profiles import POSTPROCESS_CHANNELS as CHANNELS  # the channels each method needs

METHODS = tuple(CHANNELS)  # paper, touching, distance, cc


def methods_for(n_channels: int) -> list[str]:
    """The methods of :data:`METHODS` that a map of ``n_channels`` channels allows."""
    return [m for m in METHODS if CHANNELS[m] <= n_channels]


def _label_dtype(n: int):
    return np.uint16 if n < 65535 else np.int32


def otsu_foreground(prob: np.ndarray, fallback: float = 0.5) -> np.ndarray:
    """Otsu threshold of a probability map; a (near-)constant map is thresholded at
    ``fallback`` instead (Otsu is undefined there)."""
    from skimage.filters import threshold_otsu
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


def watershed_paper(prob: np.ndarray, min_distance_factor: float = 0.5,
                    min_size: int = 10) -> np.ndarray:
    """The paper's post-processing (see module docstring)."""
    return paper_steps(prob, min_distance_factor, min_size)["labels"]


def paper_steps(prob: np.ndarray, min_distance_factor: float = 0.5, min_size: int = 10) -> dict:
    """The paper's post-processing, keeping every intermediate step (for notebook 05):
    ``foreground`` (Otsu + hole filling), ``distance``, ``markers``, ``labels``."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed
    fg = ndi.binary_fill_holes(otsu_foreground(prob))
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


def watershed_touching(prob: np.ndarray, threshold: float = 0.5, seed_threshold: float = 0.5,
                       min_size: int = 10) -> np.ndarray:
    """Markers from the nucleus mask minus the predicted touching zone (see module docstring)."""
    return touching_steps(prob, threshold, min_size, seed_threshold)["labels"]


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
       1..N (what :func:`watershed_touching` returns).
    """
    p = np.asarray(prob, np.float32)
    if p.ndim == 2 or p.shape[-1] < CHANNELS["touching"]:
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
    if p.ndim == 2 or p.shape[-1] < CHANNELS["distance"]:
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
    from skimage.segmentation import watershed
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


def connected_components(prob: np.ndarray, threshold: float = 0.5, min_size: int = 10):
    p = np.asarray(prob, np.float32)
    p = p[..., 0] if p.ndim == 3 else p
    labels, _ = ndi.label(ndi.binary_fill_holes(p > threshold))
    return remove_small(labels, min_size)


def dilate_labels(labels: np.ndarray, pixels: int) -> np.ndarray:
    """Grow every nucleus by ``pixels`` into the background, never into another nucleus
    (a calibration: a network trained on crisp masks tends to predict them a little small)."""
    if pixels <= 0 or labels.max() == 0:
        return labels
    from skimage.segmentation import expand_labels
    return expand_labels(labels, distance=pixels).astype(labels.dtype)


DEFAULTS = {"postprocess": "paper", "min_distance_factor": 0.5, "min_size": 10,
            "threshold": 0.5, "distance_seed": 0.5, "dilation": 0}


def settings(config: dict) -> dict:
    """The post-processing settings of a model's config, with :data:`DEFAULTS` for the keys
    it does not hold: what :func:`postprocess` is called with, and what the model-zoo
    package's documentation describes."""
    return {k: config.get(k, v) for k, v in DEFAULTS.items()}


def seed_min_size(min_size: int) -> int:
    """Seeds of the ``touching`` and ``distance`` watersheds smaller than this are dropped:
    half an object."""
    return max(2, min_size // 2)


def postprocess(prob: np.ndarray, method: str = "paper", min_distance_factor: float = 0.5,
                min_size: int = 10, threshold: float = 0.5, dilation: int = 0,
                distance_seed: float = 0.5) -> np.ndarray:
    """Dispatch to one of :data:`METHODS`, then grow each nucleus by ``dilation`` pixels.
    ``prob`` is (H, W) or (H, W, C). ``threshold`` is the nucleus-probability threshold of
    ``touching``, ``distance`` and ``cc`` (``paper`` uses Otsu's); ``distance_seed`` the
    level of the distance map above which ``distance`` finds its seeds."""
    p = np.asarray(prob, np.float32)
    if method == "paper":
        labels = watershed_paper(p[..., 0] if p.ndim == 3 else p, min_distance_factor, min_size)
    elif method == "touching":
        labels = watershed_touching(p, threshold, threshold, min_size)
    elif method == "distance":
        labels = distance_steps(p, threshold, min_size, distance_seed)["labels"]
    elif method == "cc":
        labels = connected_components(p, threshold, min_size)
    else:
        raise ValueError(f"unknown post-processing '{method}'; choose one of "
                         f"{', '.join(METHODS)}")
    return dilate_labels(labels, int(dilation))
