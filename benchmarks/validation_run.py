"""What the benchmarks of a run's validation images share (``scale_estimate.py``,
``tta_scales.py``, ``ensemble.py``): their options (``--run``, ``--model``, ``--out``), run
folders named relative to the repository, and the model they load."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nucseg_utils import model as model_mod  # noqa: E402


def run_folder(path) -> Path:
    """A run folder given on the command line: absolute, or relative to the repository."""
    return Path(path) if Path(path).is_absolute() else ROOT / path


def open_run(doc: str, out: str, argv=None):
    """Parse the options (``doc``: the script's docstring, its first paragraph the
    description; ``out``: the default output under ``benchmarks/``); returns (options, the
    run folder, the network, its config)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--run", default="runs/cpu", help="run folder (relative to the repository)")
    ap.add_argument("--model", default=str(ROOT / "models" / "cpu" / "model.npz"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / out))
    a = ap.parse_args(argv)
    run = run_folder(a.run)
    net, config = model_mod.load_model(a.model, engine=model_mod.exact_engine())
    return a, run, net, config
