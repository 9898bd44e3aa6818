# %% [markdown]
# # 1. The data: DSB2018 at a glance
#
# The 2018 Data Science Bowl asked for one label per nucleus in microscopy images of very
# different kinds: fluorescence (bright nuclei on black), brightfield (dark nuclei on grey)
# and stained tissue (purple nuclei on pink and white). `stage1_train` has 670 images with one
# mask file per nucleus; `stage1_test` has 65 images whose ground truth Kaggle released after
# stage 1 (`stage1_solution.csv`). This repository trains on `stage1_train` only and keeps
# `stage1_test` as an honest test set: nothing is tuned on it. (The paper trained on both,
# 70:30, and tested on stage 2.)
#
# This notebook reads the data in place (zips stay zipped), indexes every image (size,
# modality, number and size of nuclei) and shows examples.

# %% [markdown]
# <a href="https://colab.research.google.com/github/nucseg/nucseg/blob/main/notebooks/01_eda.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>

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
import pandas as pd

from nucseg_utils import data, figures, report, runs

ctx = report.Context(profile, data_root, run_dir, figures_dir, seed, synthetic)
train, test = ctx.split("stage1_train"), ctx.split("stage1_test")
train, test

# %% [markdown]
# The index: one row per image, cached in the run folder. The modality is guessed from the
# pixels alone (`data.modality_of`): colour means stained, a bright background brightfield.

# %%
index = pd.concat([data.index_split(s, cache_dir=ctx.run / "cache") for s in (train, test)],
                  ignore_index=True)
summary = data.summarize_index(index)
runs.write_table(summary, ctx.table("eda"))
summary

# %%
figures.eda(index, ctx.figure("eda"), ctx.stamp)

# %% [markdown]
# Fig. 3 of the paper: training images and their nuclei, one of each modality first.
# Touching nuclei get different colours: the task is *instance* segmentation.

# %%
ids = data.pick_examples(index[index["split"] == "stage1_train"], n=6, seed=seed)
items = [(i, s.image, s.labels, data.modality_of(s.image)) for i in ids for s in [train.sample(i)]]
figures.samples(items, ctx.figure("samples"), ctx.stamp)

# %% [markdown]
# **What to notice.** Most training images are small fluorescence images with a few dozen
# nuclei, while the test set has relatively more brightfield and stained-tissue images, and
# nucleus sizes span two orders of magnitude. A model that only sees resized fluorescence
# images will struggle on the rest: notebook 2 normalises the intensities and augments colour
# and scale for that reason.
