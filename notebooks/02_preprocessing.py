# %% [markdown]
# # 2. Preprocessing and augmentation
#
# **The paper** resized every image to 256x256x3, scaled it to [0, 1] and resized the masks to
# 256x256x1; it augmented with rotations up to 90°, width/height shifts, shear, zoom and
# horizontal/vertical flips (Keras' `ImageDataGenerator`).
#
# **Here** (`cpu` profile) the network sees random crops *at native scale*: resizing a 1388-px
# image to 256 px shrinks its nuclei five-fold while a 256-px image keeps them, and the
# paper's code resized soft masks and kept every pixel > 0, which dilated every nucleus.
# Intensities are normalised per image (1st-99.8th percentile) and bright backgrounds are
# inverted, so nuclei are always bright. One affine map per patch does the crop, rotation,
# shear, zoom and flips for the image (bilinear) and the labels (nearest neighbour) together,
# so masks stay binary; the targets are computed after the transform.

# %% [markdown]
# <a href="https://colab.research.google.com/github/nucseg/nucseg/blob/main/notebooks/02_preprocessing.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>

# %%
# Colab only: fetch this repository, install what Colab lacks (its TensorFlow stays) and find
# the data (Drive folder or Kaggle API). Elsewhere this cell does nothing.
import os
import sys

if "google.colab" in sys.modules:
    if not os.path.isdir("/content/nucseg"):
        os.system("git clone -q https://github.com/nucseg/nucseg /content/nucseg")
    sys.path.insert(0, "/content/nucseg")
    from nucseg_utils.report import colab_setup
    colab_setup()

# %% tags=["parameters"]
profile = "cpu"           # smoke (seconds) | cpu (the committed model) | paper (Colab T4)
data_root = None          # None: $NUCSEG_DATA, ./data, ../shared/data/dsb2018; else synthetic
synthetic = False         # True: the built-in synthetic set even if DSB2018 is present
run_dir = "../runs/notebooks"  # the run folder: every notebook reads and writes here
figures_dir = None        # None: <run_dir>/figures (`nucseg report` copies them to figures/)
seed = 42
retrain = False           # True: train even where a committed model exists

# %%
import numpy as np

from nucseg_utils import augmentation, figures, preprocessing, report, runs

ctx = report.Context(profile, data_root, run_dir, figures_dir, seed, synthetic)
train = ctx.split("stage1_train")
prof = ctx.profile
samples = [train.sample(i) for i in train.ids[:12]]

# %% [markdown]
# How much the paper's mask resizing dilates the nuclei: the nucleus area after resizing the
# binary mask to 256x256 with interpolation and keeping every pixel > 0, against a
# nearest-neighbour resize of the labels (what this repository does).

# %%
import pandas as pd

rows = []
for s in samples:
    soft = preprocessing.paper_soft_resize(s.labels > 0, (256, 256))
    near = preprocessing.resize_labels(s.labels, (256, 256)) > 0
    rows.append({"id": s.id[:8], "size": f"{s.image.shape[0]}x{s.image.shape[1]}",
                 "area_nearest": int(near.sum()), "area_paper": int(soft.sum()),
                 "dilation_%": 100.0 * (soft.sum() / max(near.sum(), 1) - 1)})
dilation = pd.DataFrame(rows)
runs.write_table(dilation, ctx.run / "paper_resize_dilation.csv")
dilation

# %% [markdown]
# Augmented patches of the run's profile, with their target channels: the nucleus mask and,
# for two-channel profiles, the zone where two nuclei touch (used to split them later).

# %%
images = [preprocessing.normalize(s.image, prof["normalization"]) for s in samples]
labels = [s.labels.astype(np.int32) for s in samples]
patches = augmentation.example_patches(images, labels, prof, n=8, seed=seed)
figures.augmentation(patches, ctx.figure("augmentation"), ctx.stamp, prof["targets"])

# %% [markdown]
# **What to notice.** The dilation table shows why the paper's masks were too large: on small
# nuclei a soft resize plus `> 0` adds a ring of pixels to every object, which costs IoU at
# the high thresholds of the DSB score. The patches keep their masks crisp after rotation and
# shear, and the colour jitter makes fluorescence, brightfield and tissue look alike to the
# network.
