"""Figures: every figure of the report is written by one function here, to a stable name.

In: arrays, label images and tables from the other modules; a ``stamp`` saying which profile,
data and run made the figure (printed at its foot, so a figure always says where it came from;
a figure made from the synthetic set says SYNTHETIC in red).
Out: every helper writes its PNG atomically to its stable name and returns the matplotlib
Figure, so a notebook cell that ends with the call shows the figure inline. The PNG carries no
timestamp or software version (``metadata={'Software': None}``), a fixed dpi and no random
element (jitter is seeded), so the same inputs give byte-identical files on a re-run.
Figures are made with pyplot (so Jupyter and Colab know how to show them), then taken off
pyplot's list of open figures: a notebook shows each figure once, as its cell's value, and a
long run does not pile up open figures. Nothing here chooses the matplotlib backend.

Display conventions (after StarDist's examples): images and labels side by side, axes off,
short titles, a random label colour map so that touching nuclei are told apart, nearest-
neighbour display of labels. Difference overlays: blue = predicted but not true (extra), red =
true but not predicted (missing).

matplotlib and seaborn are imported inside the functions that draw (lazy: about 0.5 s and 1 s;
the model package's module uses :func:`show_image`, and every ``nucseg`` command imports it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from nucseg_utils.core import runs
from nucseg_utils.exports.render import label_cmap, show_image, show_labels
from nucseg_utils.inference.preprocessing import (
    CLIP,
    PERCENTILES,
    background_is_bright,
    normalize,
    resize_labels,
)
from nucseg_utils.inference.scale import label_diameter, rescale_image
from nucseg_utils.report.examples import densest_centre, window_around
from nucseg_utils.training.augmentation import colour_examples, stain_examples

# Stable file names of the report's figures (paper figure numbers in the comments).
NAMES = {
    "eda": "eda_dataset.png",                        # image sizes, modalities, nuclei, sizes
    "samples": "fig3_train_samples.png",             # Fig. 3
    "augmentation": "augmentation_examples.png",
    "normalisation": "preprocessing_normalisation.png",  # notebook 2: each modality, before/after
    "colour": "augmentation_colour.png",             # notebook 2: colour jitters of one image
    "rescaling": "preprocessing_rescaling.png",      # notebook 2: to the standard nucleus size
    "predictions": "fig4_test_predictions.png",      # Fig. 4
    "curves": "fig5_6_training_curves.png",          # Fig. 5-6
    "metrics": "fig7_8_training_metrics.png",        # Fig. 7-8
    "tta": "tta_variants.png",                       # notebook 4: the 8 variants by hand
    "watershed": "postprocessing_steps.png",         # notebook 5: the paper's method
    "difference": "fig9_difference_overlay.png",     # Fig. 9
    "per_image": "dsb_per_image.png",
    "batch": "training_batch.png",                   # notebook 3: one batch and its targets
    "lr": "learning_rate.png",                       # notebook 3: the schedule over steps
    "disagreement": "tta_disagreement.png",          # notebook 4: std over the 8 variants
    "touching": "postprocessing_touching.png",       # notebook 5: seeded watershed by hand
    "filters": "postprocessing_filters.png",         # notebook 5: the object filters by hand
    "iou_curve": "scores_over_iou_thresholds.png",   # notebook 6: data set over thresholds
    "errors": "object_errors.png",                   # notebook 6: error classes, worst images
    "overlay": "segment_overlay.png",                # notebook 7: a user's image, outlined
    "measurements": "segment_measurements.png",      # notebook 7: nucleus areas, counts
    "big_stitch_rules": "big_stitch_rules.png",      # notebook 8: what a tile keeps
    "big_seams": "big_seams.png",                    # notebook 8: a big image and its seams
}
TABLES = {
    "thresholds": "fig10_threshold_table.csv",       # Fig. 10
    "hyperparameters": "table1_hyperparameters.csv",  # Table I
    "results": "table2_results.csv",                 # Table II
    "eda": "eda_summary.csv",
    "per_threshold": "scores_over_iou_thresholds.csv",  # notebook 6
    "dilation": "paper_resize_dilation.csv",         # notebook 2: the paper's mask growth
    "image_types": "image_types.csv",                # notebook 1: acquisition types
    "per_type": "scores_per_image_type.csv",         # notebook 6: scores by image type
}

SAVE_DPI = 90      # the PNG files in figures/
DISPLAY_DPI = 72   # the inline image of a notebook (kept modest: committed notebooks carry it)


def _plt():
    import matplotlib.pyplot as plt
    return plt


def _subplots(*args, **kwargs):
    """``plt.subplots`` at the display dpi."""
    return _plt().subplots(*args, dpi=DISPLAY_DPI, **kwargs)


def stamp_text(profile: str, dataset: str, run: str = "", extra: str = "") -> str:
    parts = [f"profile: {profile}", f"data: {dataset}"]
    if run:
        parts.append(f"run: {run}")
    if extra:
        parts.append(extra)
    return " · ".join(parts)


def save(fig, path, stamp: str = ""):
    """Write a figure atomically to ``path`` with its stamp at the foot; return the Figure
    (detached from pyplot, see the module docstring). The file's name is kept on the figure
    as ``fig.nucseg_path``."""
    if stamp:
        synthetic = "synthetic" in stamp.lower()
        text = ("SYNTHETIC DATA - not DSB2018 · " if synthetic else "") + stamp
        fig.text(0.01, 0.005, text, fontsize=7, color="red" if synthetic else "0.35",
                 ha="left", va="bottom")
    path = Path(path)
    plt = _plt()
    with runs.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=SAVE_DPI, bbox_inches="tight", format="png",
                    metadata={"Software": None})
    plt.close(fig)  # off pyplot's list only: the returned figure still draws and displays
    fig.nucseg_path = path
    return fig


def _short(sid: str) -> str:
    return sid[:8]


def _layout():
    """Constrained layout (panels and colour bars placed without overlap) that keeps a strip
    at the foot of the figure for the stamp."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    return ConstrainedLayoutEngine(rect=(0, 0.035, 1, 0.965))


def samples(items, path, stamp=""):
    """Fig. 3: training images with their ground-truth nuclei, two (image, nuclei) pairs a
    row, each panel large enough to tell touching nuclei apart; ``items`` is a list of
    (id, image, labels, note)."""
    n = len(items)
    rows = int(np.ceil(n / 2))
    fig, axes = _subplots(rows, 4, figsize=(12, 3.3 * rows), squeeze=False,
                          layout=_layout())
    for ax in axes.ravel():
        ax.axis("off")
    for k, (sid, img, lab, note) in enumerate(items):
        r, c = divmod(k, 2)
        h, w = np.shape(img)[:2]
        what = f"{note}, " if note else ""
        show_image(axes[r, 2 * c], img, f"{_short(sid)}: {what}{h}x{w} px")
        show_labels(axes[r, 2 * c + 1], lab,
                    f"ground truth: {int(len(np.unique(lab)) - 1)} nuclei")
        for ax in axes[r, 2 * c:2 * c + 2]:
            ax.title.set_fontsize(10)
    fig.suptitle("Training images and their ground-truth nuclei (one colour per nucleus)",
                 fontsize=12)
    return save(fig, path, stamp)


def _outlined(image, labels) -> np.ndarray:
    """The image (contrast-stretched RGB) with the outline of every nucleus of ``labels``:
    yellow on a dark image (fluorescence), dark blue on a bright one (stained tissue)."""
    img = np.asarray(image, np.float32)
    img = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]
    lo, hi = np.percentile(img, [0.5, 99.8])
    base = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    colour = (0.0, 0.2, 0.9) if float(np.median(base)) > 0.5 else (1.0, 0.9, 0.0)
    base[find_boundaries(np.asarray(labels), mode="outer")] = colour
    return base


def predictions(items, path, stamp="", crop=256):
    """Fig. 4: scored images with the outline of every predicted nucleus, three a row;
    ``items`` is a list of (id, image, labels, note). An image larger than ``crop`` px is
    shown in the ``crop`` px window with the most predicted nuclei, large enough to see the
    outlines (the count is of the whole image)."""
    n = len(items)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = _panels(rows, cols, (4.6 * cols, 4.6 * rows))
    for ax in axes.ravel():
        ax.axis("off")
    for k, (sid, img, lab, note) in enumerate(items):
        ax = axes[k // cols, k % cols]
        window = _focus(np.asarray(lab) > 0, crop)
        ax.imshow(_outlined(img, lab)[_crop(window)], interpolation="nearest")
        crop_note = _window_note(np.shape(lab), window).lstrip(", ")
        ax.set_title(f"{_short(sid)}: {_count(lab)} predicted{', ' + note if note else ''}"
                     f"{chr(10) + crop_note if crop_note else ''}", fontsize=10)
    fig.suptitle("Scored images and their predicted nuclei (outlined)", fontsize=12)
    return save(fig, path, stamp)


def eda(index, path, stamp=""):
    """Image sizes, modalities, nuclei per image and nucleus sizes of the data set index,
    one labelled panel each."""
    import seaborn as sns
    fig, axes = _subplots(2, 2, figsize=(12, 8), layout=_layout())
    (sizes_ax, modality_ax), (nuclei_ax, area_ax) = axes
    sizes = index.assign(size=index["height"].astype(str) + "x" + index["width"].astype(str))
    order = sizes["size"].value_counts().index[:10]
    sns.countplot(data=sizes[sizes["size"].isin(order)], y="size", hue="split", order=order,
                  ax=sizes_ax)
    sizes_ax.set(title="image sizes (the 10 most common)", xlabel="images",
                 ylabel="height x width (px)")
    sns.countplot(data=index, x="modality", hue="split", ax=modality_ax)
    modality_ax.set(title="modality (guessed from the pixels)", xlabel="modality",
                    ylabel="images")
    has = index.dropna(subset=["nuclei"]) if "nuclei" in index else index.iloc[:0]
    if len(has):
        sns.histplot(data=has, x="nuclei", hue="split", bins=30, ax=nuclei_ax, element="step")
        sns.histplot(data=has[has["mean_area"] > 0], x="mean_area", hue="modality", bins=30,
                     log_scale=True, ax=area_ax, element="step")
    nuclei_ax.set(title="nuclei per image", xlabel="nuclei in the image", ylabel="images")
    area_ax.set(title="mean nucleus area per image, by modality",
                xlabel="mean nucleus area (px, log scale)", ylabel="images")
    for ax in axes.ravel():
        ax.title.set_fontsize(11)
    return save(fig, path, stamp)


# the target channels in words, for the colour bars of the patch figures
TARGET_WORDS = {"mask": "1 nucleus, 0 background", "touching": "1 where nuclei touch",
                "distance": "1 at a nucleus' centre"}
# the profiles' losses in words, for the axes of the training curves
LOSS_WORDS = {"bce_jaccard": "BCE + Jaccard", "jaccard": "Jaccard"}


def _patches_with_targets(xs, ys, targets, notes, title, path, stamp, size=2.2):
    """Patches (top row) above their target channels (one row each), every target row with
    a colour bar that says what its values mean."""
    n, rows = len(xs), 1 + len(targets)
    fig, axes = _subplots(rows, n, figsize=(size * n + 1.6, size * rows + 0.5),
                          squeeze=False, layout=_layout())
    for j in range(n):
        show_image(axes[0, j], np.clip(xs[j], 0, 1), notes[j] if notes else "")
        axes[0, j].title.set_fontsize(9)
    for t, name in enumerate(targets):
        for j in range(n):
            im = axes[1 + t, j].imshow(ys[j][..., t], cmap="gray", vmin=0, vmax=1,
                                       interpolation="nearest")
            axes[1 + t, j].axis("off")
        axes[1 + t, 0].set_title(f"target: {name}", fontsize=9, loc="left")
        bar = fig.colorbar(im, ax=axes[1 + t, :].tolist(), fraction=0.025, pad=0.01)
        bar.set_label(TARGET_WORDS.get(name, name), fontsize=8)
        bar.ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=11)
    return save(fig, path, stamp)


def augmentation(patches, path, stamp="", targets=("mask",)):
    """Augmented training patches with their target channels; ``patches`` = [(x, y), ...]."""
    xs, ys = [x for x, _ in patches], [y for _, y in patches]
    return _patches_with_targets(xs, ys, targets, ["input"] + [""] * (len(xs) - 1),
                                 "Augmented training patches and their targets", path, stamp)


# --------------------------------------------------------------------------- notebook 02
def _show_as_is(ax, image, title=""):
    """An image as the network gets it, clipped to [0, 1] but not stretched (unlike
    :func:`show_image`), so that changes of brightness and contrast stay visible."""
    ax.imshow(np.clip(np.asarray(image, np.float32), 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _histogram(ax, values, edges, lines, title):
    """The share of values per bin (log scale), with dashed lines at ``lines``."""
    counts, _ = np.histogram(np.asarray(values, np.float32).ravel(), bins=edges)
    share = np.maximum(counts / max(counts.sum(), 1), 1e-6)
    ax.stairs(share, edges, fill=True, color="0.45")
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 1.5)
    ax.set_yticks([1e-4, 1e-2, 1], ["0.01%", "1%", "100%"])  # fixed ticks: log tick finding
    ax.yaxis.set_minor_locator(_plt().NullLocator())         # is slow and adds nothing here
    ax.set_xticks(np.linspace(edges[0], edges[-1], 5))
    for x in lines:
        ax.axvline(x, color="C3", ls="--", lw=0.9)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("pixel value (all channels)", fontsize=8)
    ax.set_ylabel("share of the pixels", fontsize=8)
    ax.tick_params(labelsize=7)


def normalisation(examples, path, stamp="", mode="percentile"):
    """Intensity normalisation (:func:`nucseg_utils.inference.preprocessing.normalize`), one row per
    example ``(modality, id, raw image)``: the raw image and the normalised one (both shown
    as they are, clipped to [0, 1]), and the histograms of their values (all channels) before
    (dashed: the 1st and 99.8th percentiles, mapped to 0 and 1) and after (dashed: 0 and 1)."""
    n = len(examples)
    fig, axes = _subplots(n, 4, figsize=(12.5, 3.1 * n), squeeze=False, layout=_layout(),
                          gridspec_kw={"width_ratios": [1.1, 1.1, 0.8, 0.8]})
    for r, (modality, sid, raw) in enumerate(examples):
        raw = np.asarray(raw, np.float32)
        out = normalize(raw, mode)
        inverted = mode == "percentile" and background_is_bright(raw)
        h, w = raw.shape[:2]
        _show_as_is(axes[r, 0], raw, f"{modality}: {_short(sid)}, {h}x{w}, raw")
        _show_as_is(axes[r, 1], out, f"normalised ({mode}), background "
                                     f"{'inverted' if inverted else 'not inverted'}")
        for ax in axes[r, :2]:
            ax.title.set_fontsize(8.5)
        lines = np.percentile(raw, PERCENTILES) if mode == "percentile" else ()
        _histogram(axes[r, 2], raw, np.linspace(0, 1, 65), lines, "values before")
        _histogram(axes[r, 3], out, np.linspace(*CLIP, 81), (0.0, 1.0), "values after")
    fig.suptitle("Intensity normalisation per modality: raw, normalised, histograms "
                 "(dashed: the values mapped to 0 and 1)", fontsize=11)
    return save(fig, path, stamp)


def colour_augmentation(image, path, stamp="", seed=0, n=4, mode="percentile", title="",
                        window=160, stain=0.0):
    """Colour and intensity augmentation of one raw image: the image, its normalised version
    (what the jitter acts on) and ``n`` seeded jitters of it
    (:func:`nucseg_utils.training.augmentation.colour_examples`), all shown as they are, clipped to
    [0, 1]: what the network sees, before the geometric transform. With a ``stain``
    strength, a second row of ``n`` seeded stain jitters of the normalised image
    (:func:`nucseg_utils.training.augmentation.stain_examples`), shown un-inverted (1 - value) so the
    stains look as on the slide. Only the central ``window`` px are shown (the jitters' noise
    makes large PNGs)."""
    raw = np.asarray(image, np.float32)
    h, w = raw.shape[:2]
    ys, xs = window_around(raw.shape, (h / 2, w / 2), window)
    norm = normalize(raw, mode)[ys, xs]  # normalised as a whole, then cropped
    raw = raw[ys, xs]
    jitters = colour_examples(norm, n, seed)
    # two rows: the image, its normalised version and the jitters (under the first two, the
    # stain jitters when there are any, else the jitters wrap)
    cols = n + 2 if stain else int(np.ceil((n + 2) / 2))
    fig, axes = _subplots(2, cols, figsize=(2.0 * cols, 4.4), squeeze=False,
                          layout=_layout())
    for ax in axes.ravel():
        ax.axis("off")
    flat = axes.ravel()
    _show_as_is(flat[0], raw, title or f"raw ({h}x{w}, centre)")
    _show_as_is(flat[1], norm, f"normalised ({mode})")
    for k, x in enumerate(jitters):
        _show_as_is(flat[2 + k], x, f"jitter {k + 1}: mean {float(np.mean(x)):.2f}")
    what = f"{n} seeded jitters"
    if stain:
        for k, x in enumerate(stain_examples(norm, stain, n, seed)):
            _show_as_is(flat[cols + 2 + k], 1.0 - x, f"stain {k + 1} (1 - value)")
        what += f"; below, {n} stain jitters (strength {stain:g})"
    for ax in flat:
        ax.title.set_fontsize(9)
    fig.suptitle(f"Colour and intensity augmentation: {what}", fontsize=11)
    return save(fig, path, stamp)


def _scale_bar(ax, length, size):
    """A white bar ``length`` px long near the lower left of a ``size`` px window, outlined
    in black so that it shows on bright nuclei too."""
    from matplotlib import patheffects
    outline = [patheffects.withStroke(linewidth=3.5, foreground="black")]
    y = size - 0.08 * size
    ax.plot([0.06 * size, 0.06 * size + length], [y, y], color="white", lw=2.5,
            solid_capstyle="butt", path_effects=outline)
    ax.text(0.06 * size, y - 0.04 * size, f"{length:g} px", color="white", fontsize=7,
            va="bottom", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])


def rescaling(items, factors, path, stamp="", target=None, window=160):
    """Rescaling to the standard nucleus size (:mod:`nucseg_utils.inference.scale`): for each
    ``(id, normalised image, labels)`` with its ``factor``, the ``window`` px crop that holds
    the most nucleus pixels at native scale (top) and a crop of the rescaled image around the
    same place (bottom), at one pixel scale, so that nucleus sizes can be compared across
    images. Titles give the median nucleus diameter measured on the labels before and after;
    the white bar is ``target`` px long."""
    n = len(items)
    fig, axes = _subplots(2, n, figsize=(3.8 * n, 7.7), squeeze=False)
    for j, ((sid, img, lab), f) in enumerate(zip(items, factors)):
        lab = np.asarray(lab)
        out = rescale_image(img, f)
        d0 = label_diameter(lab)
        d1 = label_diameter(resize_labels(lab, out.shape[:2]))
        centre = densest_centre(lab > 0, window)
        for r, (im, c, title) in enumerate((
                (img, centre, f"{_short(sid)}: {lab.shape[0]}x{lab.shape[1]}, "
                              f"d = {d0:.1f} px"),
                (out, np.multiply(centre, f),
                 f"x {f:.2f}: {out.shape[0]}x{out.shape[1]}, d = {d1:.1f} px"))):
            ax = axes[r, j]
            show_image(ax, np.clip(np.asarray(im)[window_around(im.shape, c, window)], 0, 1),
                       title)
            ax.title.set_fontsize(10)
            ax.set_xlim(-0.5, window - 0.5)
            ax.set_ylim(window - 0.5, -0.5)
            if target:
                _scale_bar(ax, target, window)
    where = (f"~{target:g} px, the white bar" if target else
             "none in this profile: factors 1")
    fig.suptitle(f"Rescaling to the standard nucleus size ({where})\n{window}-px windows "
                 f"at one pixel scale: native (top), rescaled (bottom)", fontsize=11)
    fig.tight_layout()
    return save(fig, path, stamp)


def _metric_panels(history, loss=None):
    """(history column, title, axis label) of the training metrics a history holds: the loss, the
    IoU and the pixel F1 of the nucleus mask (pixels above 0.5 against the true mask, over
    the whole batch; not the object F1 of notebook 6)."""
    words = LOSS_WORDS.get(loss, loss)
    panels = (("loss", "loss", f"loss ({words})" if words else "loss"),
              ("iou", "IoU of the nucleus mask", "IoU of the mask (pixels, p > 0.5)"),
              ("f1", "pixel F1 of the mask", "pixel F1 of the mask (p > 0.5)"))
    return [p for p in panels if p[0] in history and f"val_{p[0]}" in history]


def training_curves(history, path, stamp="", loss=None):
    """Fig. 5-6: per epoch, training and validation loss, IoU of the nucleus mask and pixel F1
    of the mask, each on its own labelled axis; the best epoch (lowest validation loss: the
    checkpoint that is kept) marked. ``loss``: the profile's loss, named on its axis."""
    panels = _metric_panels(history, loss)
    fig, axes = _subplots(1, len(panels), figsize=(4.3 * len(panels), 3.9), squeeze=False,
                          layout=_layout())
    best = history.loc[history["val_loss"].idxmin(), "epoch"]
    for k, (ax, (key, name, label)) in enumerate(zip(axes[0], panels)):
        ax.plot(history["epoch"], history[key], "o-", ms=3, label="training (augmented)")
        ax.plot(history["epoch"], history[f"val_{key}"], "o-", ms=3,
                label="validation (held out)")
        ax.axvline(best, color="0.6", ls="--", lw=1, label=f"best epoch ({int(best)})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(name, fontsize=10)
        if k == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Training curves: one panel per measure", fontsize=11)
    return save(fig, path, stamp)


def training_metrics(history, path, stamp="", loss=None):
    """Fig. 7-8: training and validation loss, IoU of the mask and pixel F1 of the mask at the
    best epoch (the kept checkpoint), one labelled axis each."""
    row = history.loc[history["val_loss"].idxmin()]
    panels = _metric_panels(history, loss)
    fig, axes = _subplots(1, len(panels), figsize=(3.4 * len(panels), 3.5), squeeze=False,
                          layout=_layout())
    for ax, (key, name, label) in zip(axes[0], panels):
        values = [float(row[key]), float(row[f"val_{key}"])]
        bars = ax.bar(["training", "validation"], values, color=["C0", "C1"], width=0.6)
        ax.bar_label(bars, fmt="%.3f", fontsize=9)
        ax.set_ylim(0, max(1.0, max(values)) * 1.12)
        ax.set_ylabel(label)
        ax.set_title(name, fontsize=10)
    fig.suptitle(f"At the best epoch ({int(row['epoch'])}), the checkpoint that is kept",
                 fontsize=11)
    return save(fig, path, stamp)


def _panels(rows, cols, figsize, squeeze=False):
    """Subplots at the display dpi in constrained layout (colour bars fit beside their
    panels), with the foot of the figure kept free for the stamp that :func:`save` writes."""
    fig, axes = _subplots(rows, cols, figsize=figsize, squeeze=squeeze, layout="constrained")
    foot = 0.25 / figsize[1]
    fig.get_layout_engine().set(rect=(0, foot, 1, 1 - foot))
    return fig, axes


def _probability(ax, prob, title=""):
    """A probability map on the fixed 0-1 colour scale (magma); returns the image for a
    colour bar."""
    im = ax.imshow(np.asarray(prob, np.float32), cmap="magma", vmin=0, vmax=1,
                   interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return im


def _crop(window):
    """(rows, cols) slices of a figure window; None is the whole image."""
    return window or (slice(None), slice(None))


def _focus(weight, crop: int | None):
    """The (rows, cols) window of ``crop`` px that holds the most of ``weight`` (a mask or a
    map of the image's size), or None (the whole image) when the image is no larger than
    that: what a panel shows, so that its detail is visible at the figure's size."""
    shape = np.shape(weight)[:2]
    if not crop or max(shape) <= crop:
        return None
    return window_around(shape, densest_centre(weight, crop), crop)


def _window_note(shape, window) -> str:
    """", 160x160 px crop of 520x696" when ``window`` shows part of an image of ``shape``."""
    if window is None:
        return ""
    h, w = shape[:2]
    rows, cols = (range(*s.indices(n)) for s, n in zip(window, (h, w)))
    if len(rows) >= h and len(cols) >= w:
        return ""
    return f", {len(rows)}x{len(cols)} px crop of {h}x{w}"


def tta_variants(image, variant_probs, mean_prob, path, stamp="", crop=192, title=""):
    """The 8 TTA predictions of one image, each mapped back to the image's orientation, and
    their average. ``variant_probs`` = [(name, nucleus probability)]: the 4 rotations without
    the flip (top row), then the 4 with it (bottom row). An image larger than ``crop`` px is
    shown in the ``crop`` px window where the variants differ most (largest sum of their
    standard deviation; :func:`tta_disagreement` outlines the same window), so that the
    differences are visible at the figure's size. One colour bar for every map."""
    window = _focus(np.stack([p for _, p in variant_probs]).std(axis=0), crop)
    win = _crop(window)
    fig, axes = _panels(2, 5, (14, 6.4))
    show_image(axes[0, 0], np.asarray(image)[win], "image")
    axes[0, 0].title.set_fontsize(9)
    im = _probability(axes[1, 0], np.asarray(mean_prob)[win], "average of the 8")
    for i, (name, p) in enumerate(variant_probs):
        _probability(axes[i // 4, 1 + i % 4], np.asarray(p)[win], name)
    fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01, label="nucleus probability")
    fig.suptitle(title or f"Test-time augmentation: each variant's nucleus probability, mapped "
                          f"back{_window_note(np.shape(image), window)}", fontsize=11)
    return save(fig, path, stamp)


def difference_rgb(true, pred) -> np.ndarray:
    """White = agreed foreground, blue = extra (predicted only), red = missing (true only)."""
    t, p = np.asarray(true) > 0, np.asarray(pred) > 0
    rgb = np.zeros(t.shape + (3,), np.float32)
    rgb[t & p] = 0.85
    rgb[p & ~t] = (0.15, 0.35, 1.0)
    rgb[t & ~p] = (1.0, 0.15, 0.15)
    return rgb


def difference(items, path, stamp="", crop=256):
    """Fig. 9: post-processed examples, one row each: the image and the difference to the
    ground truth (white = both, blue = extra, red = missing), with every predicted nucleus
    outlined in black so that touching ones stay apart. ``items`` = [(id, image, true, pred,
    score), ...]. An image larger than ``crop`` px is shown in the ``crop`` px window with
    the most nuclei (true or predicted), large enough to see them; counts and score are of
    the whole image."""
    n = len(items)
    fig, axes = _panels(n, 2, (10, 4.9 * n))
    for r, (sid, img, true, pred, score) in enumerate(items):
        window = _focus((np.asarray(true) > 0) | (np.asarray(pred) > 0), crop)
        win = _crop(window)
        show_image(axes[r, 0], np.asarray(img)[win],
                   f"{_short(sid)}{_window_note(np.shape(img), window)}")
        rgb = difference_rgb(true, pred)
        rgb[find_boundaries(np.asarray(pred), mode="inner") & (np.asarray(pred) > 0)] = 0.0
        axes[r, 1].imshow(rgb[win], interpolation="nearest")
        axes[r, 1].set_title(f"truth {_count(true)} nuclei, predicted {_count(pred)} "
                             f"(DSB {score:.3f})")
        axes[r, 1].axis("off")
        for ax in axes[r]:
            ax.title.set_fontsize(10)
    fig.suptitle("Post-processed predictions against the truth: white = both, blue = extra "
                 "(predicted only), red = missing (true only)", fontsize=11)
    return save(fig, path, stamp)


def per_image_scores(table, path, stamp=""):
    """DSB score per image, by modality (one dot per image, spread sideways by a seeded
    jitter so that a re-run draws the same picture; the bar is the modality's mean)."""
    fig, ax = _subplots(figsize=(6.5, 3.2))
    mods = sorted(table["modality"].unique())
    rng = np.random.default_rng(0)
    for i, m in enumerate(mods):
        v = table.loc[table["modality"] == m, "dsb"].to_numpy()
        ax.plot(i + rng.uniform(-0.25, 0.25, v.size), v, "o", ms=4, alpha=0.8,
                color=f"C{i}")
        mean = float(v.mean())
        ax.hlines(mean, i - 0.3, i + 0.3, color="k", lw=2)
        ax.text(i + 0.32, mean, f"{mean:.3f}", va="center", fontsize=8)
    ax.set_xticks(range(len(mods)), [f"{m}\n({int((table['modality'] == m).sum())})"
                                     for m in mods])
    ax.set_xlim(-0.6, len(mods) - 0.4)
    ax.set_ylabel("DSB")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"DSB score per image (mean {table['dsb'].mean():.4f}, "
                 f"{len(table)} images)", fontsize=9)
    fig.tight_layout()
    return save(fig, path, stamp)


def overlay(image, labels, path, stamp="", title=""):
    """A user's image beside its labels: the image with the outline of every segmented
    nucleus (yellow), and the label image (one colour per nucleus)."""
    fig, axes = _panels(1, 2, (12, 5.6), squeeze=True)
    axes[0].imshow(_outlined(image, labels), interpolation="nearest")
    axes[0].set_title(f"{title or 'image'}: {_count(labels)} nuclei outlined", fontsize=10)
    axes[0].axis("off")
    show_labels(axes[1], labels, "labels (one colour per nucleus)")
    axes[1].title.set_fontsize(10)
    return save(fig, path, stamp)


def nucleus_measurements(measurements, summary, path, stamp=""):
    """Segmented images: the distribution of nucleus areas (in square micrometres when every
    image's pixel size is known) and the number of nuclei per image. ``measurements`` holds
    one row per nucleus, ``summary`` one per image (as ``nucseg predict`` writes them)."""
    fig, axes = _subplots(1, 2, figsize=(10, 3.2))
    calibrated = "area_um2" in measurements and measurements["area_um2"].notna().all()
    col, unit = ("area_um2", "µm²") if calibrated else ("area", "pixels")
    if len(measurements):
        axes[0].hist(measurements[col], bins=30, color="0.35")
    axes[0].set_xlabel(f"nucleus area ({unit})")
    axes[0].set_ylabel("nuclei")
    axes[0].set_title(f"nucleus areas ({len(measurements)} nuclei)", fontsize=9)
    ok = summary[summary["nuclei"].notna()]
    axes[1].bar(np.arange(len(ok)), ok["nuclei"], color="0.35")
    axes[1].set_xticks(np.arange(len(ok)), [_short(str(i)) for i in ok["id"]], rotation=45,
                       ha="right", fontsize=7)
    axes[1].set_ylabel("nuclei")
    axes[1].set_title(f"nuclei per image ({len(ok)} images)", fontsize=9)
    fig.tight_layout()
    return save(fig, path, stamp)


# --------------------------------------------------------------------------- notebook 03
def training_batch(x, y, path, stamp="", targets=("mask",), notes=None):
    """One training batch as the network sees it: each patch (top row) above its target
    channels (one row each, with a colour bar). ``notes`` (one per patch) go in the titles."""
    return _patches_with_targets(
        x, y, targets, notes,
        f"One training batch ({len(x)} patches of {x.shape[1]} px) and its targets", path,
        stamp, size=1.9)


def learning_rate(schedule, path, stamp=""):
    """The learning rate at every training step (``schedule``: columns step, epoch, lr),
    with the epoch boundaries."""
    fig, ax = _subplots(figsize=(9, 3.4))
    ax.plot(schedule["step"], schedule["lr"], lw=1.5)
    ends = schedule.groupby("epoch")["step"].max()
    for s in ends.to_numpy()[:-1]:
        ax.axvline(s + 0.5, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel(f"training step ({len(ends)} epochs, grey lines between them)")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_title("Learning-rate schedule", fontsize=11)
    fig.tight_layout()
    return save(fig, path, stamp)


# --------------------------------------------------------------------------- notebook 04
def tta_disagreement(image, mean_prob, std, path, stamp="", title="", crop=192):
    """Where the 8 TTA variants disagree: the image, their average nucleus probability and
    the standard deviation across them (pixel by pixel), each map with its colour bar. On
    the image, the ``crop`` px window that :func:`tta_variants` shows is outlined (when the
    image is larger than that)."""
    from matplotlib.patches import Rectangle
    window = _focus(np.asarray(std), crop)
    fig, axes = _panels(1, 3, (14, 4.6), squeeze=True)
    show_image(axes[0], image, title or "image")
    axes[0].title.set_fontsize(9)
    if window is not None:
        h, w = np.shape(image)[:2]
        (r0, r1, _), (c0, c1, _) = (s.indices(n) for s, n in zip(window, (h, w)))
        axes[0].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False,
                                    edgecolor=(1.0, 0.85, 0.0), lw=1.5))
    im = _probability(axes[1], mean_prob, "average of the 8 variants")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02, label="nucleus probability")
    im = axes[2].imshow(std, cmap="viridis", vmin=0, interpolation="nearest")
    axes[2].set_title(f"std across the 8 variants (mean {float(np.mean(std)):.4f})",
                      fontsize=9)
    axes[2].axis("off")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02, label="standard deviation")
    return save(fig, path, stamp)


# --------------------------------------------------------------------------- notebook 05
def visible_marks(binary, radius: int = 2):
    """Single-pixel marks grown to a visible disc (for markers at a figure's size)."""
    b = np.asarray(binary, bool)
    if radius <= 0 or not b.any():
        return b
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return ndi.binary_dilation(b, structure=(yy ** 2 + xx ** 2) <= radius ** 2)


def _labels_over(ax, background, labels, title):
    """Labels in random colours over a grey background (e.g. a foreground mask)."""
    cm = label_cmap()
    lab = np.asarray(labels)
    ax.imshow(np.asarray(background, float), cmap="gray", vmin=0, vmax=2.5,
              interpolation="nearest")
    shown = np.ma.masked_equal(np.where(lab > 0, (lab - 1) % (cm.N - 1) + 1, 0), 0)
    ax.imshow(shown, cmap=cm, vmin=0, vmax=cm.N - 1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _count(labels) -> int:
    """The number of objects (distinct non-zero labels) in a label image or part of one."""
    return int(np.count_nonzero(np.unique(np.asarray(labels))))


def seeded_watershed(image, truth, steps, path, stamp="", window=None, title=""):
    """A seeded watershed step by step on one window of an image. ``steps`` holds
    ``nucleus``, ``touching`` (or ``distance``), ``foreground``, ``seeds`` and ``labels``, as
    :func:`nucseg_utils.postprocessing.touching_steps` (or ``distance_steps``) returns them or
    notebook 5 computes them. Top row: the image and the two maps the method reads, each with
    its colour bar; bottom row: the seeds over the foreground (grey), the nuclei grown from
    them, the ground truth. Counts are of the objects inside the window."""
    win = _crop(window)

    def w(a):
        return np.asarray(a)[win]

    by_distance = "distance" in steps
    fig, axes = _panels(2, 3, (13, 9))
    show_image(axes[0, 0], w(image), f"image{_window_note(np.shape(image), window)}")
    second = (("distance", "2. distance to the edge (predicted)") if by_distance
              else ("touching", "2. touching-zone probability"))
    for ax, (key, name) in zip(axes[0, 1:], (("nucleus", "1. nucleus probability"), second)):
        fig.colorbar(_probability(ax, w(steps[key]), name), ax=ax, fraction=0.046, pad=0.02)
    seeds = w(steps["seeds"])
    _labels_over(axes[1, 0], w(steps["foreground"]), seeds,
                 f"3. seeds ({_count(seeds)}) on the foreground (grey)")
    show_labels(axes[1, 1], w(steps["labels"]),
                f"4. watershed from the seeds ({_count(w(steps['labels']))} nuclei)")
    show_labels(axes[1, 2], w(truth), f"ground truth ({_count(w(truth))} nuclei)")
    for ax in axes.ravel():
        ax.title.set_fontsize(10)
    fig.suptitle(title or f"The {'distance' if by_distance else 'touching'} method step by "
                          f"step", fontsize=12)
    return save(fig, path, stamp)


def paper_watershed(image, truth, steps, path, stamp="", window=None, title=""):
    """The paper's post-processing step by step on one window of an image. ``steps`` holds
    ``foreground``, ``distance``, ``markers`` and ``labels``, as
    :func:`nucseg_utils.postprocessing.paper_steps` returns them or notebook 5 computes them.
    Top row: the image, Otsu's foreground, the distance to the background (with its colour
    bar); bottom row: the markers (distance maxima, drawn as discs), the watershed from them,
    the ground truth."""
    win = _crop(window)

    def w(a):
        return np.asarray(a)[win]

    fig, axes = _panels(2, 3, (13, 9))
    show_image(axes[0, 0], w(image), f"image{_window_note(np.shape(image), window)}")
    axes[0, 1].imshow(w(steps["foreground"]), cmap="gray", interpolation="nearest")
    axes[0, 1].set_title("1. foreground: Otsu threshold, holes filled")
    im = axes[0, 2].imshow(w(steps["distance"]), cmap="viridis", interpolation="nearest")
    axes[0, 2].set_title("2. distance to the background")
    fig.colorbar(im, ax=axes[0, 2], fraction=0.046, pad=0.02, label="px")
    for ax in axes[0, 1:]:
        ax.axis("off")
    marks = w(steps["markers"])
    _labels_over(axes[1, 0], w(steps["foreground"]),
                 np.where(visible_marks(marks > 0, 3), _grow(marks, 3), 0),
                 f"3. markers: maxima of the distance ({_count(marks)})")
    show_labels(axes[1, 1], w(steps["labels"]),
                f"4. watershed from the markers ({_count(w(steps['labels']))} nuclei)")
    show_labels(axes[1, 2], w(truth), f"ground truth ({_count(w(truth))} nuclei)")
    for ax in axes.ravel():
        ax.title.set_fontsize(10)
    fig.suptitle(title or "The paper's method step by step", fontsize=12)
    return save(fig, path, stamp)


def _grow(markers, radius: int = 2):
    """Each marker label spread over its neighbourhood (for display only)."""
    return ndi.grey_dilation(np.asarray(markers), size=2 * radius + 1)


# --------------------------------------------------------------------------- notebook 06
def iou_threshold_curve(per_threshold, path, stamp=""):
    """The data set over IoU thresholds 0.50 ... 0.95: object precision, recall and F1 at
    IoU > t (from the TP, FP, FN summed over images) and the DSB term (mean over images of
    TP/(TP+FP+FN)) on the left, the TP/FP/FN counts on the right. ``per_threshold`` has the
    columns of :func:`nucseg_utils.evaluation.metrics.dataset_scores`' ``per_threshold``."""
    t = per_threshold
    fig, axes = _subplots(1, 2, figsize=(11, 3.8))
    for key, style, name in (("precision", "o-", "object precision"),
                             ("recall", "s-", "object recall"), ("f1", "^-", "object F1"),
                             ("dsb_term", "D-", "DSB term: mean TP / (TP + FP + FN)")):
        axes[0].plot(t["threshold"], t[key], style, ms=4, label=name)
    axes[0].set_xlabel("IoU threshold t (a match needs IoU > t)")
    axes[0].set_ylabel("score at IoU > t")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"scores over thresholds (DSB = mean of the DSB term: "
                      f"{t['dsb_term'].mean():.4f})", fontsize=9)
    for key in ("tp", "fp", "fn"):
        axes[1].plot(t["threshold"], t[key], "o-", ms=4, label=key.upper())
    axes[1].set_xlabel("IoU threshold")
    axes[1].set_ylabel("objects, summed over images")
    axes[1].legend(fontsize=8)
    axes[1].set_title("TP, FP, FN", fontsize=9)
    fig.tight_layout()
    return save(fig, path, stamp)


ERROR_COLOURS = {"matched": (0.25, 0.8, 0.25), "missed": (1.0, 0.15, 0.15),
                 "false": (0.2, 0.45, 1.0), "merged": (0.9, 0.2, 0.9),
                 "split": (1.0, 0.6, 0.0)}


def error_rgb(image, true, pred, errors) -> np.ndarray:
    """The image in grey with every object coloured by its error class
    (:func:`nucseg_utils.evaluation.metrics.object_errors`): matched and false predictions filled in
    their colour, missed true nuclei filled in red; a split true nucleus lightly filled in
    orange with the outline of every predicted piece inside it drawn in orange, and the true
    nuclei of a merge lightly filled in magenta with the outline of the one prediction that
    covers them in magenta (so that "3 true into 9" shows 9 outlines on 3 nuclei); the
    outlines of the true nuclei in white."""
    img = np.asarray(image, np.float32)
    grey = img.mean(axis=-1) if img.ndim == 3 else img
    lo, hi = np.percentile(grey, [0.5, 99.8])
    grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1) * 0.45
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    true, pred = np.asarray(true), np.asarray(pred)

    def of_class(labels, classes, wanted):
        """The pixels of the objects of ``labels`` whose class is one of ``wanted``."""
        keep = np.zeros(int(labels.max()) + 1, bool)
        for lab, c in classes.items():
            keep[lab] = c in wanted
        return keep[labels]

    def paint(where, colour, alpha=0.7):
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, np.float32)

    if true.max() > 0:
        cls = errors["true"]
        paint(of_class(true, cls, ("missed",)) & (pred == 0), ERROR_COLOURS["missed"])
        for c in ("split", "merged"):
            paint(of_class(true, cls, (c,)), ERROR_COLOURS[c], 0.35)
    if pred.max() > 0:
        cls = errors["pred"]
        for c in ("matched", "false"):
            paint(of_class(pred, cls, (c,)), ERROR_COLOURS[c])
    rgb[find_boundaries(true, mode="inner") & (true > 0)] = 1.0
    if pred.max() > 0:  # the pieces of a split and the object of a merge, as outlines on top
        edges = ndi.binary_dilation(find_boundaries(pred, mode="inner")) & (pred > 0)  # 2 px
        for c in ("split", "merged"):
            rgb[edges & of_class(pred, errors["pred"], (c,))] = ERROR_COLOURS[c]
    return rgb


def object_errors(items, path, stamp="", crop=256):
    """Object-level errors of a few images, one row each: the image and its errors
    (:func:`error_rgb`), with a legend of the counts. ``items`` = [(id, image, true, pred,
    errors, dsb), ...] with ``errors`` from :func:`nucseg_utils.evaluation.metrics.object_errors`.
    An image larger than ``crop`` px is shown in the ``crop`` px window with the most
    errors (missed, false, merged and split objects), large enough to see the outlines of a
    split; the counts are of the whole image."""
    from matplotlib.patches import Patch
    n = len(items)
    fig, axes = _panels(n, 2, (12, 4.8 * n))
    for r, (sid, img, true, pred, errors, dsb) in enumerate(items):
        true, pred = np.asarray(true), np.asarray(pred)
        wrong = np.zeros(true.shape, bool)
        for labels, cls in ((true, errors["true"]), (pred, errors["pred"])):
            bad = [lab for lab, c in cls.items() if c != "matched"]
            if bad:
                wrong |= np.isin(labels, bad)
        window = _focus(wrong if wrong.any() else true > 0, crop)
        win = _crop(window)
        show_image(axes[r, 0], np.asarray(img)[win],
                   f"{_short(sid)} (DSB {dsb:.3f}){_window_note(true.shape, window)}")
        axes[r, 1].imshow(error_rgb(img, true, pred, errors)[win], interpolation="nearest")
        axes[r, 1].axis("off")
        c = errors["counts"]
        axes[r, 1].set_title(f"{c['true_matched']} matched of {len(errors['true'])} true, "
                             f"{len(errors['pred'])} predicted (whole image)")
        for ax in axes[r]:
            ax.title.set_fontsize(10)
        handles = [
            Patch(color=ERROR_COLOURS["matched"], label=f"matched ({c['true_matched']})"),
            Patch(color=ERROR_COLOURS["missed"], label=f"missed ({c['true_missed']} true)"),
            Patch(color=ERROR_COLOURS["false"], label=f"false ({c['pred_false']} predicted)"),
            Patch(color=ERROR_COLOURS["merged"],
                  label=f"merged ({c['true_merged']} true in {c['pred_merged']}: "
                        f"outline = the prediction)"),
            Patch(color=ERROR_COLOURS["split"],
                  label=f"split ({c['true_split']} true into {c['pred_split']}: "
                        f"outlines = the pieces)")]
        axes[r, 1].legend(handles=handles, fontsize=9, loc="upper left",
                          bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle("Object-level errors at IoU > 0.5 (white: true outlines)", fontsize=12)
    return save(fig, path, stamp)


FATE_COLOURS = {"kept": (0.1, 0.8, 0.2), "cut at the window's edge": (0.9, 0.15, 0.1),
                "centred in another core": (0.55, 0.55, 0.55)}


def stitch_rules(window_image, window_labels, fate: dict, core, path, stamp="", title=""):
    """One tile's window with its objects coloured by what the stitching does with them
    (``fate``: {label: one of :data:`FATE_COLOURS`}) and its core drawn (``core``: y0, y1, x0,
    x1 in window pixels)."""
    from matplotlib.patches import Patch, Rectangle
    lab = np.asarray(window_labels)
    base = _outlined(window_image, lab)
    colour = np.zeros(lab.shape + (3,), np.float32)
    for k, f in fate.items():
        colour[lab == k] = FATE_COLOURS[f]
    shown = np.where((lab > 0)[..., None], 0.45 * base + 0.55 * colour, base)
    fig, ax = _panels(1, 1, (6.4, 6.4), squeeze=True)
    ax.imshow(np.clip(shown, 0, 1), interpolation="nearest")
    y0, y1, x0, x1 = core
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=2,
                           ec="cyan", ls="--"))
    counts = {f: sum(v == f for v in fate.values()) for f in FATE_COLOURS}
    ax.legend(handles=[Patch(color=c, label=f"{f}: {counts[f]}") for f, c in
                       FATE_COLOURS.items()] + [Patch(fill=False, ec="cyan", ls="--",
                                                      label="the tile's core")],
              loc="lower left", fontsize=8, framealpha=0.85)
    ax.set_title(f"{title}: its window, and what the stitching keeps", fontsize=10)
    ax.axis("off")
    return save(fig, path, stamp)


def tile_seams(image, labels, tiles, path, stamp="", title=""):
    """A big image's nuclei outlined with the tile borders (the seams) drawn over them, and
    its label image (one colour per nucleus) with the same seams: a nucleus across a seam
    keeps one colour."""
    fig, axes = _panels(1, 2, (13, 6.4), squeeze=True)
    axes[0].imshow(_outlined(image, labels), interpolation="nearest")
    show_labels(axes[1], labels, "labels (one colour per nucleus)")
    ys = sorted({t.core[0] for t in tiles} - {0})
    xs = sorted({t.core[2] for t in tiles} - {0})
    for ax in axes:
        for y in ys:
            ax.axhline(y - 0.5, color="cyan", lw=0.8, ls="--")
        for x in xs:
            ax.axvline(x - 0.5, color="cyan", lw=0.8, ls="--")
        ax.axis("off")
    axes[0].set_title(f"{title}: nuclei outlined, tile borders dashed", fontsize=10)
    axes[1].title.set_fontsize(10)
    return save(fig, path, stamp)
