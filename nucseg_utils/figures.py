"""Figures: every figure of the report is written by one function here, to a stable name.

In: arrays, label images and tables from the other modules; a ``stamp`` saying which profile,
data and run made the figure (printed at its foot, so a figure always says where it came from;
a figure made from the synthetic set says SYNTHETIC in red).
Out: PNG files written atomically, without a timestamp in their metadata, so re-running a
notebook on the same inputs shows a clean diff.

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
    "predictions": "fig4_test_predictions.png",      # Fig. 4
    "curves": "fig5_6_training_curves.png",          # Fig. 5-6
    "metrics": "fig7_8_training_metrics.png",        # Fig. 7-8
    "tta": "tta_variants.png",
    "watershed": "postprocessing_steps.png",
    "difference": "fig9_difference_overlay.png",     # Fig. 9
    "per_image": "dsb_per_image.png",
}
TABLES = {
    "thresholds": "fig10_threshold_table.csv",       # Fig. 10
    "hyperparameters": "table1_hyperparameters.csv",  # Table I
    "results": "table2_results.csv",                 # Table II
    "eda": "eda_summary.csv",
}


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def stamp_text(profile: str, dataset: str, run: str = "", extra: str = "") -> str:
    parts = [f"profile: {profile}", f"data: {dataset}"]
    if run:
        parts.append(f"run: {run}")
    if extra:
        parts.append(extra)
    return " · ".join(parts)


def save(fig, path, stamp: str = "") -> Path:
    """Write a figure atomically with its stamp at the foot; close it."""
    plt = _plt()
    if stamp:
        synthetic = "synthetic" in stamp.lower()
        text = ("SYNTHETIC DATA - not DSB2018 · " if synthetic else "") + stamp
        fig.text(0.01, 0.005, text, fontsize=7, color="red" if synthetic else "0.35",
                 ha="left", va="bottom")
    path = Path(path)
    with runs.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


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
    plt = _plt()
    n = len(items)
    cols = 2 * min(n, 3)
    rows = int(np.ceil(n / 3))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
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
    plt = _plt()
    import seaborn as sns
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.3))
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
    plt = _plt()
    n = len(patches)
    rows = 1 + len(targets)
    fig, axes = plt.subplots(rows, n, figsize=(1.8 * n, 1.9 * rows), squeeze=False)
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


def training_curves(history, path, stamp=""):
    """Fig. 5-6: training and validation loss and IoU per epoch; the best epoch marked."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
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
    plt = _plt()
    row = history.loc[history["val_loss"].idxmin()]
    keys = [k for k in ("loss", "iou", "f1") if k in history]
    fig, ax = plt.subplots(figsize=(6, 3.2))
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
    plt = _plt()
    fig, axes = plt.subplots(2, 5, figsize=(12, 5))
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
    plt = _plt()
    n = 3 + len(steps)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8))
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
    plt = _plt()
    n = len(items)
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n), squeeze=False)
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
    """DSB score per image, by modality."""
    plt = _plt()
    import seaborn as sns
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    sns.stripplot(data=table, x="modality", y="dsb", ax=ax, size=4, jitter=0.25)
    means = table.groupby("modality")["dsb"].mean()
    for i, m in enumerate(ax.get_xticklabels()):
        v = means.get(m.get_text())
        if v is not None:
            ax.hlines(v, i - 0.3, i + 0.3, color="k", lw=2)
            ax.text(i + 0.32, v, f"{v:.3f}", va="center", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"DSB score per image (mean {table['dsb'].mean():.4f}, "
                 f"{len(table)} images)", fontsize=9)
    fig.tight_layout()
    return save(fig, path, stamp)


def overlay(image, labels, path, stamp="", title=""):
    """A user's image with the outlines of the segmented nuclei."""
    plt = _plt()
    from skimage.segmentation import find_boundaries
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
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
