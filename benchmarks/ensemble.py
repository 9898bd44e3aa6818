"""Do several trainings of one recipe, averaged, beat one? (issue 12; validation images only)

One training of the `cpu` recipe moves the validation DSB by about 0.02 with its seed alone
(``models/cpu/ablation.md``). Averaging the probabilities of N such networks (an ensemble)
removes part of that noise, at N times the training and prediction time. For each model this
predicts the validation images of the first run (held-out stage1_train, from its
``split.csv``; no test image) with 8-fold TTA, as ``nucseg evaluate`` predicts (each model
estimates the nucleus size itself; the maps are compared at native size), then scores every
model alone and the average of all of them, post-processed as the first model's config says
and at the other thresholds of the calibration. The runs must share their validation images
(one ``split_seed``); the script refuses them otherwise.

Writes ``benchmarks/ensemble.md``. Usage (about 2 minutes per model on 2 cores):

    python benchmarks/ensemble.py runs/cpu runs/cpu-seed43 runs/cpu-seed44
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# common first: it puts the repository on sys.path for nucseg_utils
from common import REPO, run_folder

from nucseg_utils.core import runs
from nucseg_utils.evaluation import calibration
from nucseg_utils.model import NucleusModel, engines
from nucseg_utils.postprocessing import THRESHOLDS


def average(predicted: list) -> list:
    """The mean of several models' [(source, {id: probabilities})], image by image."""
    out = []
    for parts in zip(*predicted):
        source = parts[0][0]
        ids = parts[0][1].keys()
        out.append((source, {sid: np.mean([p[sid] for _, p in parts], axis=0) for sid in ids}))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (each with its model.npz)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "ensemble.md"))
    a = ap.parse_args(argv)
    folders = [run_folder(r) for r in a.runs]
    splits = [calibration.validation_ids(f) for f in folders]
    for f, s in zip(folders[1:], splits[1:]):
        if s != splits[0]:
            ap.error(f"{f} has other validation images than {folders[0]}: train it with "
                     f"the same --split-seed")
    rows, predicted, config, seconds = [], [], None, 0.0
    for f in folders:
        net = NucleusModel.load(f / "model.npz", engine=engines.exact())
        cfg = net.config
        config = config or cfg
        t0 = time.perf_counter()
        predicted.append(calibration.predict_validation(net, folders[0], tta=True,
                                                        progress=False))
        took = time.perf_counter() - t0
        seconds += took
        rows.append((f"`{f.relative_to(REPO) if f.is_relative_to(REPO) else f}` "
                     f"(`{runs.file_fingerprint(f / 'model.npz')}`)", predicted[-1], took))
        print(f"predicted {f} in {took:.0f} s", flush=True)
    rows.append((f"**the mean of the {len(folders)}**", average(predicted), seconds))
    n = sum(len(ids) for ids in splits[0].values())
    lines = ["# Averaging several trainings of one recipe", "",
             f"The {n} validation images of `{a.runs[0]}` (held-out stage1_train; no test "
             f"image), 8-fold TTA, `{config.get('postprocess')}` post-processing (the first "
             f"model's config) at each threshold of the calibration, dilation "
             f"{config.get('dilation', 0)}. Written by `python benchmarks/ensemble.py "
             f"{' '.join(a.runs)}`.", "",
             "| model | threshold | validation DSB | F1 | s to predict |", "|---|---|---|---|---|"]
    for name, pred, took in rows:
        for threshold in THRESHOLDS:
            s = calibration.score_setting(pred, config, {"threshold": threshold})
            lines.append(f"| {name} | {threshold:g} | {s['dsb']:.4f} | {s['f1']:.4f} | "
                         f"{took:.0f} |")
    runs.write_text(Path(a.out), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
