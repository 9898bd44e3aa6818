# %% [markdown]
# # 3. Training the U-Net
#
# A U-Net: an encoder (here a ResNet from `segmentation_models`) that sees more and more
# context at lower and lower resolution, and a decoder that brings the detail back through
# skip connections. **The paper** used a ResNet-152 encoder pretrained on ImageNet, the
# Jaccard (IoU) loss, Adam, batch 32 and 100 epochs, keeping the best checkpoint.
#
# The `paper` profile does exactly that (on a Colab T4: see `colab/`). The `cpu` profile is
# what trains in about an hour on 2 CPU cores: a ResNet-18 encoder from scratch (no weights can
# be downloaded there), 128-px crops, BCE + Jaccard loss and a cosine learning-rate decay. With
# real data and `retrain = False`, this notebook loads the committed `cpu` model and its
# history instead of retraining; set `retrain = True` (or `nucseg train --profile cpu`) to
# reproduce it.

# %% [markdown]
# <a href="https://colab.research.google.com/github/nucseg/nucseg/blob/main/notebooks/03_training.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>

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
from nucseg_utils import figures, profiles, report, runs, training

ctx = report.Context(profile, data_root, run_dir, figures_dir, seed, synthetic)
table1 = profiles.describe(ctx.profile)
runs.write_table(table1, ctx.table("hyperparameters"))
table1

# %%
model_path, history, how = training.obtain_model(ctx.profile, ctx.run, ctx.root,
                                                 committed=ctx.committed_model, retrain=retrain)
print(f"model: {how} -> {model_path}")
history.tail()

# %% [markdown]
# Fig. 5-6 and 7-8 of the paper: loss and IoU per epoch for training and validation, and the
# metrics at the best epoch (the checkpoint that is kept). All numbers come from this one run.

# %%
figures.training_curves(history, ctx.figure("curves"), ctx.stamp)
figures.training_metrics(history, ctx.figure("metrics"), ctx.stamp)

# %% [markdown]
# **What to notice.** Training IoU is measured on augmented crops and validation IoU on fixed
# un-augmented crops of held-out training images, so the two curves are not the same task;
# the validation curve decides which epoch is kept. The gap between the pixel IoU here and
# the object-level DSB score of notebook 6 is the work left to post-processing.
