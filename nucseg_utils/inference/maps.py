"""Inference over many images: a model's probability maps for a split, and the TTA and
scale passes of one image laid out for notebook 4.

In: a :class:`nucseg_utils.model.NucleusModel` and a source of images (a DSB ``Split`` or a
folder, :mod:`nucseg_utils.data`).
Out: {id: probability map (H, W, C)} at native size, kept as ``probs/<id>.npz`` in the run
folder when asked (:mod:`nucseg_utils.data.outputs`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nucseg_utils.core import runs
from nucseg_utils.core.progress import progress as progress_bar
from nucseg_utils.data.outputs import save_probs
from nucseg_utils.inference.preprocessing import normalize, resize_image
from nucseg_utils.inference.scale import predict_scaled, rescale_image
from nucseg_utils.inference.tta import variant_predictions

__all__ = [
    "predict_split", "scale_steps_table", "tta_change", "tta_disagreement"
]


def predict_split(model, source, out_dir, tta: bool = True, ids=None,
                  progress: bool = True, keep_probs: bool = True) -> dict:
    """Predict every image of ``source`` (a Split or FolderImages) with a NucleusModel
    (:meth:`~nucseg_utils.model.NucleusModel.predict_probabilities`, its settings); returns
    {id: prob map} and writes ``probs/<id>.npz`` under ``out_dir`` when ``keep_probs``."""
    out_dir = Path(out_dir)
    ids = source.ids if ids is None else list(ids)
    it = ids
    if progress:
        it = progress_bar(ids, desc=f"predict{' (TTA)' if tta else ''}", unit="img")
    probs = {}
    for sid in it:
        p = model.predict_probabilities(source.image(sid), tta=tta)
        probs[sid] = p
        if keep_probs:
            save_probs(out_dir / runs.PROBS / f"{sid}.npz", p)
    return probs


def tta_disagreement(model, image: np.ndarray) -> dict:
    """The 8 TTA variants of one image (as read by :mod:`nucseg_utils.data`), each
    predicted at the model's standard nucleus scale and mapped back to native size:
    ``variants`` [(name, nucleus probability)], their ``mean`` and ``std`` (pixel-wise),
    ``mean_std`` (one number), and the scale ``steps`` of
    :func:`nucseg_utils.inference.scale.predict_scaled` (first-pass nucleus size, factor)."""
    settings = model.settings
    img = normalize(image, settings.normalization)
    _, steps = predict_scaled(model, img, settings, tta=False, return_steps=True)
    passes = steps.get("passes") or []
    factor = float(passes[-1]["next"] if passes else steps["factor"])  # TTA's final factor
    h, w = img.shape[:2]
    out = []
    for name, p in variant_predictions(model, rescale_image(img, factor), settings):
        if p.shape != (h, w):
            p = resize_image(p[..., None], (h, w))[..., 0]
        out.append((name, np.clip(p, 0, 1)))
    stack = np.stack([p for _, p in out])
    std = stack.std(axis=0)
    return {"variants": out, "mean": stack.mean(axis=0), "std": std,
            "mean_std": float(std.mean()), "factor": factor, "steps": steps}


def tta_change(probs_tta: dict, probs_plain: dict) -> "pd.Series":
    """Mean absolute difference of the nucleus probability with and without TTA, per image
    (largest first): where TTA changes the prediction most."""
    return pd.Series({sid: float(np.abs(probs_tta[sid][..., 0] - probs_plain[sid][..., 0])
                                 .mean()) for sid in sorted(probs_tta) if sid in probs_plain}
                     ).sort_values(ascending=False)


def scale_steps_table(steps: dict):
    """The passes of :func:`nucseg_utils.inference.scale.predict_scaled` as a table: the factor each
    pass predicted at, the nucleus diameter it measured (native px) and the factor it
    proposed."""
    return pd.DataFrame([{"pass": i + 1, "predicted at factor": p["factor"],
                          "nucleus diameter measured (px)": p["diameter"],
                          "factor proposed": p["next"]}
                         for i, p in enumerate(steps.get("passes", []))])
