"""Image types: which acquisition type an image is, from the image alone.

In: an image (H, W, 3) float RGB in [0, 1] as :mod:`nucseg_utils.data` reads it, and its label
image when there is one; or a split.
Out: the image's features (:func:`features`), its type (:func:`image_type`, one of
:data:`TYPES`), a per-image table of a split (:func:`split_types`) and the groups with their
counts over the stage-1 splits (:func:`type_table`).

The types are those of Caicedo et al. 2019 ("Nucleus segmentation across imaging experiments:
the 2018 Data Science Bowl", Nature Methods 16, 1247-1253), whose analysis scores the stage-2
images per group (carpenterlab/2019_caicedo_dsb, ``06-analysis.ipynb``; groups Default,
Superbig, TissueBW, Purple, PinkAndPurple). The rule is a fixed decision on four features,
with thresholds in the gaps the stage-1 images leave (measured on all 735 stage-1 images):

1. **modality** (:func:`nucseg_utils.data.modality_of`): stained (colour), brightfield (grey,
   bright background) or fluorescence (grey, dark background). A colourful image with a dark
   background (median brightness under :data:`BRIGHT_BACKGROUND`) is colour fluorescence, not
   tissue: stained tissue is seen on a bright background (every stage-1 stained image has a
   median brightness of 0.52 or more).
2. **colour** of the stained tissue: ``pink_fraction``, the share of its strongly coloured,
   not yellowish pixels that are more red than blue (eosin pink rather than haematoxylin
   purple). The 112 purple images of stage 1 have at most 0.05 (the yellowish background of
   some stage1_test images does not count), the 8 pink-and-purple ones 0.70 to 0.80; the
   threshold is :data:`PINK_FRACTION`.
3. **nucleus scale**, for fluorescence: the median nucleus diameter, from the labels when
   they are given (:func:`nucseg_utils.inference.scale.label_diameter`), else estimated from the image
   (:func:`estimate_diameter`). Over stage1_train the per-image diameters of fluorescence
   fall in two groups with a gap around 30 px (45 images at 25-30 px, 10 at 30-35 px, 99 at
   35-50 px); :data:`LARGE_NUCLEI` = 30 px. From the image alone the type is the one the
   labels give for 722 of the 735 stage-1 images (``split_types(..., label_free=True)``; the
   13 others are fluorescence near 30 px, or touching small nuclei seen as large).
4. **brightness** (median grey level) and the image size are recorded as features; the rule
   needs brightness only for step 1.

Grey brightfield and grey tissue are one type here: the only grey images with a bright
background in stage 1 are the 16 cytology images of 1024 x 1024 px (project p_14ISBI), which
Caicedo et al. grouped as TissueBW (grey tissue; ``12-image-groups.ipynb``).

Deterministic: no randomness, and the same image gives the same type on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from nucseg_utils import data as data_mod
from nucseg_utils.core.progress import progress as progress_bar
from nucseg_utils.inference import scale
from nucseg_utils.inference.preprocessing import resize_image

BRIGHT_BACKGROUND = 0.45   # median brightness above which a colourful image is stained tissue
PINK_FRACTION = 0.3        # share of pink stain pixels above which tissue is pink-and-purple
STAIN_CHROMA = 0.12        # max - min of R, G, B above which a pixel counts as stained
LARGE_NUCLEI = 30.0        # median nucleus diameter (px) from which fluorescence is "large"
BACKGROUND_SIGMA = 40.0    # px: the scale of the uneven background removed before the estimate
# The label-free estimate's median ratio to the label diameter over the 599 fluorescence
# images of stage 1 (0.948); the estimate is divided by it.
ESTIMATE_RATIO = 0.95


@dataclass(frozen=True)
class ImageType:
    """One acquisition type: its name (used as the key everywhere), what it looks like, and
    the group of Caicedo et al. 2019 it corresponds to."""
    name: str
    description: str
    caicedo: str


TYPES = {t.name: t for t in (
    ImageType("fluorescence small nuclei",
              f"grey (or one colour) nuclei on a dark background, median nucleus diameter "
              f"under {LARGE_NUCLEI:g} px", "Default"),
    ImageType("fluorescence large nuclei",
              f"fluorescence with a median nucleus diameter of {LARGE_NUCLEI:g} px or more",
              "Superbig"),
    ImageType("grey tissue (brightfield)",
              "grey, bright background, dark nuclei (brightfield)", "TissueBW"),
    ImageType("purple tissue",
              "stained tissue, purple nuclei on a white or pale yellow background", "Purple"),
    ImageType("pink-and-purple H&E",
              "stained tissue, purple nuclei in pink (eosin-stained) tissue", "PinkAndPurple"),
)}
TYPE_ORDER = tuple(TYPES)

# The types of the six stage1_train images the fixed labels leave out
# (:data:`nucseg_utils.data.FIXED_REMOVED`), with their original labels: a run on the fixed
# labels draws its validation split over all 670 ids, so that it holds out the same images as a
# run on the original labels (tests/test_image_types.py checks them against the images).
FIXED_REMOVED_TYPES = {
    "12aeefb1b522b283819b12e4cfaf6b13c1264c0aadac3412b4edd2ace304cb40": "fluorescence small nuclei",
    "19f0653c33982a416feed56e5d1ce6849fd83314fd19dfa1c5b23c6b66e9868a": "fluorescence small nuclei",
    "74a7785530687a11ecd073e772f90912d9967d02407a192bfab282c35f55ab94": "purple tissue",
    "7b38c9173ebe69b4c6ba7e703c0c27f39305d9b2910f46405993d2ea7a963b80": "fluorescence small nuclei",
    "adc315bd40d699fd4e4effbcce81cd7162851007f485d754ad3b0472f73a86df": "fluorescence large nuclei",
    "c304a1fdf3bca2f4b4580d2cac59942e2224a7678001bf5ed9d9852f57708932": "fluorescence small nuclei",
}


# --------------------------------------------------------------------------- features
def pink_fraction(image: np.ndarray) -> float:
    """The share of an image's stained pixels (max - min of R, G, B above
    :data:`STAIN_CHROMA`, blue at least green: yellowish background left out) that are more
    red than blue; 0 when no pixel is stained."""
    img = np.asarray(image, np.float32)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    stained = (img.max(axis=-1) - img.min(axis=-1) > STAIN_CHROMA) & (b >= g)
    n = int(stained.sum())
    return float((stained & (r > b)).sum() / n) if n else 0.0


def _background(grey: np.ndarray, sigma: float) -> np.ndarray:
    """The slowly varying background of a grey image: a Gaussian of ``sigma`` px, computed on
    an 8x smaller copy (block means) and resized back."""
    step = 8
    h, w = grey.shape
    if min(h, w) < 4 * step:
        return np.full_like(grey, float(np.median(grey)))
    small = ndi.uniform_filter(grey, step)[step // 2::step, step // 2::step]
    return resize_image(ndi.gaussian_filter(small, sigma / step, mode="nearest"), (h, w))


def estimate_diameter(image: np.ndarray) -> float:
    """Median nucleus diameter (px) estimated from the image alone: nuclei made the bright
    side (a dark background, fluorescence: the brightest channel; a bright one: inverted
    grey), smoothed,
    the background of :data:`BACKGROUND_SIGMA` px subtracted, Otsu's threshold, holes filled,
    then :func:`nucseg_utils.inference.scale.mask_diameter` of that foreground divided by
    :data:`ESTIMATE_RATIO`. On the 599 fluorescence images of stage 1 its log correlates with
    the label diameter's at 0.965; 0 for a flat image."""
    img = np.asarray(image, np.float32)
    dark = float(np.median(img.mean(axis=-1))) <= BRIGHT_BACKGROUND
    grey = img.max(axis=-1) if dark else 1.0 - img.mean(axis=-1)
    g = ndi.gaussian_filter(grey, 1.0)
    g = g - _background(g, BACKGROUND_SIGMA)
    if float(g.max() - g.min()) < 1e-6:
        return 0.0
    fg = g > threshold_otsu(g)
    fg = ndi.binary_fill_holes(ndi.binary_opening(fg))
    return scale.mask_diameter(fg) / ESTIMATE_RATIO


def features(image: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """What the type is decided on, for one image: ``modality``, ``colourfulness``,
    ``brightness`` (median grey level), ``contrast`` (99.5th minus 0.5th percentile of grey),
    ``height``, ``width``, ``pink_fraction`` and ``diameter`` (median nucleus diameter, px)
    with ``diameter_from``: "labels" when ``labels`` is given (even with no nucleus: 0), else
    "estimate" (:func:`estimate_diameter`)."""
    img = np.asarray(image, np.float32)
    grey = img.mean(axis=-1)
    lo, mid, hi = np.percentile(grey, [0.5, 50, 99.5])
    modality = data_mod.modality_of(img)
    if labels is not None:
        diameter, origin = scale.label_diameter(labels), "labels"
    else:
        diameter, origin = estimate_diameter(img), "estimate"
    return {"modality": modality, "colourfulness": data_mod.colourfulness(img),
            "brightness": float(mid), "contrast": float(hi - lo),
            "height": int(img.shape[0]), "width": int(img.shape[1]),
            "pink_fraction": pink_fraction(img) if modality == "stained" else 0.0,
            "diameter": float(diameter), "diameter_from": origin}


def classify(feat: dict) -> str:
    """The type (a key of :data:`TYPES`) of an image's :func:`features`; the rule is in the
    module's docstring."""
    modality = feat["modality"]
    if modality == "stained" and feat["brightness"] > BRIGHT_BACKGROUND:
        return "pink-and-purple H&E" if feat["pink_fraction"] > PINK_FRACTION else "purple tissue"
    if modality == "brightfield":
        return "grey tissue (brightfield)"
    # fluorescence, grey or in colour
    return ("fluorescence large nuclei" if feat["diameter"] >= LARGE_NUCLEI
            else "fluorescence small nuclei")


def image_type(image: np.ndarray, labels: np.ndarray | None = None) -> str:
    """The acquisition type of one image (nucleus scale from ``labels`` when given)."""
    return classify(features(image, labels))


# --------------------------------------------------------------------------- a split
def split_types(source, ids=None, use_labels: bool = True, label_free: bool = False,
                progress: bool = False) -> pd.DataFrame:
    """One row per image of a split (or of ``ids``): ``id``, ``split``, ``type`` and the
    :func:`features`. ``use_labels``: the nucleus scale from the ground truth when the split
    has one (else from the image). ``label_free`` adds ``label_free_type`` and
    ``estimated_diameter``, the type and scale from the image alone, to compare with."""
    ids = source.ids if ids is None else list(ids)
    labelled = use_labels and source.has_labels()
    rows = []
    for sid in (progress_bar(ids, desc=f"types {source.name}", leave=False) if progress else ids):
        img = source.image(sid)
        lab = source.labels(sid, img.shape[:2]) if labelled else None
        feat = features(img, lab)
        row = {"id": sid, "split": source.name, "type": classify(feat), **feat}
        if label_free:
            free = feat if lab is None else {**feat, "diameter": estimate_diameter(img),
                                             "diameter_from": "estimate"}
            row.update({"label_free_type": classify(free),
                        "estimated_diameter": free["diameter"]})
        rows.append(row)
    return pd.DataFrame(rows)


def dataset_types(root=None, splits=("stage1_train", "stage1_test"), labels: str = "original",
                  use_labels: bool = True, label_free: bool = False,
                  progress: bool = True) -> pd.DataFrame:
    """:func:`split_types` of several splits, one table (stage1_train read with ``labels``:
    "original" or "fixed")."""
    out = []
    for name in splits:
        source = data_mod.open_split(name, root, labels=data_mod.labels_for(name, labels))
        try:
            out.append(split_types(source, use_labels=use_labels, label_free=label_free,
                                   progress=progress))
        finally:
            source.close()
    return pd.concat(out, ignore_index=True)


def type_table(index: pd.DataFrame) -> pd.DataFrame:
    """The groups: one row per type (in :data:`TYPE_ORDER`, only those present), its images per
    split (one column each, in the order of the index), the image sizes (``HxW: images``, the
    most frequent first), the median nucleus diameter and brightness, and the group of
    Caicedo et al. 2019 it corresponds to. ``index`` is :func:`split_types` (or
    :func:`dataset_types`); a last row ``all`` holds the totals."""
    splits = list(dict.fromkeys(index["split"]))
    rows = []
    for name in [t for t in TYPE_ORDER if t in set(index["type"])]:
        g = index[index["type"] == name]
        sizes = g.groupby(["height", "width"]).size().sort_values(ascending=False, kind="stable")
        rows.append({"type": name, **{s: int((g["split"] == s).sum()) for s in splits},
                     "image sizes": ", ".join(f"{h}x{w}: {n}" for (h, w), n in sizes.items()),
                     "median nucleus diameter (px)": float(g["diameter"].median()),
                     "median brightness": float(g["brightness"].median()),
                     "Caicedo et al. group": TYPES[name].caicedo})
    rows.append({"type": "all", **{s: int((index["split"] == s).sum()) for s in splits},
                 "image sizes": "", "median nucleus diameter (px)":
                 float(index["diameter"].median()),
                 "median brightness": float(index["brightness"].median()),
                 "Caicedo et al. group": ""})
    return pd.DataFrame(rows)
