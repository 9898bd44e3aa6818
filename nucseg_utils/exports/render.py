"""Small renderers shared by the model package's cover image and the report's figures.

In: a matplotlib axis and an image (any range: shown between its 0.5th and 99.8th
percentiles) or a label image (0 background, one random bright colour per label).
Out: the axis drawn on, titled, without ticks.
"""
import numpy as np


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
