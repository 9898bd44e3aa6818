"""Augmentation and the training input pipeline.

In: normalised images and their instance label images at native resolution, a recipe
(:class:`~nucseg_utils.core.settings.Recipe`, or a profile's flat dict, read once into one).
Out: batches ``(x, y)`` of shape (B, S, S, 3) and (B, S, S, n_targets), where S is the
recipe's ``input_size``.

One affine map per sample does the crop (or the paper's resize to S x S), rotation, shear,
zoom, shift and flips in a single interpolation, identically for the image (bilinear) and the
label image (nearest neighbour), so masks stay binary and no nucleus is dilated. The targets
are computed *after* the transform from the transformed labels. The stream is a pure function
of ``(seed, step)``: the same profile and seed give the same batches, and a resumed run
continues the stream where it stopped. Keras' ``OrderedEnqueuer`` makes batches ahead of
the training step (:func:`prefetch`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb, rgb_from_hed

from nucseg_utils.core.settings import Augmentation, Recipe, recipe_of
from nucseg_utils.inference.preprocessing import make_targets
from nucseg_utils.inference.scale import antialias, label_diameter, scale_factor

# a validation patch: cut out and scaled, nothing random
STILL = Augmentation(rotation=0.0, shift=0.0, shear=0.0, zoom=0.0, hflip=False, vflip=False,
                     dihedral=False, colour=False, stain=0.0)


def _affine(rng, aug: Augmentation, out_size: int, src_shape, mode: str, centre=None,
            scale: float = 1.0):
    """Return (matrix, offset) mapping output (row, col) to source coordinates. ``scale``
    (crop mode) magnifies the source by that factor on top of the random zoom: the image's
    factor to the standard nucleus size (:mod:`nucseg_utils.inference.scale`)."""
    h, w = src_shape
    theta = np.deg2rad(rng.uniform(-aug.rotation, aug.rotation)) if aug.rotation else 0.0
    shear = np.deg2rad(rng.uniform(-aug.shear, aug.shear)) if aug.shear else 0.0
    z = aug.zoom
    zoom = float(np.exp(rng.uniform(np.log(1 - z), np.log(1 + z)))) if z else 1.0
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shr = np.array([[1.0, 0.0], [np.tan(shear), 1.0]])
    flip = np.diag([-1.0 if aug.vflip and rng.random() < 0.5 else 1.0,
                    -1.0 if aug.hflip and rng.random() < 0.5 else 1.0])
    if mode == "resize":
        base = np.diag([h / out_size, w / out_size])
        c_src = np.array([h / 2, w / 2])
        if aug.shift:
            c_src = c_src + rng.uniform(-aug.shift, aug.shift, 2) * np.array([h, w])
    elif mode == "crop":
        base = np.eye(2)
        c_src = (np.array(centre, float) if centre is not None
                 else np.array([rng.uniform(0, h), rng.uniform(0, w)]))
    else:
        raise ValueError(f"unknown input_mode '{mode}'")
    matrix = base @ rot @ shr @ flip / (zoom * (scale if mode == "crop" else 1.0))
    c_out = np.array([out_size / 2, out_size / 2])
    offset = c_src - matrix @ c_out
    return matrix, offset


def warp(image: np.ndarray, labels: np.ndarray, matrix, offset, out_size: int):
    """Apply one affine map to an image (bilinear, per channel) and its labels (nearest)."""
    shape = (out_size, out_size)
    img = np.stack([ndi.affine_transform(image[..., c], matrix, offset, output_shape=shape,
                                         order=1, mode="mirror") for c in range(image.shape[-1])],
                   axis=-1)
    lab = ndi.affine_transform(labels, matrix, offset, output_shape=shape, order=0, mode="mirror")
    return img.astype(np.float32), lab


def colour_jitter(rng, img: np.ndarray) -> np.ndarray:
    """Intensity and colour augmentation of a normalised patch (nuclei bright on dark)."""
    x = img
    if rng.random() < 0.5:
        x = x[..., rng.permutation(3)]
    if rng.random() < 0.25:
        x = np.repeat(x.mean(axis=-1, keepdims=True), 3, axis=-1)
    x = x * rng.uniform(0.85, 1.15, 3)
    gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    x = np.clip(x, 0, None) ** gamma
    m = x.mean()
    x = (x - m) * rng.uniform(0.7, 1.3) + m + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.2:
        x = ndi.gaussian_filter(x, sigma=(rng.uniform(0.5, 1.5),) * 2 + (0,))
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0, 0.05), x.shape)
    return x.astype(np.float32)


def stain_jitter(rng, img: np.ndarray, strength: float) -> np.ndarray:
    """Stain augmentation of a normalised stained-tissue patch (:func:`normalize` inverted it,
    so its nuclei are bright): the patch is turned back into absorbances (optical density,
    ``-log`` of the un-inverted intensities) and unmixed into haematoxylin, eosin and DAB with
    scikit-image's colour-deconvolution matrices (Ruifrok and Johnston); each stain's amount is
    scaled by a factor in [1 - s, 1 + s] and shifted by up to s (in optical density: after
    normalisation the background holds about 0 and the nuclei' haematoxylin about 1), then
    mixed back; values that normalisation left beyond [0, 1] keep their excess. Tissue
    stained more or less strongly, or with more eosin, than the training images (after
    Tellez et al. 2019's HED augmentation). Linear both ways, so ``strength`` 0 returns the
    patch."""
    inside = np.clip(img, 0.0, 0.999)  # normalised values beyond [0, 1] are kept as offsets
    stains = -np.log(1.0 - inside) @ hed_from_rgb
    stains = stains * rng.uniform(1 - strength, 1 + strength, 3) + \
        rng.uniform(-strength, strength, 3)
    rgb = np.exp(-np.clip(stains @ rgb_from_hed, 0, None))
    return (1.0 - rgb + (img - inside)).astype(np.float32)


def colour_examples(image: np.ndarray, n: int = 6, seed: int = 0) -> list[np.ndarray]:
    """``n`` colour/intensity jitters (:func:`colour_jitter`) of one normalised image, the
    k-th drawn with the generator seeded by ``(seed, k)``: the same call gives the same
    images (for the figure of notebook 02)."""
    return [colour_jitter(np.random.default_rng([seed, k]), image) for k in range(n)]


def stain_examples(image: np.ndarray, strength: float, n: int = 4,
                   seed: int = 0) -> list[np.ndarray]:
    """``n`` stain jitters (:func:`stain_jitter`) of one normalised stained-tissue image,
    seeded as :func:`colour_examples` (for the figure of notebook 02)."""
    return [stain_jitter(np.random.default_rng([seed, k]), image, strength) for k in range(n)]


def sample_patch(rng, image, labels, recipe: Recipe | dict, augment: bool = True, centre=None,
                 scale: float = 1.0, stained: bool = False):
    """One augmented (image, label) patch of size input_size; ``scale`` as in :func:`_affine`
    (an image to be shrunk should be pre-filtered with :func:`nucseg_utils.inference.scale.antialias`);
    a ``stained`` image also gets the recipe's ``stain`` augmentation (:func:`stain_jitter`)."""
    recipe = recipe_of(recipe)
    aug = recipe.training.augmentation if augment else STILL
    size = recipe.network.input_size
    matrix, offset = _affine(rng, aug, size, labels.shape, recipe.network.input_mode, centre,
                             scale)
    img, lab = warp(image, labels, matrix, offset, size)
    if aug.dihedral:
        k = int(rng.integers(4))
        img, lab = np.rot90(img, k), np.rot90(lab, k)
    if stained and aug.stain:
        img = stain_jitter(rng, img, aug.stain)
    if aug.colour:
        img = colour_jitter(rng, img)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


class PatchSampler:
    """Makes training batches from (normalised image, labels) pairs.

    ``weights`` (one per image) sets how often each image is drawn; :func:`modality_weights`
    makes rare imaging modalities more frequent. With a ``target_diameter`` in the recipe,
    each image is magnified by its factor to the standard nucleus size
    (:func:`image_scales`), and images to be shrunk are pre-filtered once here. ``stained``
    (one bool per image) says which images get the stain augmentation.
    """

    def __init__(self, images, labels, recipe: Recipe | dict, weights=None, stained=None):
        if not images:
            raise ValueError("no training images")
        self.recipe = recipe_of(recipe)
        self.scales = image_scales(labels, self.recipe)
        self.images = [antialias(im, f) for im, f in zip(images, self.scales)]
        self.labels = labels
        w = np.ones(len(images)) if weights is None else np.asarray(weights, float)
        self.p = w / w.sum()
        self.stained = [False] * len(images) if stained is None else [bool(v) for v in stained]

    def batch(self, step: int, seed: int | None = None):
        recipe = self.recipe
        rng = np.random.default_rng([recipe.training.seed if seed is None else seed,
                                     int(step)])
        xs, ys = [], []
        for _ in range(recipe.training.batch_size):
            i = int(rng.choice(len(self.images), p=self.p))
            img, lab = sample_patch(rng, self.images[i], self.labels[i], recipe,
                                    scale=self.scales[i], stained=self.stained[i])
            xs.append(img)
            ys.append(make_targets(lab, recipe.network.targets))
        return np.stack(xs), np.stack(ys)

    def batches(self, start: int, stop: int):
        for step in range(start, stop):
            yield self.batch(step)


def validation_set(images, labels, recipe: Recipe | dict):
    """A fixed set of un-augmented patches (seeded): crops for ``crop`` mode, the resized whole
    image for ``resize`` mode; at the standard nucleus size when the recipe has one."""
    recipe = recipe_of(recipe)
    n = 1 if recipe.network.input_mode == "resize" else recipe.training.val_crops_per_image
    xs, ys = [], []
    for i, (img, lab, f) in enumerate(zip(images, labels, image_scales(labels, recipe))):
        img = antialias(img, f)
        rng = np.random.default_rng([recipe.training.seed, 7919, i])
        for _ in range(n):
            x, y = sample_patch(rng, img, lab, recipe, augment=False, scale=f)
            xs.append(x)
            ys.append(make_targets(y, recipe.network.targets))
    return np.stack(xs), np.stack(ys)


def image_scales(labels, recipe: Recipe | dict) -> list[float]:
    """Each image's factor to the recipe's ``target_diameter`` from its true nuclei (all 1
    without a target, or in ``resize`` mode)."""
    recipe = recipe_of(recipe)
    target = recipe.inference.target_diameter
    if not target or recipe.network.input_mode != "crop":
        return [1.0] * len(labels)
    limits = tuple(recipe.inference.scale_limits)
    return [scale_factor(label_diameter(lab), target, limits) for lab in labels]


def modality_weights(modalities, power: float) -> np.ndarray:
    """Per-image sampling weights ``count(group) ** -power`` (0 = uniform), one group per
    image (its modality, or its image type: the recipe's ``balance_by``)."""
    mods = np.asarray(modalities)
    counts = {m: int((mods == m).sum()) for m in set(mods.tolist())}
    return np.array([counts[m] ** -power for m in mods], float)


def prefetch(sampler: "PatchSampler", start: int, stop: int, depth: int = 4):
    """Yield the batches of steps ``start`` to ``stop`` of ``sampler`` in order, up to
    ``depth`` of them made ahead while the training step runs, by Keras' ``OrderedEnqueuer``
    (one worker thread of its own; the batches are a pure function of seed and step, so they
    are the same as :meth:`PatchSampler.batches` gives). An error raised while making a batch
    is raised here as itself; closing the generator stops the worker.
    (``benchmarks/bench_training_throughput.py`` measures a step fed this way against the
    step alone and against batches made in turn.)"""
    import tensorflow as tf
    if stop <= start:
        return

    class Steps(tf.keras.utils.Sequence):
        def __len__(self):
            return stop - start

        def __getitem__(self, index):
            try:
                return sampler.batch(start + index)
            except Exception:
                raise  # Keras hands it to get(), which raises it
            except BaseException as err:  # noqa: BLE001 - e.g. KeyboardInterrupt: it would
                return _Raised(err)       # end the worker and leave get() waiting forever

    enqueuer = tf.keras.utils.OrderedEnqueuer(Steps(), use_multiprocessing=False,
                                              shuffle=False)
    enqueuer.start(workers=1, max_queue_size=depth)
    try:
        made = enqueuer.get()  # endless (it starts over): take the steps asked for
        for _ in range(stop - start):
            batch = next(made)
            if isinstance(batch, _Raised):
                raise batch.error
            yield batch
    finally:
        enqueuer.stop()


class _Raised:
    """What a batch raised that is not an ``Exception``, carried to :func:`prefetch`."""

    def __init__(self, error: BaseException):
        self.error = error


def example_patches(images, labels, recipe: Recipe | dict, n: int = 8, seed: int = 0):
    """``n`` augmented patches with their targets, for the figure of notebook 02."""
    sampler = PatchSampler(images, labels, recipe_of(recipe).replace(batch_size=n, seed=seed))
    x, y = sampler.batch(0)
    return list(zip(x, y))
