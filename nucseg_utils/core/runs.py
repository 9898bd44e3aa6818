"""The run folder and safe file writing.

A run folder is the only hand-over between notebooks and commands. Its layout is declared
once, here (:class:`RunLayout`); notebooks (through :class:`nucseg_utils.report.Context`),
commands and tests take their paths from it::

    runs/<name>/
      model.npz          the model: the best epoch by validation loss (float16 weights + config)
      checkpoint.npz     the last full checkpoint (float32 weights + optimizer), for resume
      history.csv        one row per epoch
      split.csv          which training image went to train, which to validation
      train.log          the training log
      run.json           the training's provenance: profile, seed, data and its fingerprint,
                         versions, wall time. Written by training only (or copied with a
                         committed model); a fresh training starts a new one
      context.json       what the notebooks resolved (profile, seed, data, overrides) and the
                         report's timings; never read by training
      cache/             image indexes (a cache; safe to delete)
      predictions/<model fingerprint>/tta/probs/<id>.npz      probability maps (notebook 4)
      predictions/<model fingerprint>/no_tta/probs/<id>.npz
      labels/<model fingerprint>/<method>/<id>.png           label images (notebook 5)
      tta_gain.csv, ablation.csv, per_image.csv, submission.csv, summary.json
                         the run's result tables (notebooks 4 and 6)
      figures/           the report's figures and paper tables (`nucseg report` publishes them)
      notebooks/         the executed notebooks (`nucseg report`)
      segmented/         notebook 7's segmentations

The probability maps and labels sit under the fingerprint of the model file that made them
(:func:`file_fingerprint`), so a new model (retrained, re-published, or another profile's)
never reads the maps of an earlier one into a table.

Default run folders, one per profile and data set (:func:`default_run_dir`), so a ``paper``
run never reads a ``cpu`` run's files: ``runs/notebooks-<profile>`` for the notebooks,
``runs/report-<profile>`` for ``nucseg report``, ``runs/<profile>`` for ``nucseg train``; on
the synthetic set (where every profile runs as ``smoke``) ``runs/notebooks-synthetic`` and
``runs/report-synthetic``.

Resuming a training (``nucseg train --resume``, notebook 3 with ``retrain = True``) checks the
checkpoint's ``run.json``: another seed, profile setting or training data is refused with a
message naming what differs (:func:`nucseg_utils.training.check_resume`); it never silently
continues.

``nucseg evaluate --out DIR`` writes the same result files into ``DIR`` (``probs/<id>.npz``,
``labels/<id>.png``, ``submission.csv``, ``per_image.csv``, ``summary.json``); a folder that
holds the outputs of another model, split or data set is cleared of them first.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written model, table or figure behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the file's suffix (libraries pick a format from it).
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def write_table(df, path) -> Path:
    """Write a pandas table as CSV (and Markdown beside it when ``path`` ends in .csv, a
    value a row does not have left blank)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    if path.suffix == ".csv":
        write_text(path.with_suffix(".md"), to_markdown(df, blank_nan=True) + "\n")
    return path


def to_markdown(df, digits: int = 4, blank_nan: bool = False) -> str:
    """A GitHub Markdown table, floats to ``digits`` decimals (a NaN or None left blank
    with ``blank_nan``; no extra dependency)."""
    def fmt(v):
        if v is None and blank_nan:
            return ""
        if isinstance(v, float):
            return "" if blank_nan and v != v else f"{v:.{digits}f}"
        return str(v)
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


REPO = Path(__file__).resolve().parents[2]  # the repository (or installed tree) root
REPO_URL = "https://github.com/nucseg/nucseg"  # the one place the repository's address is written


def shown(path) -> str:
    """A path as a user reads it: relative to the repository when it is inside, else as
    given."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def file_fingerprint(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file (first 16 hex digits), or of a folder's file names and sizes."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(path)}:{p.stat().st_size}\n".encode())
    else:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def library_versions() -> dict:
    """Versions of the libraries that decide the numbers (those not installed are omitted)."""
    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "scikit-image", "tensorflow", "tf-keras", "openvino",
                 "segmentation-models", "pandas", "matplotlib", "nucseg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def machine() -> dict:
    return {"cores": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.machine()}


def update_record(path, fresh: bool = False, **fields) -> dict:
    """Merge ``fields`` into the JSON record ``path`` (created if missing, or replaced when
    ``fresh``) with the library versions and the machine, and return it."""
    path = Path(path)
    info = {} if fresh or not path.exists() else read_json(path)
    info.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
    info.update(fields)
    info.setdefault("versions", library_versions())
    info.setdefault("machine", machine())
    write_json(path, info)
    return info


def update_run_json(run_dir, fresh: bool = False, **fields) -> dict:
    """Merge ``fields`` into the training provenance ``run_dir/run.json`` (a new one when
    ``fresh``). Only training calls this; the notebooks write ``context.json``."""
    return update_record(RunLayout(run_dir).run_json, fresh=fresh, **fields)


# --------------------------------------------------------------------------- the layout
PROBS, LABELS = "probs", "labels"  # in a predictions folder and in `nucseg evaluate --out`
RESULT_FILES = ("submission.csv", "per_image.csv", "per_image.md", "summary.json")


@dataclass(frozen=True)
class RunLayout:
    """Where each file of a run folder goes (the module docstring lists them)."""
    root: Path

    MODEL = "model.npz"
    CHECKPOINT = "checkpoint.npz"
    HISTORY = "history.csv"
    SPLIT = "split.csv"
    TRAIN_LOG = "train.log"
    RUN_JSON = "run.json"
    CONTEXT_JSON = "context.json"
    # the post-processing candidates `nucseg publish` scored on the validation images
    CANDIDATES = "validation_postprocessing.csv"
    # what training writes, the checkpoint last (the order a copy to Drive keeps)
    TRAINING_FILES = (SPLIT, HISTORY, TRAIN_LOG, RUN_JSON, MODEL, CHECKPOINT)

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def __truediv__(self, name) -> Path:
        return self.root / name

    model = property(lambda self: self.root / self.MODEL)
    checkpoint = property(lambda self: self.root / self.CHECKPOINT)
    history = property(lambda self: self.root / self.HISTORY)
    split = property(lambda self: self.root / self.SPLIT)
    train_log = property(lambda self: self.root / self.TRAIN_LOG)
    run_json = property(lambda self: self.root / self.RUN_JSON)
    candidates = property(lambda self: self.root / self.CANDIDATES)
    context_json = property(lambda self: self.root / self.CONTEXT_JSON)
    cache = property(lambda self: self.root / "cache")
    figures = property(lambda self: self.root / "figures")
    executed = property(lambda self: self.root / "notebooks")
    segmented = property(lambda self: self.root / "segmented")
    tta_gain = property(lambda self: self.root / "tta_gain.csv")
    ablation = property(lambda self: self.root / "ablation.csv")
    per_image = property(lambda self: self.root / "per_image.csv")
    submission = property(lambda self: self.root / "submission.csv")
    summary = property(lambda self: self.root / "summary.json")

    def predictions(self, fingerprint: str, tta: bool) -> Path:
        """The folder :func:`nucseg_utils.inference.predict_split` writes a model's maps
        into (they go to its ``probs/``)."""
        return self.root / "predictions" / fingerprint / ("tta" if tta else "no_tta")

    def probs(self, fingerprint: str, tta: bool) -> Path:
        return self.predictions(fingerprint, tta) / PROBS

    def labels(self, fingerprint: str, method: str | None = None) -> Path:
        folder = self.root / LABELS / fingerprint
        return folder / method if method else folder


RUNS = REPO / "runs"


def default_run_dir(kind: str, profile: str, dataset: str, base=None) -> Path:
    """The default run folder of ``kind`` (``notebooks``, ``report``) for a profile and a
    data set: ``<base>/<kind>-<profile>`` on DSB2018, ``<base>/<kind>-synthetic`` on the
    synthetic set (every profile runs as ``smoke`` there). ``base``: the repository's
    ``runs/``."""
    name = f"{kind}-{profile}" if dataset == "DSB2018" else f"{kind}-synthetic"
    return Path(base if base is not None else RUNS) / name
