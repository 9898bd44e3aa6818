"""Preprocessing: what happens to an image before the network sees it, and to the ground truth
before it becomes a training target.

In: an RGB float image in [0, 1] (from :mod:`nucseg_utils.data`) and an instance label image.
Out: a normalised float32 image, and target channels (``mask``: nucleus pixels; ``touching``:
pixels whose neighbourhood holds two different nuclei, which marks where touching nuclei must
be split; ``distance``: each pixel's distance to its nucleus' edge, as a fraction of that
nucleus' largest, 1 at its centre). Also the paper's resizing, done so that masks stay binary.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed

from nucseg_utils.data.dsb import modality_of

# percentile normalisation: the percentiles mapped to 0 and 1, and the range kept after it
# (the model-zoo export and the figures of notebook 2 describe these same values)
PERCENTILES = (1.0, 99.8)
CLIP = (-0.5, 1.5)


NORMALIZATIONS = ("unit", "percentile", "haematoxylin")


def normalize(image: np.ndarray, mode: str = "percentile", low: float = PERCENTILES[0],
              high: float = PERCENTILES[1]) -> np.ndarray:
    """Normalise one image.

    ``unit``: the paper's: values as read, in [0, 1] (8-bit / 255).
    ``percentile``: the [low, high] percentiles of all channels together map to [0, 1] (colour
    balance kept), and an image whose background is bright (brightfield, stained tissue) is
    inverted so that nuclei are always brighter than the background.
    ``haematoxylin``: as ``percentile``, but a stained-tissue image
    (:func:`nucseg_utils.data.modality_of`) is first unmixed into its haematoxylin channel
    (:func:`haematoxylin_density`), which holds the nuclei whatever the tissue's colour
    balance or its eosin; that grey channel, scaled by its percentiles, fills all three
    channels, so that stained nuclei look like fluorescent ones: bright on dark.
    """
    img = np.asarray(image, np.float32)
    if mode == "unit":
        return img
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization '{mode}'; choose one of "
                         f"{', '.join(NORMALIZATIONS)}")
    if mode == "haematoxylin" and img.ndim == 3 and img.shape[-1] == 3:
        if modality_of(img) == "stained":
            grey = _scale(haematoxylin_density(img), low, high)
            return np.repeat(np.clip(grey, *CLIP)[..., None], 3, axis=-1).astype(np.float32)
    out = _scale(img, low, high)
    if background_is_bright(img):
        out = 1.0 - out
    return np.clip(out, *CLIP).astype(np.float32)


def _scale(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """The [low, high] percentiles of ``img`` mapped to [0, 1] (all 0 for a flat image)."""
    lo, hi = np.percentile(img, [low, high])
    return np.zeros_like(img) if hi - lo < 1e-6 else (img - lo) / (hi - lo)


def haematoxylin_density(image: np.ndarray) -> np.ndarray:
    """The haematoxylin channel (optical density) of an RGB image of stained tissue, by
    scikit-image's colour deconvolution (Ruifrok and Johnston's matrix): high in nuclei."""
    return rgb2hed(np.clip(np.asarray(image, np.float32), 0.0, 1.0))[..., 0].astype(np.float32)


def background_is_bright(image: np.ndarray) -> bool:
    """True when most of the image (its median) is brighter than the middle of its range."""
    grey = np.asarray(image, np.float32).mean(axis=-1)
    lo, hi = np.percentile(grey, [1, 99])
    return bool(np.median(grey) > (lo + hi) / 2)


def touching_zone(labels: np.ndarray, size: int = 5) -> np.ndarray:
    """Pixels whose ``size`` x ``size`` neighbourhood holds two different nuclei."""
    lab = np.asarray(labels)
    if lab.max() == 0:
        return np.zeros(lab.shape, bool)
    # background counts as "larger than every label" for the minimum; the sentinel must stay
    # small (ndimage's filters overflow on int64's maximum)
    big = int(lab.max()) + 1
    l32 = lab.astype(np.int32)
    hi = ndi.maximum_filter(l32, size=size)
    lo = ndi.minimum_filter(np.where(l32 > 0, l32, big), size=size)
    return (lo != big) & (hi != lo)


def centre_distance(labels: np.ndarray) -> np.ndarray:
    """Each nucleus pixel's distance to the nearest pixel outside its nucleus (background or
    another nucleus), divided by the largest such distance in its nucleus: 1 at the centre
    of every nucleus whatever its size, falling to about 1/radius at its edge, 0 outside.
    Two touching nuclei get two separate peaks, which a watershed splits between. Computed
    on the training crop: a nucleus the crop cuts is normalised by its visible part, and the
    crop's border is not an edge."""
    lab = np.asarray(labels)
    if lab.max() == 0:
        return np.zeros(lab.shape, np.float32)
    # a nucleus' edge pixels (next to the background or to another nucleus) are at distance
    # 1, the others 1 + their distance to the nearest edge: touching nuclei are cut apart
    l32 = lab.astype(np.int32)
    inner = ((l32 > 0) & (ndi.maximum_filter(l32, size=3) == l32)
             & (ndi.minimum_filter(l32, size=3) == l32))
    dist = ndi.distance_transform_edt(inner) + (l32 > 0)
    ids = np.unique(l32[l32 > 0])
    peak = np.zeros(int(l32.max()) + 1, np.float64)
    peak[ids] = ndi.maximum(dist, l32, ids)
    out = np.where(l32 > 0, dist / np.maximum(peak[l32], 1.0), 0.0)
    return out.astype(np.float32)


def make_targets(labels: np.ndarray, targets=("mask",)) -> np.ndarray:
    """Stack the target channels of a label image: (H, W, len(targets)) float32 (0/1 for
    ``mask`` and ``touching``, in [0, 1] for ``distance``)."""
    chans = []
    for t in targets:
        if t == "mask":
            chans.append(labels > 0)
        elif t == "touching":
            chans.append(touching_zone(labels))
        elif t == "distance":
            chans.append(centre_distance(labels))
        else:
            raise ValueError(f"unknown target '{t}'")
    return np.stack(chans, axis=-1).astype(np.float32)


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an image or a probability map (H, W[, C]) to ``shape``."""
    img = np.asarray(image, np.float32)
    zoom = (shape[0] / img.shape[0], shape[1] / img.shape[1]) + (1,) * (img.ndim - 2)
    out = ndi.zoom(img, zoom, order=1, mode="nearest", grid_mode=True)
    return out[: shape[0], : shape[1]]


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image: labels stay labels, masks stay binary.
    (The paper's code resized soft masks and thresholded at > 0, which dilated every nucleus.)"""
    lab = np.asarray(labels)
    rows = np.minimum((np.arange(shape[0]) + 0.5) * lab.shape[0] / shape[0], lab.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * lab.shape[1] / shape[1], lab.shape[1] - 1)
    return lab[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def pad_to_multiple(image: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (H, W, C) so both sides are multiples of ``multiple``; returns the padded
    image and the original (H, W) to crop back to."""
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if min(h, w) > 1 else "edge"
        if mode == "reflect" and (ph >= h or pw >= w):
            mode = "symmetric"
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
    return image, (h, w)


def paper_soft_resize(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """What the paper's code did to masks: resize the binary mask with interpolation and keep
    every pixel > 0. Shown in notebook 02 to measure how much it dilates the nuclei; not used."""
    soft = resize_image(np.asarray(mask, np.float32), shape)
    return soft > 0
