"""Preprocessing: what happens to an image before the network sees it, and to the ground truth
before it becomes a training target.

In: an RGB float image in [0, 1] (from :mod:`nucseg_utils.data`) and an instance label image.
Out: a normalised float32 image, and target channels (``mask``: nucleus pixels; ``touching``:
pixels whose neighbourhood holds two different nuclei, which marks where touching nuclei must
be split). Also the paper's resizing, done so that masks stay binary.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


# percentile normalisation: the percentiles mapped to 0 and 1, and the range kept after it
# (the model-zoo export and the figures of notebook 2 describe these same values)
PERCENTILES = (1.0, 99.8)
CLIP = (-0.5, 1.5)


def normalize(image: np.ndarray, mode: str = "percentile", low: float = PERCENTILES[0],
              high: float = PERCENTILES[1]) -> np.ndarray:
    """Normalise one image.

    ``unit``: the paper's: values as read, in [0, 1] (8-bit / 255).
    ``percentile``: the [low, high] percentiles of all channels together map to [0, 1] (colour
    balance kept), and an image whose background is bright (brightfield, stained tissue) is
    inverted so that nuclei are always brighter than the background.
    """
    img = np.asarray(image, np.float32)
    if mode == "unit":
        return img
    if mode != "percentile":
        raise ValueError(f"unknown normalization '{mode}'")
    lo, hi = np.percentile(img, [low, high])
    if hi - lo < 1e-6:
        out = np.zeros_like(img)
    else:
        out = (img - lo) / (hi - lo)
    if background_is_bright(img):
        out = 1.0 - out
    return np.clip(out, *CLIP).astype(np.float32)


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


def make_targets(labels: np.ndarray, targets=("mask",)) -> np.ndarray:
    """Stack the target channels of a label image: (H, W, len(targets)) float32 of 0/1."""
    chans = []
    for t in targets:
        if t == "mask":
            chans.append(labels > 0)
        elif t == "touching":
            chans.append(touching_zone(labels))
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
