"""Shared fixtures: the real DSB2018 data (skipped when absent) and small synthetic data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nucseg_utils import data, report  # noqa: E402

SKIP_NO_DATA = "DSB2018 data not found (set NUCSEG_DATA to the folder holding the Kaggle files)"


# The notebooks' two executions are the longest fixtures of a session (minutes each): their
# files come first, so that each starts at once on a worker of its own while the other files
# share the workers' remaining time (pytest-xdist hands out files in this order).
LONGEST_FIRST = ("test_notebooks.py", "test_notebooks_alone.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: else in order


# `make test` (NUCSEG_TEST_TF_EAGER=1): TensorFlow in the test processes runs its functions
# eagerly. Tracing a graph costs more than the few steps a test trains or predicts (a smoke
# training of 2 x 2 steps: 39 s with graphs, 17 s eager, the same losses). The notebooks'
# kernels and the command-line runs in subprocesses trace graphs as a real run does, and so
# does every test under `make check` and plain `pytest`.
@pytest.fixture(scope="session", autouse=True)
def _tensorflow_functions_eager():
    if os.environ.get("NUCSEG_TEST_TF_EAGER") != "1":
        yield False
        return
    from nucseg_utils.model import network
    tf = network.tf_setup()
    tf.config.run_functions_eagerly(True)
    yield True
    tf.config.run_functions_eagerly(False)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The data root holding the real DSB2018 files; the test is skipped without them."""
    try:
        return data.find_data_root()
    except data.DataError:
        pytest.skip(SKIP_NO_DATA)


@pytest.fixture(scope="session")
def real_train(real_data):
    """The real stage1_train split (labels read from stage1_train_labels.csv)."""
    split = data.open_split("stage1_train", root=real_data)
    if split.solution_path is None:
        pytest.skip(f"stage1_train_labels.csv not found beside {split.source}")
    yield split
    split.close()


@pytest.fixture(scope="session")
def real_test_split():
    """The real stage1_test split with stage1_solution.csv; skipped when either is absent."""
    try:
        root = data.find_data_root(split="stage1_test")
    except data.DataError:
        pytest.skip(SKIP_NO_DATA + " (stage1_test)")
    split = data.open_split("stage1_test", root=root)
    if split.solution_path is None:
        pytest.skip(f"stage1_solution.csv not found beside {split.source}")
    yield split
    split.close()


@pytest.fixture(scope="session")
def make_labels():
    """The random label-image maker below, as a fixture."""
    return random_labels


@pytest.fixture(scope="session")
def perturb():
    """The prediction-maker below, as a fixture."""
    return perturb_labels


def random_labels(rng: np.random.Generator, shape=(24, 20), n_max=8, values=None) -> np.ndarray:
    """A label image of random overlapping rectangles (later ones paint over earlier ones, so
    objects can be cut or even vanish). ``values`` maps object k to a label value."""
    h, w = shape
    out = np.zeros(shape, np.int64)
    n = int(rng.integers(0, n_max + 1))
    for k in range(1, n + 1):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        dy, dx = int(rng.integers(1, max(2, h // 2))), int(rng.integers(1, max(2, w // 2)))
        out[y:y + dy, x:x + dx] = k if values is None else values[k - 1]
    return out


def perturb_labels(rng: np.random.Generator, labels: np.ndarray, p_drop=0.2) -> np.ndarray:
    """A plausible 'prediction' of ``labels``: each object shifted by up to one pixel, some
    dropped, some grown or shrunk by one pixel row/column, plus maybe a spurious object."""
    h, w = labels.shape
    out = np.zeros_like(labels)
    for k in np.unique(labels[labels > 0]):
        if rng.random() < p_drop:
            continue
        ys, xs = np.nonzero(labels == k)
        dy, dx = int(rng.integers(-1, 2)), int(rng.integers(-1, 2))
        ys, xs = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
        out[ys, xs] = k
        if rng.random() < 0.3:  # grow by one row below the object's bounding box
            y1, x0, x1 = ys.max() + 1, xs.min(), xs.max() + 1
            if y1 < h:
                out[y1, x0:x1] = k
        elif rng.random() < 0.3:  # shrink: lose the top row
            out[ys[ys == ys.min()], xs[ys == ys.min()]] = 0
    if rng.random() < 0.5:
        y, x = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
        out[y:y + 2, x:x + 3] = out.max() + 7
    return out


# --------------------------------------------------------------------------- stand-ins
@pytest.fixture(scope="session")
def syn_root():
    """The built-in synthetic set (made once, in its default place)."""
    from nucseg_utils.data import synthetic
    return synthetic.ensure_synthetic()


def stub_run(tmp_path, root, train_splits):
    """A run folder as training leaves it (run.json with the profile, split.csv), without
    weights: the protocol reads only what the model was trained and selected on."""
    import pandas as pd

    from nucseg_utils.core import profiles, runs
    prof = profiles.get_profile("smoke", train_splits=train_splits)
    runs.update_run_json(tmp_path, profile=prof)
    rows = []
    for s in train_splits:
        ids = data.open_split(s, root).ids
        rows += [{"id": i, "split": s, "subset": "val" if k % 3 == 0 else "train"}
                 for k, i in enumerate(ids)]
    runs.write_table(pd.DataFrame(rows), tmp_path / "split.csv")
    return tmp_path / "model.npz", prof


def stub_model(path, **config):
    """A model file as far as the protocol reads it: its config (no weights)."""
    import json
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, config=np.array(json.dumps({"backbone": "resnet18", "targets": ["mask"],
                                               **config})))
    return path


# --------------------------------------------------------------------------- a smoke model
# Training is the slow part of the reliability tests (TensorFlow on 2 cores), so one tiny run
# is trained once per session and shared; tests that change a run work on a copy of it.
SMOKE_OVERRIDES = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2}


def _shared(tmp_path_factory, name: str) -> Path:
    """A folder every pytest-xdist worker of this session sees (the documented pattern: the
    parent of the workers' base temporary folders), or this process's own without xdist."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if base.name.startswith("popen-gw") else base) / name


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """A small synthetic set (8 train, 4 test images, one with no nuclei) of small images,
    made once per session (the synthetic set's own file lock makes workers take turns)."""
    from nucseg_utils.data import synthetic
    return synthetic.make_dataset(_shared(tmp_path_factory, "smoke_data") / "syn", n_train=8,
                                  n_test=4, seed=0, shapes=((96, 128), (128, 128)))


@pytest.fixture(scope="session")
def smoke_profile() -> dict:
    """The smoke profile cut to 2 epochs of 2 steps of 2 patches."""
    from nucseg_utils.core import profiles
    return profiles.get_profile("smoke", **SMOKE_OVERRIDES)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_data, smoke_profile) -> Path:
    """A run folder trained once per session with ``smoke_profile`` on ``smoke_data``, shared
    by the workers (the first to ask trains it, the others wait). Do not modify it."""
    from filelock import FileLock

    from nucseg_utils import training
    run = _shared(tmp_path_factory, "smoke_run") / "run"
    run.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run.parent / "train.lock")):
        if not (run / "model.npz").is_file():
            training.train(smoke_profile, run, root=smoke_data, progress=False)
    return run


@pytest.fixture(scope="session")
def smoke_eval(tmp_path_factory, smoke_run, smoke_data) -> Path:
    """``smoke_run``'s model evaluated on the synthetic stage1_test (no TTA); its out folder."""
    from nucseg_utils import evaluation
    out = tmp_path_factory.mktemp("smoke_eval") / "eval"
    evaluation.evaluate(smoke_run / "model.npz", "stage1_test", root=smoke_data, out_dir=out,
                        tta=False, progress=False)
    return out


# --------------------------------------------------------------------------- the notebooks
# Every numbered notebook is executed once per test session, as `make report` executes them
# (report.run_all: papermill, the smoke profile on the synthetic set), and the notebook tests
# read what that one execution left:
# - 01-04, 07 and 08 in order in one run folder: the report's chain (notebook 3 trains the
#   run's model, the others use it);
# - 05 and 06 each opened alone in a fresh run folder, as from its Colab badge: no maps of
#   notebook 4 there, so each predicts the few images it needs with the committed model.
# (The chain's reading of notebook 4's maps is tested on report.Context, without a kernel.)
NOTEBOOKS_ALONE = ("05_postprocessing.ipynb", "06_evaluation.ipynb")
NOTEBOOKS_CHAIN = tuple(n for n in report.NOTEBOOKS if n not in NOTEBOOKS_ALONE)


class NotebookRuns:
    """What the session's one execution of the notebooks left: for each notebook its exit code
    (0: it ran to its end), its run folder and its executed copy; the figures and tables they
    all published, and the executed notebooks written back as the report writes them."""

    def __init__(self, root: Path):
        self.root = root
        self.published = root / "published"
        self.written_back = root / "written_back"
        self.code: dict[str, int] = {}
        self.run: dict[str, Path] = {}

    def executed(self, name: str) -> Path:
        return self.run[name] / "notebooks" / name


def _execute(tmp_path_factory, groups, label) -> NotebookRuns:
    runs_ = NotebookRuns(tmp_path_factory.mktemp(label))
    runs_.written_back.mkdir()
    for name in report.NOTEBOOKS:  # the write-back starts from the committed sources
        (runs_.written_back / name).write_bytes((ROOT / "notebooks" / name).read_bytes())
    for names, run in groups:
        code = report.run_all("smoke", run_dir=runs_.root / run, synthetic=True,
                              figures_dir=runs_.published, notebooks=names,
                              notebooks_out=runs_.written_back)
        for name in names:
            runs_.code[name], runs_.run[name] = code, runs_.root / run
    return runs_


# two fixtures, used by two test files, so that two pytest-xdist workers execute them at once
@pytest.fixture(scope="session")
def chain_runs(tmp_path_factory) -> NotebookRuns:
    """The report's chain of notebooks, executed once in one run folder."""
    return _execute(tmp_path_factory, [(NOTEBOOKS_CHAIN, "chain")], "notebook_chain")


@pytest.fixture(scope="session")
def alone_runs(tmp_path_factory) -> NotebookRuns:
    """Notebooks 5 and 6, each executed once alone in a fresh run folder."""
    return _execute(tmp_path_factory, [([n], n[:2]) for n in NOTEBOOKS_ALONE], "notebook_alone")
