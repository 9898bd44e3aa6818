"""One pass of the network over one normalised image, at the image's own size.

In: a :class:`nucseg_utils.model.NucleusModel` (its engine runs the pass) or a bare Keras
network (as training's validation calls it), a normalised (H, W, 3) image, the model's settings
(:class:`~nucseg_utils.core.settings.ModelSettings`, or its config dict).
Out: probabilities (H, W, n_targets) at that size. Fully convolutional (``crop``) models see
the image padded to a multiple of 32, and images larger than a tile in overlapping tiles whose
probabilities are blended (memory bounded by the tile); the paper's ``resize`` models see it
resized to their input size, and their probabilities are resized back before any threshold.
"""
from __future__ import annotations

import numpy as np

from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.inference.preprocessing import pad_to_multiple, resize_image


def _forward(model, batch: np.ndarray) -> np.ndarray:
    """A forward pass of a NucleusModel (through its engine) or of a bare Keras network."""
    forward = getattr(model, "forward", None)
    if forward is not None:
        return forward(batch)
    return model(batch, training=False).numpy()


def predict_batch(model, images: list, settings: ModelSettings | dict,
                  tile: int = 1024) -> list:
    """Probabilities of several normalised images of one shape; one forward pass when they
    fit a tile (TTA's variants), else one :func:`forward_pass` call each."""
    settings = ModelSettings.of(settings)
    h, w = images[0].shape[:2]
    if settings.input_mode == "resize" or h > tile or w > tile or len(images) == 1:
        return [forward_pass(model, im, settings, tile) for im in images]
    batch = np.stack([pad_to_multiple(im, 32)[0] for im in images])
    return list(_forward(model, batch)[:, :h, :w])


def forward_pass(model, image: np.ndarray, settings: ModelSettings | dict, tile: int = 1024,
                 overlap: int = 64) -> np.ndarray:
    """Probabilities (H, W, n_targets) for one normalised (H, W, 3) image at its own size.

    ``resize`` models (the paper's) see the image resized to input_size; their probabilities
    are resized back (bilinear) before any threshold, so nuclei are not dilated. ``crop`` models
    are fully convolutional and see the image at native scale, padded to a multiple of 32;
    images larger than ``tile`` pixels on a side are predicted in overlapping tiles, so memory
    stays bounded whatever the image size.
    """
    settings = ModelSettings.of(settings)
    h, w = image.shape[:2]
    if settings.input_mode == "resize":
        s = settings.input_size
        small = resize_image(image, (s, s))
        prob = _forward(model, small[None])[0]
        return resize_image(prob, (h, w))
    if h <= tile and w <= tile:
        padded, _ = pad_to_multiple(image, 32)
        return _forward(model, padded[None])[0, :h, :w]
    out = None
    weight = np.zeros((h, w, 1), np.float32)
    step = tile - 2 * overlap
    for y0 in range(0, max(h - 2 * overlap, 1), step):
        for x0 in range(0, max(w - 2 * overlap, 1), step):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y1 - tile), max(0, x1 - tile)
            patch, _ = pad_to_multiple(image[ya:y1, xa:x1], 32)
            p = _forward(model, patch[None])[0, : y1 - ya, : x1 - xa]
            if out is None:
                out = np.zeros((h, w, p.shape[-1]), np.float32)
            # weight tile centres more than tile edges
            wy = np.minimum(np.arange(y1 - ya) + 1, np.arange(y1 - ya)[::-1] + 1)
            wx = np.minimum(np.arange(x1 - xa) + 1, np.arange(x1 - xa)[::-1] + 1)
            wt = np.minimum(np.minimum(wy[:, None], wx[None, :]), overlap).astype(np.float32)
            out[ya:y1, xa:x1] += p * wt[..., None]
            weight[ya:y1, xa:x1] += wt[..., None]
    return out / weight
