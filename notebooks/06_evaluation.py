# %% [markdown]
# # 6. Evaluation: the DSB score
#
# Kaggle's metric, per image: the IoU of every true and predicted nucleus; at each threshold
# t = 0.50, 0.55 ... 0.95 a pair matches when IoU > t (strictly); score(t) = TP / (TP + FP +
# FN); the image scores the mean over t, the data set the mean over images. Also object
# precision, recall and F1 at IoU > 0.5 and pixel accuracy.
#
# Every number below comes from this run's model, on `stage1_test` **at native resolution**
# (as Kaggle scored). The paper scored masks resized to 256x256; that column is here too,
# labelled, and so are the paper's 0.5187 and the Kaggle winner's 0.6313, which were measured
# on the harder stage-2 set.

# %% [markdown]
# <a href="https://colab.research.google.com/github/nucseg/nucseg/blob/main/notebooks/06_evaluation.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>

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
from nucseg_utils import evaluation, figures, metrics, model, report, runs

ctx = report.Context(profile, data_root, run_dir, figures_dir, seed, synthetic)
config = model.read_config(ctx.run / "model.npz")
test = ctx.split("stage1_test")
labels_dir = ctx.run / "labels"

# %% [markdown]
# The ablation: TTA on or off, each post-processing method, native resolution or 256x256.

# %%
sets = {f"TTA, {m}": evaluation.load_label_dir(labels_dir / m) for m in sorted(
    p.name for p in labels_dir.iterdir())}
probs_plain = evaluation.load_prob_dir(ctx.run / "predictions" / "no_tta" / "probs")
sets[f"no TTA, {config['postprocess']}"] = evaluation.postprocess_all(probs_plain, config)
ablation = evaluation.ablation(sets, test)
runs.write_table(ablation, ctx.run / "ablation.csv")
ablation

# %% [markdown]
# Table II: the profile's own method (TTA + its post-processing) beside the published numbers.

# %%
main = sets[f"TTA, {config['postprocess']}"]
summary = evaluation.summarize(main, test, True, config["postprocess"], "stage1_test", ctx.dataset)
per_image = summary.pop("per_image")
table2 = evaluation.results_table(summary, "stage1_test", ctx.dataset, ctx.profile_name)
runs.write_table(table2, ctx.table("results"))
runs.write_table(per_image, ctx.run / "per_image.csv")
evaluation.write_submission(main, ctx.run / "submission.csv")
runs.write_json(ctx.run / "summary.json", summary)
table2

# %% [markdown]
# Fig. 10 of the paper: TP, FP and FN at each threshold for one image (the median one).

# %%
sid = evaluation.examples_by_score(per_image, 3)[1]
fig10 = metrics.threshold_table(test.labels(sid), main[sid])
runs.write_table(fig10, ctx.table("thresholds"))
print(sid)
fig10

# %% [markdown]
# Fig. 4: test images with their predicted nuclei; and the score of every image by modality.

# %%
ids = evaluation.examples_by_score(per_image, 6)
figures.predictions([(i, test.image(i), main[i], f"DSB {per_image.set_index('id').loc[i, 'dsb']:.2f}")
                     for i in ids], ctx.figure("predictions"), ctx.stamp)
figures.per_image_scores(per_image, ctx.figure("per_image"), ctx.stamp)

# %% [markdown]
# **What to notice.** The score at 256x256 is not the score Kaggle would give: resizing both
# label images changes small nuclei most. Per modality, the rare kinds of image (stained
# tissue, brightfield) score lowest: that, not the network's depth, is where the points are.
# The submission file in the run folder scores the same with `nucseg score`.
