"""How well was an image segmented? A score without ground truth, from what the model
computes anyway.

In: one image's probability map (H, W, C), the pixel-wise spread of its 8 TTA variants'
nucleus probability (:func:`nucseg_utils.inference.tta.predict`; zero without TTA), its label
image, and the post-processing that made the labels (a function of a probability map).
Out: :func:`signals` (numbers about how sure and how self-consistent the prediction is) and
:func:`image_quality`: ``quality``, an estimate of the image's DSB score (the competition's
mean average precision) from those signals, and ``check``, whether it is below
:data:`WEIGHTS`' ``check_below``: the images to look at.

The estimate is a linear function of some signals whose weights were fitted, with the signals
themselves chosen, on the ``cpu`` model's validation images (held-out stage1_train) by
``benchmarks/quality_score.py``, which writes them to ``quality_weights.json`` beside this
module and its measured rank correlations to ``benchmarks/quality_score.md``.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

__all__ = ["SIGNALS", "UNSURE", "WEIGHTS_FILE", "estimate", "image_quality", "signals",
           "stability", "weights"]

WEIGHTS_FILE = Path(__file__).with_name("quality_weights.json")
# the signals :func:`signals` returns
SIGNALS = ("mean_prob_inside", "spread_inside", "uncertain_share", "touching_inside",
           "stability", "stability_2")
UNSURE = (0.2, 0.8)  # the nucleus probabilities uncertain_share counts as unsure
_IOU = np.arange(0.5, 1.0, 0.05)  # the competition's IoU thresholds


def _nucleus(prob: np.ndarray) -> np.ndarray:
    prob = np.asarray(prob, np.float32)
    return prob[..., 0] if prob.ndim == 3 else prob


def _matched(a: np.ndarray, b: np.ndarray) -> float:
    """For each object of ``a``, the share of the IoU thresholds 0.5..0.95 at which its most
    overlapping object of ``b`` matches it, averaged over ``a``'s objects (1 for two empty
    images, 0 when only ``a`` is empty... or only ``b``)."""
    na, nb = int(a.max()), int(b.max())
    if na == 0 or nb == 0:
        return float(na == nb)
    inter = np.bincount(a.ravel().astype(np.int64) * (nb + 1) + b.ravel(),
                        minlength=(na + 1) * (nb + 1)).reshape(na + 1, nb + 1)
    area_a, area_b = inter.sum(axis=1), inter.sum(axis=0)
    inter = inter[1:, 1:]
    union = area_a[1:, None] + area_b[None, 1:] - inter
    best = (inter / np.maximum(union, 1)).max(axis=1)
    present = area_a[1:] > 0
    return float((best[present, None] > _IOU[None, :]).mean())


def stability(labels: np.ndarray, other: np.ndarray) -> float:
    """How much two segmentations of one image agree, object by object, in [0, 1]: the mean
    of :func:`_matched` both ways (so that both splits and merges count)."""
    return 0.5 * (_matched(labels, other) + _matched(other, labels))


def signals(prob: np.ndarray, spread: np.ndarray | None, labels: np.ndarray,
            segment=None, which=SIGNALS) -> dict:
    """The signals of one image:

    - ``mean_prob_inside``: the mean nucleus probability inside the predicted nuclei;
    - ``spread_inside``: the mean spread of the TTA variants over the predicted nuclei and
      every pixel above probability 0.1 (where a variant may see a nucleus);
    - ``uncertain_share``: the share of those pixels whose nucleus probability is unsure
      (between the bounds of :data:`UNSURE`): blurred or faint nuclei;
    - ``touching_inside``: the mean probability of the second output (where nuclei touch;
      the targets are a prefix of ``mask, touching, distance``) inside the predicted nuclei,
      0 for a model with one output: crowded nuclei, where splits and merges happen;
    - ``stability``, ``stability_2``: :func:`stability` of the labels with those that
      ``segment`` (the same post-processing) makes of the nucleus probability lowered and
      raised by one (two) spreads, averaged over the two: a segmentation that changes when
      the map moves within its own TTA disagreement is likely wrong (NaN without ``segment``).
    An image with no nucleus found has a mean probability of 0. ``which``: the stability
    signals to compute (each costs two post-processings)."""
    prob = np.asarray(prob, np.float32)  # once: the signals and the moved maps read it
    p = _nucleus(prob)
    labels = np.asarray(labels)
    inside = labels > 0
    sd = np.zeros_like(p) if spread is None else np.asarray(spread, np.float32)
    zone = inside | (p > 0.1)
    touching = prob[..., 1] if prob.ndim == 3 and prob.shape[-1] > 1 else None
    out = {"mean_prob_inside": float(p[inside].mean()) if inside.any() else 0.0,
           "spread_inside": float(sd[zone].mean()) if zone.any() else 0.0,
           "uncertain_share": (float(((p > UNSURE[0]) & (p < UNSURE[1]))[zone].mean())
                               if zone.any() else 0.0),
           "touching_inside": (float(touching[inside].mean())
                               if touching is not None and inside.any() else 0.0)}
    for name, k in (("stability", 1.0), ("stability_2", 2.0)):
        if name not in which:
            continue
        if segment is None:
            out[name] = float("nan")
            continue
        values = []
        for sign in (-1.0, 1.0):
            moved = prob.copy()
            if moved.ndim == 3:
                moved[..., 0] = np.clip(p + sign * k * sd, 0.0, 1.0)
            else:
                moved = np.clip(p + sign * k * sd, 0.0, 1.0)
            values.append(stability(labels, segment(moved)))
        out[name] = float(np.mean(values))
    return out


@cache
def weights() -> dict:
    """The fitted estimate (``signals``, ``weights``, ``intercept``, ``check_below``) from
    :data:`WEIGHTS_FILE`."""
    return json.loads(WEIGHTS_FILE.read_text())


def estimate(sig: dict, fitted: dict | None = None) -> float:
    """The estimated DSB of an image of these signals, clipped to [0, 1]."""
    fitted = fitted or weights()
    value = fitted["intercept"] + sum(w * sig[s] for s, w in zip(fitted["signals"],
                                                                  fitted["weights"]))
    return float(np.clip(value, 0.0, 1.0))


def image_quality(prob: np.ndarray, spread: np.ndarray | None, labels: np.ndarray,
                  segment=None) -> dict:
    """``quality`` (:func:`estimate`), ``check`` (quality below the fitted ``check_below``)
    and the ``signals`` of one image (see :func:`signals`; ``segment``: the post-processing
    of a probability map that made ``labels``)."""
    fitted = weights()
    sig = signals(prob, spread, labels, segment, which=tuple(fitted["signals"]))
    value = estimate(sig, fitted)
    return {"quality": value, "check": bool(value < fitted["check_below"]), "signals": sig}
