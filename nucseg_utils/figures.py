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
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import runs

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
    "tta": "tta_variants.png",
    "watershed": "postprocessing_steps.png",
    "difference": "fig9_difference_overlay.png",     # Fig. 9
    "per_image": "dsb_per_image.png",
    "batch": "training_batch.png",                   # notebook 3: one batch and its targets
    "lr": "learning_rate.png",                       # notebook 3: the schedule over steps
    "disagreement": "tta_disagreement.png",          # notebook 4: std over the 8 variants
    "touching": "postprocessing_touching.png",       # notebook 5: seeded watershed vs paper
    "iou_curve": "scores_over_iou_thresholds.png",   # notebook 6: data set over thresholds
    "errors": "object_errors.png",                   # notebook 6: error classes, worst images
    "overlay": "segment_overlay.png",                # notebook 7: a user's image, outlined
    "measurements": "segment_measurements.png",      # notebook 7: nucleus areas, counts
}
TABLES = {
    "thresholds": "fig10_threshold_table.csv",       # Fig. 10
    "hyperparameters": "table1_hyperparameters.csv",  # Table I
    "results": "table2_results.csv",                 # Table II
    "eda": "eda_summary.csv",
    "per_threshold": "scores_over_iou_thresholds.csv",  # notebook 6
    "dilation": "paper_resize_dilation.csv",         # notebook 2: the paper's mask growth
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


def label_cmap(n: int = 4096, seed: int = 3):
    """A random colour map for label images: 0 black, every label a random bright colour."""
    from matplotlib.colors import ListedColormap
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.25, 1.0, (n, 3))
    colours[0] = 0
    return ListedColormap(np.c_[colours, np.ones(n)])


def show_labels(ax, labels, title=""):
    lab = np.asarray(labels)
    cm = label_cmap()
    ax.imshow(np.where(lab > 0, (lab - 1) % (cm.N - 1) + 1, 0), cmap=cm, vmin=0, vmax=cm.N - 1,
              interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def show_image(ax, image, title=""):
    img = np.asarray(image, np.float32)
    lo, hi = np.percentile(img, [0.5, 99.8])
    ax.imshow(np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _short(sid: str) -> str:
    return sid[:8]


def image_label_grid(items, path, stamp="", title="", label_title="labels"):
    """Rows of (image, labels) pairs; ``items`` is a list of (id, image, labels, note)."""
    n = len(items)
    cols = 2 * min(n, 3)
    rows = int(np.ceil(n / 3))
    fig, axes = _subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (sid, img, lab, note) in enumerate(items):
        r, c = divmod(k, 3)
        show_image(axes[r, 2 * c], img, f"{_short(sid)} {note}".strip())
        show_labels(axes[r, 2 * c + 1], lab, f"{label_title}: {int(len(np.unique(lab)) - 1)}")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path, stamp)


def samples(items, path, stamp=""):
    """Fig. 3: training images with their ground-truth nuclei."""
    return image_label_grid(items, path, stamp, "Training images and ground-truth nuclei",
                            "nuclei")


def predictions(items, path, stamp=""):
    """Fig. 4: test images with predicted nuclei."""
    return image_label_grid(items, path, stamp, "Test images and predicted nuclei", "predicted")


def eda(index, path, stamp=""):
    """Image sizes, modalities, nuclei per image and nucleus sizes of the data set index."""
    import seaborn as sns
    fig, axes = _subplots(1, 4, figsize=(15, 3.3))
    sizes = index.assign(size=index["height"].astype(str) + "x" + index["width"].astype(str))
    order = sizes["size"].value_counts().index[:10]
    sns.countplot(data=sizes[sizes["size"].isin(order)], y="size", hue="split", order=order,
                  ax=axes[0])
    axes[0].set_title("image sizes (10 most common)", fontsize=9)
    sns.countplot(data=index, x="modality", hue="split", ax=axes[1])
    axes[1].set_title("modality (from the pixels)", fontsize=9)
    has = index.dropna(subset=["nuclei"]) if "nuclei" in index else index.iloc[:0]
    if len(has):
        sns.histplot(data=has, x="nuclei", hue="split", bins=30, ax=axes[2], element="step")
        sns.histplot(data=has[has["mean_area"] > 0], x="mean_area", hue="modality", bins=30,
                     log_scale=True, ax=axes[3], element="step")
    axes[2].set_title("nuclei per image", fontsize=9)
    axes[3].set_title("mean nucleus area per image (px)", fontsize=9)
    fig.tight_layout()
    return save(fig, path, stamp)


def augmentation(patches, path, stamp="", targets=("mask",)):
    """Augmented training patches with their target channels; ``patches`` = [(x, y), ...]."""
    n = len(patches)
    rows = 1 + len(targets)
    fig, axes = _subplots(rows, n, figsize=(1.8 * n, 1.9 * rows), squeeze=False)
    for j, (x, y) in enumerate(patches):
        show_image(axes[0, j], np.clip(x, 0, 1), "input" if j == 0 else "")
        for t, name in enumerate(targets):
            axes[1 + t, j].imshow(y[..., t], cmap="gray", vmin=0, vmax=1,
                                  interpolation="nearest")
            axes[1 + t, j].set_title(name if j == 0 else "", fontsize=8)
            axes[1 + t, j].axis("off")
    fig.suptitle("Augmented training patches and their targets", fontsize=10)
    fig.tight_layout()
    return save(fig, path, stamp)


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
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)


def normalisation(examples, path, stamp="", mode="percentile"):
    """Intensity normalisation (:func:`nucseg_utils.preprocessing.normalize`), one row per
    example ``(modality, id, raw image)``: the raw image and the normalised one (both shown
    as they are, clipped to [0, 1]), and the histograms of their values (all channels) before
    (dashed: the 1st and 99.8th percentiles, mapped to 0 and 1) and after (dashed: 0 and 1)."""
    from .preprocessing import CLIP, PERCENTILES, background_is_bright, normalize
    n = len(examples)
    fig, axes = _subplots(n, 4, figsize=(10, 2.5 * n), squeeze=False,
                          gridspec_kw={"width_ratios": [1, 1, 0.8, 0.8]})
    for r, (modality, sid, raw) in enumerate(examples):
        raw = np.asarray(raw, np.float32)
        out = normalize(raw, mode)
        inverted = mode == "percentile" and background_is_bright(raw)
        h, w = raw.shape[:2]
        _show_as_is(axes[r, 0], raw, f"{modality}: {_short(sid)}, {h}x{w}, raw")
        _show_as_is(axes[r, 1], out, f"normalised ({mode}), background "
                                     f"{'inverted' if inverted else 'not inverted'}")
        lines = np.percentile(raw, PERCENTILES) if mode == "percentile" else ()
        _histogram(axes[r, 2], raw, np.linspace(0, 1, 65), lines, "values before")
        _histogram(axes[r, 3], out, np.linspace(*CLIP, 81), (0.0, 1.0), "values after")
    fig.suptitle("Intensity normalisation per modality: raw, normalised, histograms",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, path, stamp)


def colour_augmentation(image, path, stamp="", seed=0, n=4, mode="percentile", title="",
                        window=160, stain=0.0):
    """Colour and intensity augmentation of one raw image: the image, its normalised version
    (what the jitter acts on) and ``n`` seeded jitters of it
    (:func:`nucseg_utils.augmentation.colour_examples`), all shown as they are, clipped to
    [0, 1]: what the network sees, before the geometric transform. With a ``stain``
    strength, a second row of ``n`` seeded stain jitters of the normalised image
    (:func:`nucseg_utils.augmentation.stain_examples`), shown un-inverted (1 - value) so the
    stains look as on the slide. Only the central ``window`` px are shown (the jitters' noise
    makes large PNGs)."""
    from .augmentation import colour_examples, stain_examples
    from .evaluation import window_around
    from .preprocessing import normalize
    raw = np.asarray(image, np.float32)
    h, w = raw.shape[:2]
    ys, xs = window_around(raw.shape, (h / 2, w / 2), window)
    norm = normalize(raw, mode)[ys, xs]  # normalised as a whole, then cropped
    raw = raw[ys, xs]
    jitters = colour_examples(norm, n, seed)
    # two rows: the image, its normalised version and the jitters (under the first two, the
    # stain jitters when there are any, else the jitters wrap)
    cols = n + 2 if stain else int(np.ceil((n + 2) / 2))
    fig, axes = _subplots(2, cols, figsize=(1.9 * cols, 4.0), squeeze=False)
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
    fig.suptitle(f"Colour and intensity augmentation: {what}", fontsize=10)
    fig.tight_layout()
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
    """Rescaling to the standard nucleus size (:mod:`nucseg_utils.scale`): for each
    ``(id, normalised image, labels)`` with its ``factor``, the ``window`` px crop that holds
    the most nucleus pixels at native scale (top) and a crop of the rescaled image around the
    same place (bottom), at one pixel scale, so that nucleus sizes can be compared across
    images. Titles give the median nucleus diameter measured on the labels before and after;
    the white bar is ``target`` px long."""
    from .evaluation import densest_centre, window_around
    from .preprocessing import resize_labels
    from .scale import label_diameter, rescale_image
    n = len(items)
    fig, axes = _subplots(2, n, figsize=(3.1 * n, 6.2), squeeze=False)
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
            ax.set_xlim(-0.5, window - 0.5)
            ax.set_ylim(window - 0.5, -0.5)
            if target:
                _scale_bar(ax, target, window)
    where = (f"~{target:g} px, the white bar" if target else
             "none in this profile: factors 1")
    fig.suptitle(f"Rescaling to the standard nucleus size ({where})\n{window}-px windows "
                 f"at one pixel scale: native (top), rescaled (bottom)", fontsize=10)
    fig.tight_layout()
    return save(fig, path, stamp)


def training_curves(history, path, stamp=""):
    """Fig. 5-6: training and validation loss and IoU per epoch; the best epoch marked."""
    fig, axes = _subplots(1, 2, figsize=(10, 3.4))
    best = history.loc[history["val_loss"].idxmin(), "epoch"]
    for ax, key, name in ((axes[0], "loss", "loss"), (axes[1], "iou", "IoU (nucleus mask)")):
        ax.plot(history["epoch"], history[key], "o-", ms=3, label="training")
        ax.plot(history["epoch"], history[f"val_{key}"], "o-", ms=3, label="validation")
        ax.axvline(best, color="0.6", ls="--", lw=1, label=f"best epoch ({int(best)})")
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path, stamp)


def training_metrics(history, path, stamp=""):
    """Fig. 7-8: training and validation metrics (loss, IoU, F1) at the best epoch."""
    row = history.loc[history["val_loss"].idxmin()]
    keys = [k for k in ("loss", "iou", "f1") if k in history]
    fig, ax = _subplots(figsize=(6, 3.2))
    x = np.arange(len(keys))
    tr = [row[k] for k in keys]
    va = [row[f"val_{k}"] for k in keys]
    ax.bar(x - 0.2, tr, 0.4, label="training")
    ax.bar(x + 0.2, va, 0.4, label="validation")
    for i in range(len(keys)):
        ax.text(x[i] - 0.2, tr[i], f"{tr[i]:.3f}", ha="center", va="bottom", fontsize=7)
        ax.text(x[i] + 0.2, va[i], f"{va[i]:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, keys)
    ax.set_title(f"metrics at the best epoch ({int(row['epoch'])})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path, stamp)


def tta_variants(image, variant_probs, mean_prob, path, stamp=""):
    """The 8 TTA predictions (mapped back) of one image and their average."""
    fig, axes = _subplots(2, 5, figsize=(12, 5))
    show_image(axes[0, 0], image, "image")
    for i, (name, p) in enumerate(variant_probs):
        ax = axes.ravel()[1 + i if i < 4 else 2 + i]
        ax.imshow(p, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    axes[1, 0].imshow(mean_prob, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[1, 0].set_title("average of 8", fontsize=8)
    axes[1, 0].axis("off")
    fig.suptitle("Test-time augmentation: each variant's nucleus probability, mapped back",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, path, stamp)


def postprocessing_steps(image, prob, steps, labels, path, stamp=""):
    """The paper's post-processing of one image: probability, steps, final labels.
    ``steps`` is a list of (title, array) shown in order."""
    n = 3 + len(steps)
    fig, axes = _subplots(1, n, figsize=(2.6 * n, 2.8))
    show_image(axes[0], image, "image")
    axes[1].imshow(prob, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("probability", fontsize=8)
    axes[1].axis("off")
    for ax, (title, arr) in zip(axes[2:], steps):
        ax.imshow(arr, cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    show_labels(axes[-1], labels, f"labels: {int(labels.max())}")
    fig.tight_layout()
    return save(fig, path, stamp)


def difference_rgb(true, pred) -> np.ndarray:
    """White = agreed foreground, blue = extra (predicted only), red = missing (true only)."""
    t, p = np.asarray(true) > 0, np.asarray(pred) > 0
    rgb = np.zeros(t.shape + (3,), np.float32)
    rgb[t & p] = 0.85
    rgb[p & ~t] = (0.15, 0.35, 1.0)
    rgb[t & ~p] = (1.0, 0.15, 0.15)
    return rgb


def difference(items, path, stamp=""):
    """Fig. 9: post-processed examples: image, truth, prediction, difference overlay.
    ``items`` = [(id, image, true, pred, score), ...]."""
    n = len(items)
    fig, axes = _subplots(n, 4, figsize=(10, 2.6 * n), squeeze=False)
    for r, (sid, img, true, pred, score) in enumerate(items):
        show_image(axes[r, 0], img, f"{_short(sid)}")
        show_labels(axes[r, 1], true, f"truth: {int(len(np.unique(true)) - 1)}")
        show_labels(axes[r, 2], pred, f"prediction: {int(len(np.unique(pred)) - 1)}")
        axes[r, 3].imshow(difference_rgb(true, pred), interpolation="nearest")
        axes[r, 3].set_title(f"difference (DSB {score:.3f})", fontsize=8)
        axes[r, 3].axis("off")
    fig.suptitle("Post-processed predictions: blue = extra, red = missing", fontsize=10)
    fig.tight_layout()
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
    """A user's image with the outlines of the segmented nuclei."""
    from skimage.segmentation import find_boundaries
    fig, axes = _subplots(1, 2, figsize=(9, 4.6))
    show_image(axes[0], image, title or "image")
    img = np.asarray(image, np.float32)
    lo, hi = np.percentile(img, [0.5, 99.8])
    base = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    edge = find_boundaries(labels, mode="outer")
    base[edge] = (1.0, 0.9, 0.0)
    axes[1].imshow(base, interpolation="nearest")
    axes[1].set_title(f"{int(labels.max())} nuclei", fontsize=8)
    axes[1].axis("off")
    fig.tight_layout()
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
    channels (one row each). ``notes`` (one per patch) go in the titles."""
    n = len(x)
    rows = 1 + len(targets)
    fig, axes = _subplots(rows, n, figsize=(1.9 * n, 2.0 * rows), squeeze=False)
    for j in range(n):
        show_image(axes[0, j], np.clip(x[j], 0, 1), notes[j] if notes else "")
        for t, name in enumerate(targets):
            axes[1 + t, j].imshow(y[j][..., t], cmap="gray", vmin=0, vmax=1,
                                  interpolation="nearest")
            axes[1 + t, j].set_title(f"target: {name}" if j == 0 else "", fontsize=8)
            axes[1 + t, j].axis("off")
    fig.suptitle(f"One training batch ({n} patches of {x.shape[1]} px) and its targets",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, path, stamp)


def learning_rate(schedule, path, stamp=""):
    """The learning rate at every training step (``schedule``: columns step, epoch, lr),
    with the epoch boundaries."""
    fig, ax = _subplots(figsize=(6.5, 2.8))
    ax.plot(schedule["step"], schedule["lr"], lw=1.5)
    ends = schedule.groupby("epoch")["step"].max()
    for s in ends.to_numpy()[:-1]:
        ax.axvline(s + 0.5, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel(f"training step ({len(ends)} epochs, grey lines between them)")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_title("Learning-rate schedule", fontsize=9)
    fig.tight_layout()
    return save(fig, path, stamp)


# --------------------------------------------------------------------------- notebook 04
def tta_disagreement(image, mean_prob, std, path, stamp="", title=""):
    """Where the 8 TTA variants disagree: the image, their average nucleus probability and
    the standard deviation across them (pixel by pixel)."""
    fig, axes = _subplots(1, 3, figsize=(11, 3.8))
    show_image(axes[0], image, title or "image")
    axes[1].imshow(mean_prob, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("average of the 8 variants", fontsize=8)
    axes[1].axis("off")
    im = axes[2].imshow(std, cmap="viridis", vmin=0, interpolation="nearest")
    axes[2].set_title(f"std across the 8 variants (mean {float(np.mean(std)):.4f})",
                      fontsize=8)
    axes[2].axis("off")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
    fig.tight_layout()
    return save(fig, path, stamp)


# --------------------------------------------------------------------------- notebook 05
def visible_marks(binary, radius: int = 2):
    """Single-pixel marks grown to a visible disc (for markers at a figure's size)."""
    from scipy import ndimage as ndi
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


def seeded_vs_paper(image, truth, seeded, paper, path, stamp="", window=None, title=""):
    """Top row: the model's seeded watershed step by step (``seeded`` =
    :func:`nucseg_utils.postprocessing.touching_steps` or
    :func:`nucseg_utils.postprocessing.distance_steps`); bottom row: the paper's Otsu +
    distance-transform watershed on the same map (``paper`` =
    :func:`nucseg_utils.postprocessing.paper_steps`). ``window`` = (rows, cols) slices to
    zoom into, so seeds and markers are visible at the figure's size."""
    win = window or (slice(None), slice(None))

    def w(a):
        return np.asarray(a)[win]

    by_distance = "distance" in seeded
    fig, axes = _subplots(2, 5, figsize=(13, 5.8))
    show_image(axes[0, 0], w(image), "image")
    second = (("distance", "2. distance to the edge (predicted)") if by_distance
              else ("touching", "2. touching-zone probability"))
    for ax, key, name in ((axes[0, 1], "nucleus", "1. nucleus probability"),
                          (axes[0, 2], *second)):
        ax.imshow(w(seeded[key]), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    n_seeds = len(np.unique(w(seeded["seeds"]))) - 1
    _labels_over(axes[0, 3], w(seeded["foreground"]), w(seeded["seeds"]),
                 f"3. seeds: {'distance > s' if by_distance else 'nucleus - touching > t'} "
                 f"({n_seeds})")
    show_labels(axes[0, 4], w(seeded["labels"]),
                f"4. watershed from the seeds ({len(np.unique(w(seeded['labels']))) - 1})")
    show_labels(axes[1, 0], w(truth), f"ground truth ({len(np.unique(w(truth))) - 1})")
    axes[1, 1].imshow(w(paper["foreground"]), cmap="gray", interpolation="nearest")
    axes[1, 1].set_title("paper 1. Otsu threshold + holes filled", fontsize=8)
    axes[1, 2].imshow(w(paper["distance"]), cmap="viridis", interpolation="nearest")
    axes[1, 2].set_title("paper 2. distance to the background", fontsize=8)
    for ax in axes[1, 1:3]:
        ax.axis("off")
    marks = w(paper["markers"])
    grown = np.where(visible_marks(marks > 0), _grow(marks), 0)
    _labels_over(axes[1, 3], w(paper["foreground"]), grown,
                 f"paper 3. markers: distance maxima ({len(np.unique(marks)) - 1})")
    show_labels(axes[1, 4], w(paper["labels"]),
                f"paper 4. watershed ({len(np.unique(w(paper['labels']))) - 1})")
    fig.suptitle(title or f"Post-processing step by step: "
                          f"{'distance' if by_distance else 'touching'} method (top), the "
                          f"paper's (bottom)", fontsize=10)
    fig.tight_layout()
    return save(fig, path, stamp)


def _grow(markers, radius: int = 2):
    """Each marker label spread over its neighbourhood (for display only)."""
    from scipy import ndimage as ndi
    return ndi.grey_dilation(np.asarray(markers), size=2 * radius + 1)


# --------------------------------------------------------------------------- notebook 06
def iou_threshold_curve(per_threshold, path, stamp=""):
    """The data set over IoU thresholds 0.50 ... 0.95: precision, recall, F1 and the DSB
    term (mean over images of TP/(TP+FP+FN)) on the left, TP/FP/FN counts on the right."""
    t = per_threshold
    fig, axes = _subplots(1, 2, figsize=(10, 3.4))
    for key, style in (("precision", "o-"), ("recall", "s-"), ("f1", "^-"),
                       ("dsb_term", "D-")):
        axes[0].plot(t["threshold"], t[key], style, ms=4, label=key.replace("_", " "))
    axes[0].set_xlabel("IoU threshold (a match needs IoU > t)")
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
    (:func:`nucseg_utils.metrics.object_errors`): predicted objects by their class, true
    objects missed (or merged/split, where nothing predicted covers them) in theirs; the
    outlines of the true nuclei in white."""
    from skimage.segmentation import find_boundaries
    img = np.asarray(image, np.float32)
    grey = img.mean(axis=-1) if img.ndim == 3 else img
    lo, hi = np.percentile(grey, [0.5, 99.8])
    grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1) * 0.45
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    true, pred = np.asarray(true), np.asarray(pred)

    def paint(labels, classes, where):
        lut = np.zeros((int(labels.max()) + 1, 3), np.float32)
        has = np.zeros(int(labels.max()) + 1, bool)
        for lab, c in classes.items():
            lut[lab], has[lab] = ERROR_COLOURS[c], True
        sel = where & has[labels]
        rgb[sel] = 0.3 * rgb[sel] + 0.7 * lut[labels[sel]]

    if true.max() > 0:
        paint(true, {k: v for k, v in errors["true"].items() if v != "matched"},
              (true > 0) & (pred == 0))
    if pred.max() > 0:
        paint(pred, errors["pred"], pred > 0)
    rgb[find_boundaries(true, mode="inner")] = 1.0
    return rgb


def object_errors(items, path, stamp=""):
    """Object-level errors of a few images: ``items`` = [(id, image, true, pred, errors,
    dsb), ...] with ``errors`` from :func:`nucseg_utils.metrics.object_errors`. Colours:
    matched green, missed red, false blue, merged magenta, split orange; true outlines white."""
    from matplotlib.patches import Patch
    n = len(items)
    fig, axes = _subplots(n, 2, figsize=(8, 3.2 * n), squeeze=False)
    for r, (sid, img, true, pred, errors, dsb) in enumerate(items):
        show_image(axes[r, 0], img, f"{_short(sid)} (DSB {dsb:.3f})")
        axes[r, 1].imshow(error_rgb(img, true, pred, errors), interpolation="nearest")
        axes[r, 1].axis("off")
        c = errors["counts"]
        axes[r, 1].set_title(f"{c['true_matched']} matched of {len(errors['true'])} true, "
                             f"{len(errors['pred'])} predicted", fontsize=8)
        handles = [
            Patch(color=ERROR_COLOURS["matched"], label=f"matched ({c['true_matched']})"),
            Patch(color=ERROR_COLOURS["missed"], label=f"missed ({c['true_missed']} true)"),
            Patch(color=ERROR_COLOURS["false"], label=f"false ({c['pred_false']} predicted)"),
            Patch(color=ERROR_COLOURS["merged"],
                  label=f"merged ({c['true_merged']} true in {c['pred_merged']})"),
            Patch(color=ERROR_COLOURS["split"],
                  label=f"split ({c['true_split']} true into {c['pred_split']})")]
        axes[r, 1].legend(handles=handles, fontsize=7, loc="upper left",
                          bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle("Object-level errors at IoU > 0.5 (white: true outlines)", fontsize=10)
    fig.tight_layout()
    return save(fig, path, stamp)
