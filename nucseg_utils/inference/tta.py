"""Test-time augmentation (TTA).

In: a model, one normalised image, the model's settings (or its config dict).
Out: the probability map (H, W, C), averaged over the 8 symmetries of the square (rotations by
0, 90, 180 and 270 degrees, each with and without a horizontal flip) when ``tta`` is on. Each
variant's prediction is mapped back to the original orientation before averaging. (The paper
lists these rotations and flips; its code had TTA commented out.)
"""
from __future__ import annotations

import numpy as np

from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.inference.forward import forward_pass, predict_batch


def variants():
    """The 8 (k, flip) pairs: rotate by k*90 degrees after an optional horizontal flip."""
    return [(k, f) for f in (False, True) for k in range(4)]


def forward(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = image[:, ::-1] if flip else image
    return np.rot90(x, k)


def inverse(pred: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(pred, -k)
    return x[:, ::-1] if flip else x


def predict(model, image: np.ndarray, settings: ModelSettings | dict, tta: bool = True,
            spread: bool = False):
    """Probabilities for one normalised image, with or without the 8-fold TTA. With
    ``spread`` (and ``tta``): (the mean, the pixel-wise standard deviation of the 8 variants'
    nucleus probability, (H, W)), the variants' disagreement that
    :mod:`nucseg_utils.inference.quality` reads; without TTA the spread is zero."""
    settings = ModelSettings.of(settings)
    if not tta:
        p = forward_pass(model, image, settings)
        return (p, np.zeros(p.shape[:2], np.float32)) if spread else p
    acc = sq = None
    # variants of one shape (even and odd quarter turns) go through the network together
    for group in ([v for v in variants() if v[0] % 2 == 0], [v for v in variants() if v[0] % 2]):
        xs = [np.ascontiguousarray(forward(image, k, flip)) for k, flip in group]
        for (k, flip), p in zip(group, predict_batch(model, xs, settings)):
            p = inverse(p, k, flip).astype(np.float64)
            acc = p if acc is None else acc + p
            sq = p[..., 0] ** 2 if sq is None else sq + p[..., 0] ** 2
    n = len(variants())
    mean = (acc / n).astype(np.float32)
    if not spread:
        return mean
    var = np.maximum(sq / n - (acc[..., 0] / n) ** 2, 0.0)
    return mean, np.sqrt(var).astype(np.float32)


def variant_predictions(model, image: np.ndarray, settings: ModelSettings | dict,
                        channel: int = 0):
    """Each TTA variant's probability (one channel), mapped back: [(name, map), ...]."""
    settings = ModelSettings.of(settings)
    out = []
    for k, flip in variants():
        x = np.ascontiguousarray(forward(image, k, flip))
        p = inverse(forward_pass(model, x, settings), k, flip)[..., channel]
        out.append((f"{'flip + ' if flip else ''}rot {90 * k}°", p))
    return out
