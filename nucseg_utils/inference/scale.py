"""Scale: show the network every image at one nucleus size.

In stage1_train the median nucleus diameter of an image ranges from about 6 to 94 px (5th-95th
percentile 10-49 px, median 18 px). A network trained on 128-px crops at native scale sees a
50-px nucleus as a large part of its input and splits it; a 6-px one is a few pixels at its
deepest level. So the ``cpu`` profile rescales every image so that its nuclei have a standard
diameter (``target_diameter``) before the network sees it:

- training: the factor of each image comes from its true labels (:func:`label_diameter`);
- prediction: the size is not known, so it is estimated from a first prediction
  (:func:`mask_diameter`; with ``size_probe``, first from a look at reduced scale, which
  large nuclei need: :func:`probe_diameter`), the image is rescaled, predicted (with TTA), and
  the probabilities are resized back to the native size before any threshold, so labels are
  made and scored at native resolution.

In: an image (H, W, C) and either its labels or a model.
Out: diameters (px), the rescaling factor, rescaled images, and native-size probabilities.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.inference.preprocessing import resize_image
from nucseg_utils.inference.tta import predict

# Median over the 670 stage1_train images of (median equivalent diameter of the nuclei) /
# (mean Euclidean distance transform over the foreground): 5.04, interquartile range 4.66-5.49
# (a disc gives 6: its mean distance to the edge is a third of its radius; real nuclei touch
# and are not round). Measured with the true masks; see tests/test_scale.py.
EDT_TO_DIAMETER = 5.0
DEFAULT_LIMITS = ModelSettings.scale_limits
# The nucleus probability above which a first pass counts as foreground for the size estimate.
# Fixed, not the model's calibrated mask ``threshold``: the calibration chooses that threshold
# on probabilities that must not depend on it (they did until this constant: a model
# calibrated at 0.6 then rescaled images by a 0.6 foreground, and scored 0.5600 instead of the
# 0.5655 its calibration measured on the validation images).
SIZE_THRESHOLD = 0.5


def label_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter (px) of the objects of a label image; 0 when it has none."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        return 0.0
    return float(np.median(2.0 * np.sqrt(areas / np.pi)))


def mask_diameter(mask: np.ndarray) -> float:
    """Typical nucleus diameter (px) from a binary foreground mask alone (touching nuclei
    merged, splits unknown): ``EDT_TO_DIAMETER`` x the mean distance to the background. 0 when
    the mask is empty."""
    fg = np.asarray(mask, bool)
    if not fg.any():
        return 0.0
    return float(EDT_TO_DIAMETER * ndi.distance_transform_edt(fg)[fg].mean())


def scale_factor(diameter: float, target: float | None, limits=DEFAULT_LIMITS) -> float:
    """The factor that brings nuclei of ``diameter`` px to ``target`` px, clipped to
    ``limits``; 1 when there is no target or no nuclei."""
    if not target or diameter <= 0:
        return 1.0
    lo, hi = limits
    return float(np.clip(target / diameter, lo, hi))


def antialias(image: np.ndarray, factor: float) -> np.ndarray:
    """Gaussian pre-filter for shrinking by ``factor`` < 1 (none otherwise), so that a
    shrunken image does not alias."""
    if factor >= 1:
        return image
    sigma = max(0.0, (1.0 / factor - 1.0) / 2.0)
    sig = (sigma, sigma) + (0,) * (image.ndim - 2)
    return ndi.gaussian_filter(np.asarray(image, np.float32), sig)


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """The image resized by ``factor`` (anti-aliased when shrinking), at least 1 px a side."""
    if abs(factor - 1.0) < 1e-6:
        return np.asarray(image, np.float32)
    h, w = image.shape[:2]
    shape = (max(1, int(round(h * factor))), max(1, int(round(w * factor))))
    return resize_image(antialias(image, factor), shape)


def probe_diameter(model, image: np.ndarray, settings: ModelSettings | dict,
                   probe: float) -> float:
    """Nucleus diameter (native px) estimated from one pass without TTA at scale ``probe``.

    At native scale the network imposes the size it was trained on: nuclei of 40-60 px come
    out fragmented and are estimated at about 25 px (``benchmarks/scale_estimate.md``, on
    validation images). Seen at half scale they are estimated well, while small nuclei are
    then overestimated. So with a ``size_probe`` setting, :func:`predict_scaled` trusts
    the probe only when the nuclei it sees are at least the standard size at that scale."""
    q = predict(model, rescale_image(image, probe), settings, tta=False)
    return mask_diameter(q[..., 0] > SIZE_THRESHOLD) / probe


def predict_scaled(model, image: np.ndarray, settings: ModelSettings | dict, tta: bool = True,
                   return_steps: bool = False):
    """Native-size probabilities for one normalised image, predicted at the model's standard
    nucleus size.

    ``settings``: the model's (:class:`~nucseg_utils.core.settings.ModelSettings`, or its
    config dict). Without a ``target_diameter`` this is
    :func:`nucseg_utils.inference.tta.predict`. With one: a first pass without TTA at
    native scale gives a foreground whose size sets a factor; when that factor is far from 1
    a second pass at the new scale refines the estimate (a network sees nuclei far from its
    standard size badly, so the first estimate is rough); then the final prediction (with
    TTA when ``tta``) at that scale, resized back (:func:`predict_at`). A ``tta_scales``
    setting (none by default) makes that final TTA prediction at the factor times each of
    its scales, averaged at native size
    (test-time scaling; measured in ``benchmarks/tta_scales.md``: it did not pay for the
    committed model).

    A ``diameter`` setting (the nuclei's size in native pixels, given by the user) sets
    the factor without any size pass.

    ``return_steps`` also returns a dict of the passes (diameters, factors, first-pass map)
    and the ``spread`` of the TTA variants' nucleus probability at native size (zero without
    TTA; :func:`nucseg_utils.inference.tta.predict`).
    """
    settings = ModelSettings.of(settings)
    if not settings.target_diameter:
        if not return_steps:
            return predict(model, image, settings, tta=tta)
        prob, spread = predict(model, image, settings, tta=tta, spread=True)
        return prob, {"factor": 1.0, "passes": [], "spread": spread}
    factor, passes, first, p = _size_passes(model, image, settings, tta)
    spread = None
    if p is not None and not tta:  # the last size pass stands as the prediction
        prob = np.clip(resize_image(p, image.shape[:2]) if p.shape[:2] != image.shape[:2]
                       else p, 0.0, 1.0)
    elif return_steps:
        prob, spread = predict_at(model, image, settings, factor, tta, spread=True)
    else:
        prob = predict_at(model, image, settings, factor, tta)
    if return_steps:
        if spread is None:
            spread = np.zeros(prob.shape[:2], np.float32)
        return prob, {"factor": factor, "passes": passes, "first_pass": first, "spread": spread}
    return prob


def estimate_factor(model, image: np.ndarray, settings: ModelSettings | dict,
                    tta: bool = True) -> float:
    """The rescaling factor :func:`predict_scaled` predicts ``image`` at (1 without a
    ``target_diameter``), from its size passes alone: ``predict_at(model, image, settings,
    estimate_factor(model, image, settings, tta), tta)`` is ``predict_scaled(model, image,
    settings, tta)``. :mod:`nucseg_utils.big` estimates it once per image and predicts every
    tile at it."""
    settings = ModelSettings.of(settings)
    if not settings.target_diameter:
        return 1.0
    return _size_passes(model, image, settings, tta)[0]


def predict_at(model, image: np.ndarray, settings: ModelSettings | dict, factor: float,
               tta: bool = True, spread: bool = False):
    """Native-size probabilities for one normalised image predicted at a given rescaling
    ``factor`` (with TTA when ``tta``; and, with TTA, at ``factor`` times each of the
    settings' ``tta_scales``, averaged), resized back to the image's size and clipped to
    [0, 1]. With ``spread``: (that map, the TTA variants' spread at native size, averaged
    over the scales)."""
    settings = ModelSettings.of(settings)
    h, w = image.shape[:2]
    prob = sd = None
    scales = (settings.tta_scales or [1.0]) if tta else [1.0]
    for s in scales:
        out = predict(model, rescale_image(image, factor * s), settings, tta=tta, spread=spread)
        q, d = out if spread else (out, None)
        if q.shape[:2] != (h, w):
            q = resize_image(q, (h, w))
            d = resize_image(d[..., None], (h, w))[..., 0] if spread else None
        prob = q / len(scales) if prob is None else prob + q / len(scales)
        if spread:
            sd = d / len(scales) if sd is None else sd + d / len(scales)
    prob = np.clip(prob, 0.0, 1.0)
    return (prob, np.clip(sd, 0.0, 1.0)) if spread else prob


def _size_passes(model, image: np.ndarray, settings: ModelSettings, tta: bool):
    """The size passes of :func:`predict_scaled` (a model with a ``target_diameter``):
    (the factor of the final prediction, the passes, the first pass's map, the last pass's
    map when it stands as the prediction without TTA, else None)."""
    target, limits = settings.target_diameter, tuple(settings.scale_limits)
    if settings.diameter:  # the nuclei's size given (nucseg predict --diameter): no pass
        return scale_factor(float(settings.diameter), target, limits), [], None, None
    passes, factor, first, p = [], 1.0, None, None
    probe = settings.size_probe
    if probe:  # large nuclei: a coarse look first (see :func:`probe_diameter`)
        d = probe_diameter(model, image, settings, probe)
        if d * probe >= target:
            factor = scale_factor(d, target, limits)
            passes.append({"factor": probe, "diameter": d, "next": factor})
    for _ in range(0 if passes else 2):
        p = predict(model, rescale_image(image, factor), settings, tta=False)
        first = p if first is None else first
        d = mask_diameter(p[..., 0] > SIZE_THRESHOLD) / factor  # in native pixels
        new = scale_factor(d, target, limits) if d > 0 else factor
        passes.append({"factor": factor, "diameter": d, "next": new})
        if abs(np.log(new / factor)) < np.log(1.3):  # close enough: this pass stands
            break
        factor, p = new, None
    if tta:  # the final pass at the last estimate's factor
        factor, p = passes[-1]["next"], None
    return factor, passes, first, p
