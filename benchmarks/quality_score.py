"""Which images to check: a per-image quality score without ground truth, tested against the
true DSB of each image (issue 37, part 5).

The committed ``cpu`` model predicts its 67 validation images (held-out stage1_train, drawn
as its training drew them) and the 65 stage1_test images with the 8-fold TTA; each image's
probability map, the spread of its 8 TTA variants and its label image are kept in a cache
(``runs/quality-cache``, so that the signals can be studied again without the network).
For each image this computes the signals the package's quality score reads
(:mod:`nucseg_utils.inference.quality`) and its true DSB against the ground truth, then
ranks: Spearman's correlation between each candidate score and the true DSB, over all
images and within each image type with 10 or more images, and how many of the worst tenth
(by true DSB) the flag (the lowest tenth by score) catches. The score is chosen on the
validation images alone; stage1_test is the check (one line in ``models/TEST_LEDGER.md``).

Writes ``benchmarks/quality_score.md`` and ``.csv``. Usage (about 10 minutes on 2 cores the
first time, seconds from the cache):

    python benchmarks/quality_score.py [--model models/cpu/model.npz] [--cache runs/quality-cache]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# common first: it puts the repository on sys.path for nucseg_utils
from common import REPO
from scipy import stats
from tqdm.auto import tqdm

from nucseg_utils.core import runs
from nucseg_utils.core.settings import recipe_of
from nucseg_utils.data import dsb as data_mod
from nucseg_utils.evaluation import image_types, metrics
from nucseg_utils.inference import quality
from nucseg_utils.model import NucleusModel, engines
from nucseg_utils.training.loop import split_ids

MODEL = REPO / "models" / "cpu" / "model.npz"
MIN_TYPE = 10   # the smallest image type whose correlation is reported on its own
BASELINE = "mean_prob_inside"  # the baseline: the mean probability inside the nuclei
# the candidate estimates: every set of up to MAX_SIGNALS of the package's signals, each fitted
# by least squares on the validation images; of those whose leave-one-out rank correlation
# there is within TIE of the best, the one of fewest signals is chosen (then the best of those)
MAX_SIGNALS = 3
CANDIDATES = tuple(c for k in range(1, MAX_SIGNALS + 1)
                   for c in itertools.combinations(quality.SIGNALS, k))
# the signals that fall as the segmentation gets worse (ranked negated when alone)
FALLING = ("spread_inside", "uncertain_share", "touching_inside")
TIE = 0.01  # about the spread of a validation score between training seeds (profiles)
SHOWN = 12  # candidates listed in the report
FLAG_SHARE = 0.1  # check_below: the validation images' tenth percentile of the estimate


def validation_ids(model_path) -> list[str]:
    """The stage1_train ids the model was validated on, drawn again as its training drew
    them (random split, its seed; the committed ``cpu`` model's run folder is not kept)."""
    info = runs.read_json(Path(model_path).parent / "run.json")
    profile = info["profile"]
    if profile.get("split_by") not in (None, "random") or profile["train_splits"] != ["stage1_train"]:
        raise SystemExit("this benchmark redraws a random stage1_train split only")
    ids = data_mod.open_split("stage1_train").ids
    training = recipe_of(profile).training
    return split_ids(ids, training.val_fraction, training.split_draw_seed())[1]


def collect(net: NucleusModel, cache: Path, sets: dict) -> pd.DataFrame:
    """Predict (or read from ``cache``) every image; one row of signals and truth each."""
    rows = []
    for subset, (split, ids) in sets.items():
        source = data_mod.open_split(split)
        for sid in tqdm(ids, desc=subset, unit="img"):
            path = cache / subset / f"{sid}.npz"
            sample = source.sample(sid)
            if path.is_file():
                z = np.load(path)
                prob, spread, labels = z["prob"].astype(np.float32), z["spread"], z["labels"]
            else:
                labels, details = net.predict_instances(sample.image)
                prob, spread = details["probabilities"], details["spread"]
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npz")
                np.savez_compressed(tmp, prob=prob.astype(np.float16),
                                    spread=spread.astype(np.float16),
                                    labels=labels.astype(np.int32))
                tmp.replace(path)
            sig = quality.signals(prob, spread.astype(np.float32), labels, net.postprocess)
            rows.append({"subset": subset, "id": sid,
                         "type": image_types.image_type(sample.image, sample.labels),
                         "true_dsb": metrics.image_scores(sample.labels, labels)["dsb"], **sig})
        source.close()
    return pd.DataFrame(rows)


def fit(table: pd.DataFrame, columns) -> tuple[np.ndarray, float]:
    """Least-squares weights and intercept of the true DSB on ``columns``."""
    x = np.c_[table[list(columns)].to_numpy(float), np.ones(len(table))]
    w = np.linalg.lstsq(x, table["true_dsb"].to_numpy(float), rcond=None)[0]
    return w[:-1], float(w[-1])


def leave_one_out(table: pd.DataFrame, columns) -> np.ndarray:
    """Each image's estimate from the weights fitted on the others."""
    out = np.empty(len(table))
    for i in range(len(table)):
        w, b = fit(table.drop(table.index[i]), columns)
        out[i] = table[list(columns)].iloc[i].to_numpy(float) @ w + b
    return out


def rank_scores(table: pd.DataFrame, column: str) -> dict:
    """Spearman's rho of ``column`` with the true DSB (overall and by type with >= MIN_TYPE
    images), and how many of the worst tenth the lowest tenth by ``column`` holds."""
    out = {"all": stats.spearmanr(table[column], table["true_dsb"]).statistic}
    for t, g in table.groupby("type"):
        if len(g) >= MIN_TYPE:
            out[t] = stats.spearmanr(g[column], g["true_dsb"]).statistic
    k = max(1, int(round(len(table) / 10)))
    worst = set(table.nsmallest(k, "true_dsb")["id"])
    out["caught"] = (len(worst & set(table.nsmallest(k, column)["id"])), k)
    return out


def _row(name: str, subset: str, r: dict, types) -> str:
    caught = f"{r['caught'][0]} of {r['caught'][1]}"
    return (f"| {name} | {subset} | {r['all']:.3f} | " +
            " | ".join(f"{r[t]:.3f}" if t in r else "-" for t in types) + f" | {caught} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--cache", default=str(REPO / "runs" / "quality-cache"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "quality_score"))
    a = ap.parse_args(argv)
    net = NucleusModel.load(a.model, engine=engines.exact())
    sets = {"validation": ("stage1_train", validation_ids(a.model)),
            "stage1_test": ("stage1_test", data_mod.open_split("stage1_test").ids)}
    table = collect(net, Path(a.cache), sets)
    val = table[table["subset"] == "validation"].reset_index(drop=True)
    choice = []
    for cols in CANDIDATES:
        loo = val.assign(loo=leave_one_out(val, cols))
        choice.append((stats.spearmanr(loo["loo"], loo["true_dsb"]).statistic, cols))
    best = max(rho for rho, _ in choice)
    chosen = min((c for c in choice if c[0] >= best - TIE), key=lambda c: (len(c[1]), -c[0]))[1]
    w, b = fit(val, chosen)
    fitted = {"signals": list(chosen), "weights": [round(float(x), 6) for x in w],
              "intercept": round(b, 6), "check_below": 0.0,
              "model": runs.file_fingerprint(a.model),
              "fitted_on": f"{len(val)} validation images (held-out stage1_train)",
              "written_by": "python benchmarks/quality_score.py"}
    val_est = np.clip(val[list(chosen)].to_numpy(float) @ w + b, 0, 1)
    fitted["check_below"] = round(float(np.quantile(val_est, FLAG_SHARE)), 4)
    table["quality"] = [quality.estimate(r, fitted) for r in table.to_dict("records")]
    table["check"] = table["quality"] < fitted["check_below"]
    runs.write_text(quality.WEIGHTS_FILE, json.dumps(fitted, indent=2) + "\n")
    out = Path(a.out)
    runs.write_text(out.with_suffix(".csv"), table.to_csv(index=False, float_format="%.5f"))
    runs.write_text(out.with_suffix(".md"), report(table, choice, chosen, fitted, a))
    print(out.with_suffix(".md").read_text())
    return 0


def report(table, choice, chosen, fitted, a) -> str:
    types = sorted(t for t, n in table.groupby("type").size().items() if n >= MIN_TYPE)
    lines = ["# Which images to check: the per-image quality score", "",
             f"Model `{Path(a.model).name}` (fingerprint `{fitted['model']}`), 8-fold TTA. "
             f"Written by `python benchmarks/quality_score.py` (the images' maps cached in "
             f"`runs/quality-cache`). Each image's `quality` (an estimate of its DSB, "
             f"`nucseg_utils/inference/quality.py`) is ranked against its true DSB: "
             f"Spearman's rho over all images and within each image type with {MIN_TYPE} or "
             f"more images, and how many of the worst tenth by true DSB the lowest tenth by "
             f"the score holds. The signals and weights were chosen on the validation images "
             f"only (leave-one-out rank correlation of each candidate, below; of those within "
             f"{TIE} of the best, the fewest signals); stage1_test is "
             f"the check (`models/TEST_LEDGER.md`).", "",
             "## The chosen score against the baseline", "",
             "| score | images | rho, all | " + " | ".join(f"rho, {t}" for t in types) +
             " | worst tenth caught |",
             "|---|---|---|" + "---|" * len(types) + "---|"]
    for subset, g in table.groupby("subset", sort=False):
        n = f"{subset} ({len(g)})"
        lines.append(_row(f"baseline: {BASELINE}", n, rank_scores(g, BASELINE), types))
        lines.append(_row("**quality** (chosen)", n, rank_scores(g, "quality"), types))
    lines += ["", "Goal (issue 37): rho >= 0.9 overall and >= 0.85 within each type of 10 or "
              "more images, on both sets, and the flag catching >= 5 of 6 of the worst tenth.",
              "", "## The estimate", "",
              f"quality = {fitted['intercept']:+.4f} " +
              " ".join(f"{w:+.4f} x {s}" for s, w in zip(fitted["signals"], fitted["weights"])) +
              f", clipped to [0, 1]; `check` when below {fitted['check_below']:.4f} (the "
              f"validation images' tenth percentile). Flagged on stage1_test: "
              f"{int(table[table['subset'] == 'stage1_test']['check'].sum())} of "
              f"{int((table['subset'] == 'stage1_test').sum())} images, holding "
              f"{_flag_catch(table[table['subset'] == 'stage1_test'])} of its worst tenth.", "",
              "## The candidates (validation only)", "",
              (f"Every set of up to {MAX_SIGNALS} of the {len(quality.SIGNALS)} signals: "
               f"{len(choice)} candidates; the best {SHOWN} and the chosen one."), "",
              "| signals | leave-one-out rho |", "|---|---|"]
    ranked = sorted(choice, key=lambda c: (-c[0], len(c[1])))
    for rho, cols in [c for i, c in enumerate(ranked) if i < SHOWN or c[1] == chosen]:
        mark = " (chosen)" if cols == chosen else ""
        lines.append(f"| {', '.join(cols)}{mark} | {rho:.3f} |")
    lines += ["", "## Each signal alone", "",
              "| signal | images | rho, all | " + " | ".join(f"rho, {t}" for t in types) +
              " | worst tenth caught |", "|---|---|---|" + "---|" * len(types) + "---|"]
    for s in quality.SIGNALS:
        for subset, g in table.groupby("subset", sort=False):
            sign = -1 if s in FALLING else 1
            r = rank_scores(g.assign(v=sign * g[s]), "v")
            lines.append(_row(f"{'-' if sign < 0 else ''}{s}", f"{subset} ({len(g)})", r, types))
    return "\n".join(lines) + "\n"


def _flag_catch(g) -> str:
    k = max(1, int(round(len(g) / 10)))
    worst = set(g.nsmallest(k, "true_dsb")["id"])
    return f"{len(worst & set(g[g['check']]['id']))} of {k}"


if __name__ == "__main__":
    sys.exit(main())
