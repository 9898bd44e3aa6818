"""The report: the shared context of the notebooks, and the runner that executes them all.

In (notebooks): the parameters cell's values (profile, data root, run folder, figures folder,
seed). :class:`Context` resolves them once: where the data is (falling back to the built-in
synthetic set, and saying so), the profile, the run folder (by default one per profile and
data set, :func:`nucseg_utils.core.runs.default_run_dir`) and its layout
(:class:`nucseg_utils.core.runs.RunLayout`), the model and where its predictions go (under the model
file's fingerprint), where each figure goes and the stamp printed on it. It records what it
resolved in the run's ``context.json``; ``run.json`` belongs to training. Under the test suite
the environment variables of :data:`OVERRIDES` replace parameters (nbval cannot pass any); when
one changes a value, the notebook prints one line saying so. A notebook that reads an earlier
notebook's outputs gets them from the context (:meth:`Context.probabilities`,
:meth:`Context.label_sets`); opened alone (as from its Colab badge, with nothing in its run
folder) it predicts and post-processes the few images it needs (:data:`FEW`) there and then,
saying so in one line. Tables are shown whole (:func:`show_tables_whole`) and with one name
per metric (:func:`readable`: object F1 and pixel F1 written out, a dash where nothing was
measured or published).

In (``nucseg report`` / ``make report``): a profile. :func:`run_all` executes the numbered
notebooks in order with papermill into ``runs/report-<profile>/``, keeps the executed copies
there, stops at the first failing notebook (naming it and the failing cell's error), and only
when every notebook succeeded copies the new figures and tables into ``figures/`` (the ``cpu``
profile on real data), ``figures/<profile>/`` (another profile) or ``figures/synthetic/``
(synthetic set), each file atomically. The ``cpu`` profile on real data also writes the
executed notebooks back into ``notebooks/`` (:func:`clean_executed`: the committed sources
with the run's outputs, no timings or other volatile metadata, no progress bars or warnings,
paths made relative), so GitHub shows each notebook with its figures and tables; the jupytext
``.py`` pairs stay output-free.

The terminal shows one line per notebook (and, on a terminal, the progress bar of a long
step in place); TensorFlow's C++ log and the kernel's "running over TCP without encryption"
warning are silenced.
"""
from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd

from nucseg_utils import data as data_mod
from nucseg_utils import inference, postprocessing
from nucseg_utils.core import profiles, runs
from nucseg_utils.data import outputs, synthetic
from nucseg_utils.evaluation import calibration
from nucseg_utils.model.network import NucleusModel
from nucseg_utils.report import examples
from nucseg_utils.report import figures as fig_mod

__all__ = [
    "COMMITTED_MODELS", "Context", "DASH", "DEFAULT_RESULTS_ENGINE", "FEW", "KEEP_MIME",
    "KERNEL_ARGS", "KERNEL_ENV", "METRIC_NAMES", "NOTEBOOKS", "OVERRIDES",
    "REPO", "THRESHOLD_NAMES", "clean_executed", "clean_outputs", "publish_figures", "readable",
    "results_engine", "run_all", "show_tables_whole", "write_back"
]

REPO = runs.REPO
NOTEBOOKS = [
    "01_eda.ipynb",
    "02_preprocessing.ipynb",
    "03_training.ipynb",
    "04_tta.ipynb",
    "05_postprocessing.ipynb",
    "06_evaluation.ipynb",
    "07_segment_your_images.ipynb",
    "08_big_images.ipynb",
]
COMMITTED_MODELS = {"cpu": REPO / "models" / "cpu"}
OVERRIDES = ("NUCSEG_PROFILE", "NUCSEG_SYNTHETIC", "NUCSEG_RUN_DIR")
# How many scored images a notebook opened alone (no outputs of notebook 4 in its run folder,
# as from its Colab badge) predicts for itself: those whose ground truth has the most nuclei
# touching another (where post-processing has work to do). Notebook 4 predicts them all.
FEW = 6

# One name per metric in every table a notebook shows or publishes: object scores count
# nuclei matched at an IoU threshold, pixel scores count foreground pixels; neither is ever a
# bare "f1".
METRIC_NAMES = {
    "dsb": "DSB", "precision": "object precision (IoU > 0.5)",
    "recall": "object recall (IoU > 0.5)", "f1": "object F1 (IoU > 0.5)",
    "tp": "TP (IoU > 0.5)", "fp": "FP (IoU > 0.5)", "fn": "FN (IoU > 0.5)",
    "n_true": "true nuclei", "n_pred": "predicted nuclei",
    "pixel_accuracy": "pixel accuracy", "pixel_iou": "pixel IoU",
    "pixel_precision": "pixel precision", "pixel_recall": "pixel recall",
    "pixel_f1": "pixel F1"}
# the same over IoU thresholds: each row's counts and scores at its own threshold t
THRESHOLD_NAMES = {**METRIC_NAMES, "threshold": "IoU threshold t", "tp": "TP", "fp": "FP",
                   "fn": "FN", "precision": "object precision (IoU > t)",
                   "recall": "object recall (IoU > t)", "f1": "object F1 (IoU > t)",
                   "dsb_term": "DSB term: mean of TP / (TP + FP + FN)"}
DASH = "–"  # a number not measured, or not published


def show_tables_whole():
    """pandas options under which a notebook's tables are shown whole (no column cut at 50
    characters, no column left out), on GitHub too: it renders the HTML the kernel made."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", None)


def readable(table, names: dict | None = None, digits: int = 4):
    """A table as a notebook shows and publishes it: each metric column under its one name
    (:data:`METRIC_NAMES`, or ``names``; ``dsb_<modality>`` becomes ``DSB <modality>``),
    numbers to ``digits`` decimals, and a dash where a value was not measured or not
    published (never ``nan``)."""
    names = METRIC_NAMES if names is None else names

    def column(c):
        c = str(c)
        return names.get(c, f"DSB {c[4:]}" if c.startswith("dsb_") else c)

    def cell(v, places):
        if isinstance(v, (float, np.floating)):
            return DASH if v != v else f"{v:.{places}f}"
        return DASH if v is None else v

    shown = table.copy()
    for c in shown.columns:  # IoU thresholds to 2 decimals (0.55), scores to ``digits``
        places = 2 if str(c) == "threshold" else digits
        shown[c] = [cell(v, places) for v in shown[c]]
    return shown.rename(columns=column)


@dataclass
class Context:
    """What every notebook needs to know, resolved from its parameters cell."""
    profile_name: str = "smoke"
    data_root: str | None = None
    run_dir: str | None = None  # None: runs/notebooks-<profile> (runs.default_run_dir)
    figures_dir: str | None = None
    seed: int = 42
    synthetic: bool = False
    root: Path = field(init=False)
    dataset: str = field(init=False)
    profile: dict = field(init=False)
    overrides: dict = field(init=False)
    _said: set = field(init=False, default_factory=set, repr=False)
    _fingerprint: tuple = field(init=False, default=(), repr=False)
    _model: object = field(init=False, default=None, repr=False)

    def __post_init__(self):
        show_tables_whole()
        self.overrides = self._apply_overrides()
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
        if self.run_dir is None:  # one run folder per profile and data set
            self.run_dir = str(runs.default_run_dir("notebooks", self.profile_name,
                                                    self.dataset))
        self.run = Path(self.run_dir)
        self.layout = runs.RunLayout(self.run)
        self.run.mkdir(parents=True, exist_ok=True)
        self.figures = Path(self.figures_dir) if self.figures_dir else self.layout.figures
        self.figures.mkdir(parents=True, exist_ok=True)
        # what the notebooks resolved; training's provenance (run.json) is training's alone
        runs.update_record(self.layout.context_json, profile=self.profile, seed=self.seed,
                           dataset=self.dataset, data=str(self.root.resolve()),
                           overrides=self.overrides)

    def _apply_overrides(self) -> dict:
        """The test suite runs the notebooks with nbval, which cannot pass parameters: the
        variables of :data:`OVERRIDES`, when set, replace the parameters cell's values
        (conftest.py sets them). Returns {parameter: [cell's value, value used]} for those
        that change something, and prints one line naming them."""
        env = os.environ
        changed = {}
        if env.get("NUCSEG_PROFILE") and env["NUCSEG_PROFILE"] != self.profile_name:
            changed["profile"] = [self.profile_name, env["NUCSEG_PROFILE"], "NUCSEG_PROFILE"]
            self.profile_name = env["NUCSEG_PROFILE"]
        if env.get("NUCSEG_SYNTHETIC") == "1" and not self.synthetic:
            changed["synthetic"] = [False, True, "NUCSEG_SYNTHETIC"]
            self.synthetic = True
        if env.get("NUCSEG_RUN_DIR") and env["NUCSEG_RUN_DIR"] != self.run_dir:
            changed["run_dir"] = [self.run_dir, env["NUCSEG_RUN_DIR"], "NUCSEG_RUN_DIR"]
            self.run_dir = env["NUCSEG_RUN_DIR"]
        if changed:
            print("Parameters overridden by the environment (as the test suite does): " +
                  ", ".join(f"{k} = {a!r} -> {b!r} ({var})" for k, (a, b, var)
                            in changed.items()))
        return {k: v[:2] for k, v in changed.items()}

    def _say_once(self, text: str):
        if text not in self._said:
            self._said.add(text)
            print(text)

    @property
    def stamp(self) -> str:
        return fig_mod.stamp_text(self.profile_name, self.dataset, self.run.name)

    def figure(self, key: str) -> Path:
        return self.figures / fig_mod.NAMES[key]

    def table(self, key: str) -> Path:
        return self.figures / fig_mod.TABLES[key]

    def split(self, name: str):
        return data_mod.open_split(name, self.root)

    def model_file(self) -> Path:
        """The run's model (notebook 3 trains or copies it). When the run folder has none, as
        when a notebook is opened on its own, the committed cpu model, saying so (never for
        the ``paper`` profile: its tables would describe the cpu model)."""
        own = self.layout.model
        fallback = COMMITTED_MODELS["cpu"] / "model.npz"
        if own.exists() or not fallback.exists():
            return own
        if self.profile_name == "paper":
            self._say_once(f"This run folder has no model of its own ({own} is made by "
                           f"notebook 3 or colab/run_paper_profile.ipynb); the paper profile "
                           f"does not borrow the committed cpu model.")
            return own
        self._say_once(f"This run folder has no model of its own ({own} is made by notebook "
                       f"3): using the committed cpu model {fallback}.")
        return fallback

    @property
    def model_fingerprint(self) -> str:
        """The fingerprint of :meth:`model_file`: the run's predictions and labels are kept
        under it, so those of another model are never read."""
        path = self.model_file()
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if not self._fingerprint or self._fingerprint[0] != key:
            self._fingerprint = (key, runs.file_fingerprint(path))
        return self._fingerprint[1]

    def predictions(self, tta: bool) -> Path:
        """Where this model's probability maps go (``predict_split``'s ``out_dir``)."""
        return self.layout.predictions(self.model_fingerprint, tta)

    def probs(self, tta: bool) -> Path:
        """This model's probability maps (written by notebook 4)."""
        return self.layout.probs(self.model_fingerprint, tta)

    def labels(self, method: str | None = None) -> Path:
        """This model's label images, one folder per post-processing method (notebook 5)."""
        return self.layout.labels(self.model_fingerprint, method)

    def model(self) -> NucleusModel:
        """The model of :meth:`model_file`, loaded once (:class:`NucleusModel`)."""
        if self._model is None or self._model.path != self.model_file():
            self._model = NucleusModel.load(self.model_file())
        return self._model

    def probabilities(self, scored: dict, tta: bool = True) -> dict:
        """{id: probability map} of the scored images (``scored``:
        :func:`nucseg_utils.evaluation.protocol.evaluation_set`), as notebook 4 saved them in the run
        folder. When they are not all there (a notebook opened alone, as from its Colab
        badge), :data:`FEW` of the scored images only, the most crowded (:meth:`few`): those
        not yet predicted are predicted now with the model and saved where notebook 4 puts
        them, and one line says so. :meth:`part` then labels the tables for the images
        used."""
        folder, ids = self.probs(tta), list(scored["ids"])
        scored = {"of": len(ids), **scored}
        saved = {p.stem for p in folder.glob("*.npz")}
        if not set(ids) <= saved:
            ids = self.few(scored)
            todo = [i for i in ids if i not in saved]
            if todo:
                self._say_once(f"This run folder has no probability maps of notebook 4: "
                               f"predicting the {len(ids)} most crowded of the "
                               f"{scored.get('of', len(ids))} scored images now with "
                               f"{runs.shown(self.model_file())} (notebook 4 predicts them all).")
                inference.predict_split(self.model(), self.split(scored["split"]),
                                        self.predictions(tta), tta=tta, ids=todo,
                                        progress=False)
        return outputs.load_prob_dir(folder, ids=ids)

    def few(self, scored: dict) -> list[str]:
        """The :data:`FEW` scored images whose ground truth has the most nuclei touching
        another (:func:`nucseg_utils.report.examples.touching_nuclei`; ties by id), in the set's
        order: what a notebook opened alone predicts."""
        source = self.split(scored["split"])
        crowd = {i: examples.touching_nuclei(source.labels(i)) for i in scored["ids"]}
        chosen = set(sorted(crowd, key=lambda i: (-crowd[i], i))[:FEW])
        return [i for i in scored["ids"] if i in chosen]

    def part(self, scored: dict, ids) -> dict:
        """``scored`` restricted to ``ids`` (in its order), with a label that says how many of
        its images they are: what the tables of a notebook opened alone are captioned with.
        Unchanged when ``ids`` are all of them."""
        keep = set(ids)
        ids = [i for i in scored["ids"] if i in keep]
        if len(ids) == len(scored["ids"]):
            return scored
        return {**scored, "ids": ids, "of": len(scored["ids"]),
                "label": f"{scored['label']}; {len(ids)} of its {len(scored['ids'])} images "
                         f"(notebook 4 not run in this run folder)"}

    def label_sets(self, scored: dict, methods) -> dict:
        """{method: {id: label image}} of the scored images, as notebook 5 saved them, for
        each post-processing method in ``methods``. Where they are not all there, the maps of
        :meth:`probabilities` (all, or a few) are post-processed now by each method that
        lacks them, saved where notebook 5 puts them, and one line says so."""
        ids = list(scored["ids"])
        if not all(self._have_labels(m, ids) for m in methods):
            probs = self.probabilities(scored, tta=True)
            ids = list(probs)
            configs, _ = calibration.method_configs(self.model_file())
            for m in methods:
                if not self._have_labels(m, ids):
                    self._say_once(f"This run folder has no label images of notebook 5: "
                                   f"post-processing the {len(ids)} maps now.")
                    outputs.save_label_dir(postprocessing.postprocess_all(probs, configs[m], m),
                                           self.labels(m))
        return {m: outputs.load_label_dir(self.labels(m), ids=ids) for m in methods}

    def _have_labels(self, method: str, ids) -> bool:
        folder = self.labels(method)
        return all((folder / f"{i}.png").is_file() for i in ids)

    @property
    def committed_model(self) -> Path | None:
        """The committed model for this profile, if any and if the data is real."""
        folder = COMMITTED_MODELS.get(self.profile_name)
        if folder is None or self.dataset != "DSB2018" or not (folder / "model.npz").exists():
            return None
        return folder


# Kernels started by the report: quiet (no TCP warning from the kernel application), with
# TensorFlow's C++ log off and figures rendered inline (so the executed notebooks hold them).
KERNEL_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3",
              "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]
# The engine of results published before `nucseg evaluate` recorded its engine (TensorFlow).
DEFAULT_RESULTS_ENGINE = "tensorflow"


def results_engine(model_dir=None) -> str:
    """The engine that computed the committed cpu model's results: the ``engine`` that
    ``nucseg publish`` recorded in ``models/cpu/results.json`` (its TTA evaluation), else
    :data:`DEFAULT_RESULTS_ENGINE`. The real-data cpu report predicts with it, so its tables
    match results.md to the last digit: TensorFlow and OpenVINO differ by < 4e-6 in
    probability, which on stage1_test can move one of about 4,000 objects."""
    path = Path(model_dir or REPO / "models" / "cpu") / "results.json"
    try:
        evaluations = runs.read_json(path).get("evaluations", {})
    except (OSError, ValueError):
        return DEFAULT_RESULTS_ENGINE
    for key in ("tta", "no_tta"):
        engine = (evaluations.get(key) or {}).get("engine")
        if engine:
            return str(engine)
    return DEFAULT_RESULTS_ENGINE


class _ProgressLine:
    """Receives a kernel's stderr while its notebook runs and shows the last progress bar of
    a long step in place on the terminal (nothing when the output is not a terminal)."""

    BAR = re.compile(r"\d+%\|")

    def __init__(self, name: str, out=None):
        self.name, self.out = name, out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.shown = False

    def write(self, text: str):
        if not self.tty:
            return
        bars = [seg.strip() for seg in re.split(r"[\r\n]", text) if self.BAR.search(seg)]
        if bars:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.out.write(f"\r  {self.name}: {bars[-1]}"[:width] + "\033[K")
            self.out.flush()
            self.shown = True

    def flush(self):
        pass


def _kernel_manager(log_path: Path):
    """A kernel manager class whose kernels write their process-level stderr (TensorFlow's
    C++ and absl start-up messages, the kernel application's own log) to ``log_path``
    instead of the terminal. What a notebook prints still reaches the notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:  # the kernel process keeps its own copy
                return await super()._async_launch_kernel(kernel_cmd,
                                                          **{"stderr": log, **kw})

    return QuietKernelManager


def _papermill_run(nb: Path, out: Path, params: dict, cwd: Path, log_output: bool = False):
    import papermill as pm
    extra = {"kernel_manager_class": _kernel_manager(Path(out).with_suffix(".kernel.log"))}
    if log_output:  # papermill logs each cell's output at INFO: make that visible
        log = logging.getLogger("papermill")
        if not log.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
        log.setLevel(logging.INFO)
    else:
        extra["stderr_file"] = _ProgressLine(Path(nb).stem)
    pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(cwd),
                        progress_bar=False, log_output=log_output, kernel_name="python3",
                        language="python", extra_arguments=list(KERNEL_ARGS), **extra)


def run_all(profile: str = "cpu", run_dir=None, data_root=None, synthetic: bool = False,
            retrain: bool = False, figures_dir=None, notebooks=None, runner=None,
            log_output: bool = False, notebooks_out=None) -> int:
    """Execute the notebooks in order; refresh figures only if all succeed. Returns 0 or 1.
    ``log_output`` shows every cell's output as it runs (the Colab runner uses it).
    ``notebooks_out``: where the executed notebooks are written back (cleaned) when all
    succeeded; by default ``notebooks/`` for the ``cpu`` profile on real data (the same rule
    as ``figures/``), else nowhere."""
    # Every parameter is passed explicitly: the nbval overrides must not leak into the kernels.
    saved = {k: os.environ.pop(k) for k in OVERRIDES if k in os.environ}
    kernel_env = {k: os.environ.get(k) for k in (*KERNEL_ENV, "NUCSEG_ENGINE")}
    os.environ.update(KERNEL_ENV)  # the kernels inherit this process's environment
    try:
        return _run_all(profile, run_dir, data_root, synthetic, retrain, figures_dir,
                        notebooks, runner or partial(_papermill_run, log_output=log_output),
                        notebooks_out)
    finally:
        for k, v in kernel_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.environ.update(saved)


def _run_all(profile, run_dir, data_root, synthetic, retrain, figures_dir, notebooks, runner,
             notebooks_out=None):
    if run_dir is None:  # one run folder per profile and data set: never mix them
        try:
            root = None if synthetic else data_mod.find_data_root(data_root, "stage1_train")
        except data_mod.DataError:
            root = None
        real = root is not None and not data_mod.is_synthetic(root)
        run_dir = runs.default_run_dir("report", profile, "DSB2018" if real else "synthetic",
                                       REPO / "runs")
    run = Path(run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    staging = runs.RunLayout(run).figures
    ctx = Context(profile, data_root, str(run), str(staging), synthetic=synthetic)
    committed = ctx.dataset == "DSB2018" and ctx.profile_name == "cpu"
    figures_dir, notebooks_out = _destinations(ctx, committed, figures_dir, notebooks_out)
    print(f"nucseg report: profile {profile}, data {ctx.dataset} ({ctx.root}), run {run}")
    if ctx.dataset != "DSB2018":
        print("  SYNTHETIC DATA: every figure says so; figures go to", figures_dir)
    if committed and not retrain and not os.environ.get("NUCSEG_ENGINE"):
        engine = results_engine()
        os.environ["NUCSEG_ENGINE"] = engine  # the kernels inherit it
        print(f"  the committed model's results were computed with {engine}: the "
              f"notebooks predict with it too (NUCSEG_ENGINE overrides)")
    params = {"profile": profile, "data_root": str(ctx.root), "run_dir": str(run),
              "figures_dir": str(staging), "retrain": bool(retrain)}
    executed = ctx.layout.executed
    executed.mkdir(exist_ok=True)
    todo = notebooks or NOTEBOOKS
    t_all = time.time()
    timings = _execute(todo, runner, executed, params, figures_dir)
    if timings is None:
        return 1
    n = publish_figures(staging, figures_dir)
    written = []
    if notebooks_out is not None:
        written = write_back(executed, Path(notebooks_out), todo,
                             {str(REPO) + os.sep: "", str(ctx.root): "<data>"})
    runs.update_record(ctx.layout.context_json, notebook_seconds=timings,
                       report_seconds=time.time() - t_all,
                       command=" ".join(["nucseg"] + sys.argv[1:]) if sys.argv else "")
    print(f"all {len(todo)} notebooks ran in {time.time() - t_all:.0f} s; {n} figures and "
          f"tables written to {figures_dir}"
          + (f"; {len(written)} executed notebooks written to {notebooks_out}" if written
             else ""))
    return 0


def _destinations(ctx: Context, committed: bool, figures_dir, notebooks_out):
    """Where the figures and the executed notebooks go: ``figures/`` and ``notebooks/`` for
    the committed cpu figures (the cpu profile on real data), beside them for another profile
    or the synthetic set (and no notebook written back), unless given."""
    if figures_dir is None:
        if ctx.dataset != "DSB2018":
            figures_dir = REPO / "figures" / "synthetic"
        elif committed:
            figures_dir = REPO / "figures"
        else:
            figures_dir = REPO / "figures" / ctx.profile_name
    if notebooks_out is None and committed:
        notebooks_out = REPO / "notebooks"
    return Path(figures_dir), notebooks_out


def _execute(todo, runner, executed: Path, params: dict, figures_dir: Path) -> dict | None:
    """Run the notebooks ``todo`` in order, one line each; {name: seconds}, or None after
    the first that fails (naming it and its failing cell; the figures stay as they were)."""
    timings = {}
    tty = sys.stdout.isatty()
    for i, name in enumerate(todo, 1):
        t0 = time.time()
        print(f"[{i}/{len(todo)}] {name} ...", end="", flush=True)
        try:
            runner(REPO / "notebooks" / name, executed / name, params, REPO / "notebooks")
        except Exception as err:  # noqa: BLE001 - report which notebook and why
            print(f"\r[{i}/{len(todo)}] {name} FAILED" + ("\033[K" if tty else ""))
            cell = getattr(err, "exec_count", None)
            ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", err)
            print(f"nucseg report: {name} failed"
                  f"{f' at cell [{cell}]' if cell else ''}: {ename}: {evalue}\n"
                  f"  executed notebook: {executed / name}\n"
                  f"  {figures_dir} was left unchanged.", file=sys.stderr)
            return None
        timings[name] = round(time.time() - t0, 1)
        if tty:
            print(f"\r[{i}/{len(todo)}] {name} done in {timings[name]:.0f} s\033[K")
        else:
            print(f" done in {timings[name]:.0f} s")
    return timings


def publish_figures(staging: Path, target: Path) -> int:
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


# --------------------------------------------------------------------------- write-back
KEEP_MIME = ("image/png", "text/html", "text/markdown", "text/plain")
_PROGRESS = re.compile(r"^.*\r(?=[^\r\n]*$)", re.M)  # all but the last \r-segment of a line


def _clean_text(text: str, replacements: dict) -> str:
    text = _PROGRESS.sub("", text)
    for old, new in replacements.items():
        if old:
            text = text.replace(old, new)
    return text


def clean_outputs(outputs, replacements: dict | None = None) -> list:
    """A cell's outputs as a committed notebook keeps them: stdout (consecutive pieces
    joined, carriage-return progress collapsed), results and displays reduced to PNG, HTML,
    Markdown and plain text, without output metadata; stderr (progress bars, library
    warnings) and widget views dropped. ``replacements`` {old: new} are applied to all text
    (e.g. absolute paths made relative)."""
    replacements = replacements or {}
    out = []
    for o in outputs:
        kind = o.get("output_type")
        if kind == "stream":
            if o.get("name") != "stdout":
                continue
            text = o.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            if out and out[-1].get("output_type") == "stream":
                out[-1]["text"] += text
            else:
                out.append(nbformat.v4.new_output("stream", name="stdout", text=text))
        elif kind in ("execute_result", "display_data"):
            data = {k: v for k, v in o.get("data", {}).items() if k in KEEP_MIME}
            if not data:
                continue
            for k in list(data):
                if k != "image/png":
                    v = data[k]
                    data[k] = _clean_text("".join(v) if isinstance(v, list) else v,
                                          replacements)
            new = nbformat.v4.new_output(kind, data=data)
            if kind == "execute_result":
                new["execution_count"] = o.get("execution_count")
            out.append(new)
        elif kind == "error":
            out.append(copy.deepcopy(o))
    for o in out:
        if o.get("output_type") == "stream":
            o["text"] = _clean_text(o["text"], replacements)
    return [o for o in out if o.get("output_type") != "stream" or o["text"].strip()]


def clean_executed(executed, source, replacements: dict | None = None):
    """The committed form of an executed notebook: ``source`` (the notebook as committed:
    its cells, ids, cell and notebook metadata unchanged, so the jupytext pair still agrees)
    with the outputs of ``executed`` (papermill's copy) cleaned by :func:`clean_outputs`.
    Papermill's injected-parameters cell, its timings and status, nbclient's execution
    timestamps, widget state and language_info are all left behind; execution counts are
    renumbered 1, 2, ... in order."""
    ran = [c for c in executed.cells
           if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    by_id = {c.get("id"): c for c in ran if c.get("id")}
    nb = copy.deepcopy(source)
    count = 0
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        done = by_id.get(cell.get("id"))
        if done is None and k < len(ran) and ran[k].cell_type == "code":
            done = ran[k]
        if done is None or done.get("execution_count") is None:
            cell.outputs, cell.execution_count = [], None
            continue
        count += 1
        cell.execution_count = count
        cell.outputs = clean_outputs(done.get("outputs", []), replacements)
        for o in cell.outputs:
            if o.get("output_type") == "execute_result":
                o["execution_count"] = count
    return nb


def write_back(executed_dir: Path, dest: Path, names, replacements: dict | None = None):
    """Write each executed notebook, cleaned (:func:`clean_executed`), over its committed
    source in ``dest`` (atomically). Returns the paths written."""
    written = []
    for name in names:
        source_path = dest / name
        source = nbformat.read(source_path if source_path.exists() else REPO / "notebooks" /
                               name, as_version=4)
        done = nbformat.read(Path(executed_dir) / name, as_version=4)
        nb = clean_executed(done, source, replacements)
        nbformat.validate(nb)
        with runs.atomic_path(dest / name) as tmp:
            nbformat.write(nb, str(tmp))
        written.append(dest / name)
    return written
