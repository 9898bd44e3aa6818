"""The report: the shared context of the notebooks, and the runner that executes them all.

In (notebooks): the parameters cell's values (profile, data root, run folder, figures folder,
seed). :class:`Context` resolves them once: where the data is (falling back to the built-in
synthetic set, and saying so), the profile, the run folder, where each figure goes and the
stamp printed on it.

In (``nucseg report`` / ``make report``): a profile. :func:`run_all` executes the numbered
notebooks in order with papermill into ``runs/report-<profile>/``, keeps the executed copies
there, stops at the first failing notebook (naming it and the failing cell's error), and only
when every notebook succeeded copies the new figures and tables into ``figures/`` (the ``cpu``
profile on real data), ``figures/<profile>/`` (another profile) or ``figures/synthetic/``
(synthetic set), each file atomically.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import data as data_mod
from . import figures as fig_mod
from . import profiles, runs, synthetic

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = [
    "01_eda.ipynb",
    "02_preprocessing.ipynb",
    "03_training.ipynb",
    "04_tta.ipynb",
    "05_postprocessing.ipynb",
    "06_evaluation.ipynb",
    "07_segment_your_images.ipynb",
]
COMMITTED_MODELS = {"cpu": REPO / "models" / "cpu"}
OVERRIDES = ("NUCSEG_PROFILE", "NUCSEG_SYNTHETIC", "NUCSEG_RUN_DIR")


@dataclass
class Context:
    """What every notebook needs to know, resolved from its parameters cell."""
    profile_name: str = "smoke"
    data_root: str | None = None
    run_dir: str = "runs/notebooks"
    figures_dir: str | None = None
    seed: int = 42
    synthetic: bool = False
    root: Path = field(init=False)
    dataset: str = field(init=False)
    profile: dict = field(init=False)

    def __post_init__(self):
        # The test suite runs the notebooks with nbval, which cannot pass parameters: these
        # variables, when set, override the parameters cell (documented in the README).
        self.profile_name = os.environ.get("NUCSEG_PROFILE", self.profile_name)
        self.synthetic = self.synthetic or os.environ.get("NUCSEG_SYNTHETIC") == "1"
        self.run_dir = os.environ.get("NUCSEG_RUN_DIR", self.run_dir)
        self.profile = profiles.get_profile(self.profile_name, seed=self.seed)
        root = None
        if not self.synthetic:
            try:
                root = data_mod.find_data_root(self.data_root, "stage1_train")
            except data_mod.DataError:
                if self.data_root:
                    raise
        if root is None:
            root = synthetic.ensure_synthetic()
            print(f"No DSB2018 data found (or synthetic asked for): using the built-in "
                  f"SYNTHETIC set at {root}. Figures and numbers say so.")
        self.root = Path(root)
        self.dataset = data_mod.dataset_name(self.root)
        if self.dataset != "DSB2018" and self.profile_name != "smoke":
            print(f"The {self.profile_name} profile is meant for DSB2018; on the synthetic set "
                  f"the smoke profile runs instead.")
            self.profile_name = "smoke"
            self.profile = profiles.get_profile("smoke", seed=self.seed)
        self.run = Path(self.run_dir)
        self.run.mkdir(parents=True, exist_ok=True)
        self.figures = Path(self.figures_dir) if self.figures_dir else self.run / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        runs.update_run_json(self.run, profile=self.profile, seed=self.seed,
                             dataset=self.dataset, data=str(self.root.resolve()))

    @property
    def stamp(self) -> str:
        return fig_mod.stamp_text(self.profile_name, self.dataset, self.run.name)

    def figure(self, key: str) -> Path:
        return self.figures / fig_mod.NAMES[key]

    def table(self, key: str) -> Path:
        return self.figures / fig_mod.TABLES[key]

    def split(self, name: str):
        return data_mod.open_split(name, self.root)

    @property
    def committed_model(self) -> Path | None:
        """The committed model for this profile, if any and if the data is real."""
        folder = COMMITTED_MODELS.get(self.profile_name)
        if folder is None or self.dataset != "DSB2018" or not (folder / "model.npz").exists():
            return None
        return folder


class NotebookFailed(RuntimeError):
    pass


def _papermill_run(nb: Path, out: Path, params: dict, cwd: Path):
    import papermill as pm
    pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(cwd),
                        progress_bar=False, log_output=False, kernel_name="python3")


def run_all(profile: str = "cpu", run_dir=None, data_root=None, synthetic: bool = False,
            retrain: bool = False, figures_dir=None, notebooks=None, runner=None) -> int:
    """Execute the notebooks in order; refresh figures only if all succeed. Returns 0 or 1."""
    # Every parameter is passed explicitly: the nbval overrides must not leak into the kernels.
    saved = {k: os.environ.pop(k) for k in OVERRIDES if k in os.environ}
    try:
        return _run_all(profile, run_dir, data_root, synthetic, retrain, figures_dir,
                        notebooks, runner or _papermill_run)
    finally:
        os.environ.update(saved)


def _run_all(profile, run_dir, data_root, synthetic, retrain, figures_dir, notebooks, runner):
    if run_dir is None:  # one run folder per profile and data set: never mix them
        try:
            root = None if synthetic else data_mod.find_data_root(data_root, "stage1_train")
        except data_mod.DataError:
            root = None
        real = root is not None and not data_mod.is_synthetic(root)
        run_dir = REPO / "runs" / (f"report-{profile}" if real else "report-synthetic")
    run = Path(run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    staging = run / "figures"
    ctx = Context(profile, data_root, str(run), str(staging), synthetic=synthetic)
    if figures_dir is None:  # figures/ holds the committed cpu figures; others go beside them
        if ctx.dataset != "DSB2018":
            figures_dir = REPO / "figures" / "synthetic"
        elif ctx.profile_name == "cpu":
            figures_dir = REPO / "figures"
        else:
            figures_dir = REPO / "figures" / ctx.profile_name
    figures_dir = Path(figures_dir)
    print(f"nucseg report: profile {profile}, data {ctx.dataset} ({ctx.root}), run {run}")
    if ctx.dataset != "DSB2018":
        print("  SYNTHETIC DATA: every figure says so; figures go to", figures_dir)
    params = {"profile": profile, "data_root": str(ctx.root), "run_dir": str(run),
              "figures_dir": str(staging), "retrain": bool(retrain)}
    executed = run / "notebooks"
    executed.mkdir(exist_ok=True)
    todo = notebooks or NOTEBOOKS
    t_all = time.time()
    timings = {}
    for i, name in enumerate(todo, 1):
        t0 = time.time()
        print(f"[{i}/{len(todo)}] {name} ...", end="", flush=True)
        try:
            runner(REPO / "notebooks" / name, executed / name, params, REPO / "notebooks")
        except Exception as err:  # noqa: BLE001 - report which notebook and why
            print(" FAILED")
            cell = getattr(err, "exec_count", None)
            ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", err)
            print(f"nucseg report: {name} failed"
                  f"{f' at cell [{cell}]' if cell else ''}: {ename}: {evalue}\n"
                  f"  executed notebook: {executed / name}\n"
                  f"  {figures_dir} was left unchanged.", file=sys.stderr)
            return 1
        timings[name] = round(time.time() - t0, 1)
        print(f" done in {timings[name]:.0f} s")
    n = publish(staging, figures_dir)
    runs.update_run_json(run, notebook_seconds=timings, report_seconds=time.time() - t_all,
                         command=" ".join(["nucseg"] + sys.argv[1:]) if sys.argv else "")
    print(f"all {len(todo)} notebooks ran in {time.time() - t_all:.0f} s; {n} figures and "
          f"tables written to {figures_dir}")
    return 0


def publish(staging: Path, target: Path) -> int:
    """Copy every figure/table from the staging folder into ``target``, file by file,
    atomically (a reader never sees a half-written file)."""
    target.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in sorted(staging.iterdir()):
        if f.is_file() and f.suffix in (".png", ".csv", ".md"):
            with runs.atomic_path(target / f.name) as tmp:
                shutil.copyfile(f, tmp)
            n += 1
    return n


def in_colab() -> bool:
    return "google.colab" in sys.modules


def colab_setup(repo: str = "/content/nucseg") -> str | None:
    """On Colab only: install this repository's package and what Colab lacks (Colab's
    TensorFlow and tf-keras stay as they are), work from its notebooks folder, find the data.
    Returns the data folder (None outside Colab, where it does nothing)."""
    if not in_colab():
        return None
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", repo,
                    "segmentation-models==1.0.1", "jupytext", "papermill", "kaggle"], check=True)
    os.chdir(Path(repo) / "notebooks")
    return colab_data_root()


def colab_data_root(drive_folder: str = "/content/drive/MyDrive/dsb2018",
                    download_to: str = "/content/dsb2018") -> str | None:
    """On Colab only: find the DSB2018 data in a Drive folder, else download it with the Kaggle
    API (needs the user's kaggle.json). Sets NUCSEG_DATA and returns the folder."""
    if not in_colab():
        return None
    import subprocess
    if Path(drive_folder).is_dir() and any(Path(drive_folder).glob("stage1_train*")):
        os.environ["NUCSEG_DATA"] = drive_folder
        return drive_folder
    dest = Path(download_to)
    if not any(dest.glob("stage1_train*")):
        dest.mkdir(parents=True, exist_ok=True)
        print("Downloading DSB2018 with the Kaggle API (upload kaggle.json first: "
              "https://www.kaggle.com/docs/api) ...")
        subprocess.run(["kaggle", "competitions", "download", "-c", "data-science-bowl-2018",
                        "-p", str(dest)], check=True)
    os.environ["NUCSEG_DATA"] = str(dest)
    return str(dest)
