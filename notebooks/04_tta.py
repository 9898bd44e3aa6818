# %% [markdown]
# # 4. Test-time augmentation
#
# A network is not exactly invariant to rotations and flips. Test-time augmentation (TTA)
# predicts the image in the 8 orientations of the square (rotations by 0, 90, 180, 270 degrees,
# with and without a flip), maps each prediction back, and averages them. The paper lists
# this step; its code had it commented out. Here each test image is predicted at its native
# size (padded to a multiple of 32), with and without TTA, and the probability maps are saved
# in the run folder for the next notebooks.

# %% [markdown]
# <a href="https://colab.research.google.com/github/nucseg/nucseg/blob/main/notebooks/04_tta.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>

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
from nucseg_utils import evaluation, figures, model, preprocessing, report, tta

ctx = report.Context(profile, data_root, run_dir, figures_dir, seed, synthetic)
net, config = model.load_model(ctx.run / "model.npz")
test = ctx.split("stage1_test")
config

# %% [markdown]
# The 8 variants of one test image, each mapped back to the original orientation.

# %%
sid = test.ids[0]
image = preprocessing.normalize(test.image(sid), config["normalization"])
variants = tta.variant_predictions(net, image, config)
mean = sum(p for _, p in variants) / len(variants)
figures.tta_variants(test.image(sid), variants, mean, ctx.figure("tta"), ctx.stamp)

# %% [markdown]
# Predict the whole test split both ways; notebook 6 scores both.

# %%
probs_tta = evaluation.predict_split(net, config, test, ctx.run / "predictions" / "tta", tta=True)
probs_plain = evaluation.predict_split(net, config, test, ctx.run / "predictions" / "no_tta", tta=False)
len(probs_tta), len(probs_plain)

# %% [markdown]
# **What to notice.** The variants disagree most at nucleus borders and on faint nuclei; the
# average is smoother there. TTA costs 8 forward passes per image; notebook 6 shows what it
# buys in DSB score.
