"""Big images, stage 3: one window normalised, rescaled and predicted on the whole image's grid.

In: a window of the image's plane (native pixels), the :class:`~nucseg_utils.big.plan.Plan`'s
statistics and factor, a :class:`Grid` (the whole image's pixel grid at the model's scale).
Out: the window's probabilities at native resolution, float16-rounded as
:meth:`NucleusModel.predict_probabilities` gives them.

Every window is normalised with the whole image's statistics and predicted at the image's
factor on the whole image's own grid at the model's scale: the pixels that rescaling the whole
image would make, the network's 32-px downsampling steps where the whole image's fall (a U-Net
is not shift-invariant). On an image that fits the overview, tiled and untiled predictions see
the same pixels at the same factor: they differ only where a window's edge is within the
network's context.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from nucseg_utils.big.plan import ALIGN
from nucseg_utils.inference import scale
from nucseg_utils.inference.tta import predict as tta_predict

__all__ = ["Grid", "predict_window"]


@dataclass(frozen=True)
class Grid:
    """The whole image at the model's scale, as :func:`nucseg_utils.inference.scale.rescale_image`
    makes it: (``rows``, ``cols``) model pixels for an image of (``height``, ``width``) native
    ones; model pixel j's centre at native coordinate (j + 0.5) x height / rows - 0.5 (the
    same on columns). ``factor`` 1 is the native grid itself."""
    height: int
    width: int
    factor: float

    @property
    def native(self) -> bool:
        return abs(self.factor - 1.0) < 1e-6

    @property
    def rows(self) -> int:
        return self.height if self.native else max(1, int(round(self.height * self.factor)))

    @property
    def cols(self) -> int:
        return self.width if self.native else max(1, int(round(self.width * self.factor)))

    def span(self, a: int, b: int, axis: int) -> tuple:
        """For native pixels [a, b) of one axis: the model pixels [j0, j1) the network sees
        for them (whole in [a, b), their ends on the grid's 32-px steps counted from the image's
        start and from its end, or at the image's edges) and the native pixels [e0, e1)
        those give probabilities for."""
        n, m = (self.height, self.rows) if axis == 0 else (self.width, self.cols)
        s = n / m  # native pixels per model pixel
        first = 0 if a == 0 else math.ceil((a + 0.5) / s - 0.5)
        last = m if b == n else math.floor((b - 0.5) / s - 0.5) + 1
        j0 = 0 if a == 0 else ALIGN * math.ceil(first / ALIGN)
        j1 = m if b == n else m - ALIGN * math.ceil((m - last) / ALIGN)
        if j1 <= j0:
            raise ValueError(f"a window of {b - a} px is too small for the network's "
                             f"{ALIGN}-px grid at factor {self.factor:.3g}: raise the tile "
                             f"or the overlap")
        e0 = 0 if j0 == 0 else math.ceil((j0 + 0.5) * s - 0.5)
        e1 = n if j1 == m else math.floor((j1 - 0.5) * s - 0.5) + 1
        return (j0, j1), (e0, e1)


def _resample(image: np.ndarray, step: tuple, start: tuple, shape: tuple) -> np.ndarray:
    """``image`` (H, W[, C]) sampled bilinearly (edges repeated) at rows start[0] + k step[0],
    columns start[1] + k step[1], for an output of ``shape`` (rows, cols)."""
    img = np.asarray(image, np.float32)
    extra = img.ndim - 2
    return ndi.affine_transform(img, np.array(list(step) + [1.0] * extra),
                                offset=list(start) + [0.0] * extra,
                                output_shape=tuple(shape) + img.shape[2:], order=1,
                                mode="nearest")


def predict_window(model, normalised: np.ndarray, window: tuple, grid: Grid,
                   tta: bool) -> tuple[np.ndarray, tuple]:
    """The probabilities of one normalised native window (y0, y1, x0, x1) of an image of
    ``grid``, predicted on the image's own model-scale grid (:class:`Grid`): the window's
    model pixels are interpolated from it as rescaling the whole image would (anti-aliased
    when shrinking), the network sees them with its 32-px steps where the whole image's are,
    and its probabilities are resized back as the whole image's would be. Returns (the
    probabilities, float16-rounded as :meth:`NucleusModel.predict_probabilities` gives them,
    and the native window (y0, y1, x0, x1) they cover, inside ``window``)."""
    y0, y1, x0, x1 = window
    (j0, j1), (e0, e1) = grid.span(y0, y1, 0)
    (k0, k1), (f0, f1) = grid.span(x0, x1, 1)
    if grid.native:
        x = normalised[j0 - y0:j1 - y0, k0 - x0:k1 - x0]
        prob = tta_predict(model, np.ascontiguousarray(x), model.settings, tta=tta)
    else:
        sy, sx = grid.height / grid.rows, grid.width / grid.cols
        src = scale.antialias(normalised, grid.factor)
        x = _resample(src, (sy, sx), ((j0 + 0.5) * sy - 0.5 - y0, (k0 + 0.5) * sx - 0.5 - x0),
                      (j1 - j0, k1 - k0))
        del src
        q = tta_predict(model, x, model.settings, tta=tta)
        prob = _resample(q, (1 / sy, 1 / sx), ((e0 + 0.5) / sy - 0.5 - j0,
                                               (f0 + 0.5) / sx - 0.5 - k0), (e1 - e0, f1 - f0))
        prob = np.clip(prob, 0.0, 1.0)
    return prob.astype(np.float16).astype(np.float32), (e0, e1, f0, f1)
