# %% [markdown]
# # 7. Segment your own images
#
# Point `images` at a folder of PNG or TIFF files (grey, RGB, RGBA, 8 or 16 bit), a DSB split
# folder or zip. Each image is predicted at its own size (large ones in tiles) with the
# committed `cpu` model (or the run's model), post-processed, and written as a 16-bit label
# PNG with an outline overlay; `submission.csv` holds the same nuclei in Kaggle's format. The
# command line does the same: `nucseg predict --images PATH --out DIR`.

# %% [markdown]
# <a href="https://colab.research.google.com/github/nucseg/nucseg/blob/main/notebooks/07_segment_your_images.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>

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
images = None      # a folder / file / zip of images; None: a few test images of the data
model_file = None  # None: the run's model (notebook 3), else the committed cpu model
max_images = 3
out = None         # None: <run_dir>/segmented

# %%
from pathlib import Path

from nucseg_utils import data, evaluation, figures, model, report

ctx = report.Context(profile, data_root, run_dir, figures_dir, seed, synthetic)
model_file = model_file or (ctx.run / "model.npz" if (ctx.run / "model.npz").exists()
                            else report.COMMITTED_MODELS["cpu"] / "model.npz")
source = data.open_images(images) if images else ctx.split("stage1_test")
out = Path(out or ctx.run / "segmented")
net, config = model.load_model(model_file)
ids = source.ids[:max_images]

# %%
probs = evaluation.predict_split(net, config, source, out, ids=ids, keep_probs=False)
labels = evaluation.postprocess_all(probs, config)
evaluation.save_label_dir(labels, out / "labels")
evaluation.write_submission(labels, out / "submission.csv")
{i[:8]: int(l.max()) for i, l in labels.items()}

# %%
for i in ids:
    figures.overlay(source.image(i), labels[i], out / f"{i}_overlay.png", ctx.stamp, i[:8])
figures.overlay(source.image(ids[0]), labels[ids[0]], ctx.figures / "segment_overlay.png",
                ctx.stamp, ids[0][:8])

# %% [markdown]
# **What to notice.** The model was trained on DSB2018 images; on very different images
# (another magnification, another stain) check a few overlays before trusting counts.
