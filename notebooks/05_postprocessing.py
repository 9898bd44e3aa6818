# %% [markdown]
# # 5. From probabilities to nuclei: post-processing
#
# The network gives a probability per pixel; the DSB score wants one label per nucleus, and
# touching nuclei must be split. **The paper**: Otsu threshold, hole filling, the distance
# transform of the foreground, markers at its maxima spaced by the mean nucleus size, a
# marker-controlled watershed and labelling (`postprocess(prob, "paper")`). Two-channel models
# (the `cpu` profile) also predict the zone where nuclei touch; removing it from the mask
# leaves one seed per nucleus (`"touching"`). Plain connected components (`"cc"`) are the
# baseline. All three return an empty label image for an image without nuclei (the paper's
# code crashed there).

# %% [markdown]
# <a href="https://colab.research.google.com/github/nucseg/nucseg/blob/main/notebooks/05_postprocessing.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>

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

from nucseg_utils import evaluation, figures, metrics, model, postprocessing, report

ctx = report.Context(profile, data_root, run_dir, figures_dir, seed, synthetic)
config = model.read_config(ctx.run / "model.npz")
test = ctx.split("stage1_test")
probs = evaluation.load_prob_dir(ctx.run / "predictions" / "tta" / "probs")

# %% [markdown]
# The paper's steps on one image.

# %%
sid = sorted(probs)[0]
steps = postprocessing.paper_steps(probs[sid][..., 0], config["min_distance_factor"], config["min_size"])
figures.postprocessing_steps(test.image(sid), probs[sid][..., 0],
                             [("foreground (Otsu + holes)", steps["foreground"]),
                              ("distance transform", steps["distance"]),
                              ("markers", steps["markers"] > 0)],
                             steps["labels"], ctx.figure("watershed"), ctx.stamp)

# %% [markdown]
# Every method on every test image; the labels go to the run folder. An empty and a constant
# map give no nuclei rather than an error:

# %%
methods = [m for m in postprocessing.METHODS if m != "touching" or len(config["targets"]) > 1]
for name in methods:
    evaluation.save_label_dir(evaluation.postprocess_all(probs, config, name),
                              ctx.run / "labels" / name)
[int(postprocessing.postprocess(np.full((64, 64, 2), v, np.float32), m).max())
 for v in (0.0, 0.7) for m in methods]

# %% [markdown]
# Fig. 9 of the paper: the best, the median and the worst test image of the profile's method,
# with the difference to the ground truth: **blue = extra** (predicted, not true), **red =
# missing** (true, not predicted).

# %%
chosen = evaluation.load_label_dir(ctx.run / "labels" / config["postprocess"])
_, table = evaluation.score_labels(chosen, test)
items = [(i, test.image(i), test.labels(i), chosen[i],
          float(table.loc[table["id"] == i, "dsb"].iloc[0]))
         for i in evaluation.examples_by_score(table, 3)]
figures.difference(items, ctx.figure("difference"), ctx.stamp)

# %% [markdown]
# **What to notice.** Red rims mean the mask is too small, blue rims too large; a red or blue
# whole nucleus is a missed or invented one. Over-split nuclei (one true nucleus, two labels)
# cost as much as merged ones: the marker spacing is the main knob of the paper's watershed.
