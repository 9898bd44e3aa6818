# %% [markdown]
# # The paper's full configuration on a Colab T4
#
# <a href="https://colab.research.google.com/github/nucseg/nucseg/blob/main/colab/run_paper_profile.ipynb" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>
#
# *Runtime -> Change runtime type -> T4 GPU*, then *Runtime -> Run all*. This notebook:
#
# 1. mounts your Google Drive and installs this repository (Colab's TensorFlow and tf-keras
#    stay as they are);
# 2. finds DSB2018 in `MyDrive/dsb2018` (the Kaggle zips, as downloaded), or downloads it with
#    the Kaggle API (upload your `kaggle.json` when asked);
# 3. runs every numbered notebook headless with papermill in the `paper` profile (ResNet-152
#    U-Net, ImageNet encoder, 256x256, batch 32, 100 epochs), with the run folder on Drive:
#    model, history, executed notebooks and figures survive a dropped session, and running this
#    notebook again resumes the training from its last epoch.
#
# Outside Colab it does nothing Colab-specific: it runs the same chain in the `smoke` profile
# on the synthetic set (the test suite does exactly that).

# %% tags=["parameters"]
profile = "paper"     # outside Colab the smoke profile runs instead
run_dir = None        # None: MyDrive/nucseg/runs/<profile> on Colab, runs/colab-<profile> elsewhere
drive_data = "/content/drive/MyDrive/dsb2018"

# %%
import os
import subprocess
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    from google.colab import drive
    drive.mount("/content/drive")
    if not os.path.isdir("/content/nucseg"):
        subprocess.run(["git", "clone", "-q", "https://github.com/nucseg/nucseg",
                        "/content/nucseg"], check=True)
    sys.path.insert(0, "/content/nucseg")
    from nucseg_utils.report import colab_setup
    colab_setup()
    run_dir = run_dir or f"/content/drive/MyDrive/nucseg/runs/{profile}"
else:
    profile = "smoke"
    run_dir = run_dir or os.path.join("..", "runs", f"colab-{profile}")

# %%
from nucseg_utils import report

data_root = report.colab_data_root(drive_data) if IN_COLAB else None  # Drive first
code = report.run_all(profile=profile, run_dir=run_dir, data_root=data_root,
                      synthetic=not IN_COLAB, figures_dir=os.path.join(run_dir, "published"))
assert code == 0, "a notebook failed: see the message above and the executed notebooks"

# %% [markdown]
# The figures and tables are in `published/` of the run folder, the executed notebooks in
# `notebooks/`, the model in `model.npz` and its history in `history.csv`.
