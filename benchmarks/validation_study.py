"""Which labels, which validation, which object filters? (issue 22, parts 1 and 2)

The trainings (one command each, printed in the report; about 25 minutes each here):

    nucseg train --profile cpu --split-by type --train-labels original --seed 42 \\
        --out runs/labels/original-s42
    ... --train-labels fixed ..., and --seed 43, 44

are the committed ``cpu`` recipe with its validation images drawn by image type (77 of
stage1_train, 75 of them with fixed masks: 42 fluorescence small nuclei, 13 large, 8 grey
tissue, 12 purple tissue, 2 pink-and-purple H&E), on Kaggle's original or the community-fixed
stage1_train labels. Both label sets hold out the same images (``split_seed`` 42) and are
scored against the same masks, the fixed ones. A lever for stained tissue is trained the same
way, with the original labels and the same three seeds, into ``runs/stained``:

    nucseg train --profile cpu --split-by type --train-labels original \\
        --normalization haematoxylin --seed 42 --out runs/stained/hed-s42
    ... --stain 0.3 (stain augmentation) ... --out runs/stained/stain-s42
    ... --balance-by type --balance-modalities 1 (every image type drawn equally often) \\
        ... --out runs/stained/typebal-s42

and compared seed by seed with ``original-s42`` ... (section 4 of the report), overall and on
the stained validation images, where it is meant to help.

For each run this predicts its validation images and stage1_test (8-fold TTA, as ``nucseg
evaluate``), chooses the post-processing on the validation images alone
(:func:`nucseg_utils.evaluation.calibration.select_postprocessing`), scores both with it, then with each
object filter of :data:`FILTERS` added (:func:`nucseg_utils.postprocessing.filter_objects`: a
minimum size relative to the image's own nucleus size, a minimum mean probability), overall
and per image type. The committed ``cpu`` model, whose validation images were drawn at random
(the old way), is scored the same way on its own validation images (its split recomputed from
its profile), against its original masks (as it was chosen) and the fixed ones.

stage1_test is scored for every row so that one can see how well each validation predicts it;
nothing here is chosen on it.

Writes ``benchmarks/validation_study.md``, ``benchmarks/validation_study.csv`` (every row) and
``benchmarks/validation_study.json`` (each model's summary: its file's fingerprint, the
post-processing chosen, its best epoch, its folder; its rows are in the CSV); caches each
model's scores in ``<run>/study.json`` (a rerun only scores the models that are new or changed).
Run folders are not committed (their weights are about 30 MB each), so on another machine a run
whose folder is absent keeps the scores of that committed record, and the report says which
runs it took from there (``--no-record`` leaves them out); the committed model, whose file is
committed, is scored again unless the record holds its fingerprint.
Usage: ``python benchmarks/validation_study.py [RUN ...]`` (default: every finished run under
``runs/labels`` and ``runs/stained``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# common first: it puts the repository on sys.path for nucseg_utils
from common import REPO

from nucseg_utils import data as data_mod
from nucseg_utils import training
from nucseg_utils.core import profiles, runs
from nucseg_utils.core.profiles import PROFILES, complete
from nucseg_utils.evaluation import calibration, image_types, scoring
from nucseg_utils.inference import predict_split
from nucseg_utils.model import CPU_MODEL, NucleusModel, engines, read_config
from nucseg_utils.postprocessing import postprocess_all

RUNS = REPO / "runs" / "labels"
LEVER_RUNS = REPO / "runs" / "stained"  # levers for stained tissue, the same split and seeds
COMMITTED = RUNS / "cpu-committed"   # the committed cpu model's recomputed random split
BASE = "cpu"  # the recipe of a run that changes nothing but its seed, labels and split
# the options a run of this study varies on purpose; any other option is the run's recipe
PAIRED = ("--out", "--seed", "--train-labels", "--split-by", "--split-seed")
OUT = REPO / "benchmarks" / "validation_study"
RECORD = OUT.with_suffix(".json")  # each model's summary; its rows are in the CSV
TEST = "stage1_test"
STAINED = ("grey tissue (brightfield)", "purple tissue", "pink-and-purple H&E")
# the object filters, one at a time then together, on top of the post-processing chosen on
# validation (the mean-probability levels above the thresholds the calibration chooses)
SIZES, MEAN_PROBS = (0.05, 0.1, 0.15, 0.2, 0.3), (0.75, 0.8, 0.85, 0.9, 0.95)
FILTERS = {"none": {},
           **{f"relative size {v:g}": {"min_size_factor": v} for v in SIZES},
           **{f"mean probability {v:g}": {"min_mean_prob": v} for v in MEAN_PROBS},
           **{f"relative size {a:g} + mean probability {b:g}": {"min_size_factor": a,
                                                                "min_mean_prob": b}
              for a in (0.05, 0.1) for b in (0.85, 0.9)}}
STUDY_VERSION = 2  # of the cached scores: 2 = the post-processing chosen without filters
RUN_TABLE = ["| run | labels | seed | best epoch | post-processing chosen | validation DSB "
             "| validation DSB, stained (grey + purple + H&E) | stage1_test DSB "
             "| stage1_test DSB, stained | command |", "|---|---|---|---|---|---|---|---|---|---|"]
COLUMNS = ["model", "labels", "seed", "validation", "recipe", "setting", "scored", "masks",
           "type", "images", "dsb", "recall", "f1"]
SCORES = ["dsb", "recall", "f1"]


def train_command(labels: str, seed: int, recipe: str = BASE, out: str | None = None) -> str:
    extra = "" if recipe == BASE else f"{recipe} "
    return (f"nucseg train --profile cpu --split-by type --train-labels {labels} {extra}"
            f"--seed {seed} --out {out or f'runs/labels/{labels}-s{seed}'}")


def recipe_of(profile: dict) -> str:
    """A run's recipe: the ``nucseg train`` options its recorded profile needs beyond the
    seed, labels and split this study pairs runs on (:data:`BASE` for none)."""
    if not profile:
        return BASE
    words = profiles.train_command(profile, "-").split(" (with")[0].split()[4:]
    pairs = [words[i:i + 2] for i in range(0, len(words), 2)]
    kept = [" ".join(p) for p in pairs if p[0] not in PAIRED]
    return " ".join(kept) or BASE


def rows_of(per_image: dict, types: dict, base: dict) -> list[dict]:
    """The type table of per-image results as rows (every type, then ``all``)."""
    table = scoring.type_table(per_image, {i: types[i] for i in per_image}, anchors=False)
    out = []
    for r in table.to_dict("records"):
        out.append({**base, "type": r["image type"], "images": r["images"], "dsb": r["DSB"],
                    "recall": r[f"recall (IoU > {scoring.TYPE_IOU:g})"],
                    "f1": r[f"F1 (IoU > {scoring.TYPE_IOU:g})"]})
    return out


def score(probs: dict, source, config: dict) -> dict:
    return scoring.image_results(postprocess_all(probs, config), source)


def test_types(root) -> dict:
    """{id: image type} of stage1_test (from its solution's masks), cached."""
    path = RUNS / "test_types.csv"
    if path.is_file():
        table = pd.read_csv(path, dtype={"id": str})
    else:
        source = data_mod.open_split(TEST, root)
        table = image_types.split_types(source)[["id", "type"]]
        source.close()
        runs.write_table(table, path)
    return dict(zip(table["id"], table["type"]))


def committed_split(root) -> Path:
    """A run folder holding the committed cpu model's validation images: its profile's
    random split (``split_seed`` 42, 10 % of stage1_train's original ids), recomputed."""
    layout = runs.RunLayout(COMMITTED)
    if not layout.split.is_file():
        profile = complete({**PROFILES["cpu"], "name": "cpu"})
        table, _ = training.load_training_data(profile, root, progress=False)
        COMMITTED.mkdir(parents=True, exist_ok=True)
        runs.write_table(table[["id", "split", "modality", "type", "subset"]], layout.split)
    return COMMITTED


def predict_model(name: str, model_path: Path, run_dir: Path, root, progress: bool,
                  limit: int | None = None) -> tuple[dict, float]:
    """(maps, seconds to predict them): the model's maps of its validation images and of
    stage1_test (8-fold TTA), cached in ``<run>/study_probs.npz`` (float16, as every path
    predicts them) for this model file."""
    cache = Path(run_dir) / "study_probs.npz"
    fingerprint = runs.file_fingerprint(model_path)
    if cache.is_file() and not limit:
        with np.load(cache) as z:
            if str(z["fingerprint"]) == fingerprint:
                return ({k: z[k].astype(np.float32) for k in z.files
                         if k not in ("fingerprint", "seconds")}, float(z["seconds"]))
    t0 = time.perf_counter()
    model = NucleusModel.load(model_path, engine=engines.exact())
    split = pd.read_csv(runs.RunLayout(run_dir).split, dtype={"id": str})
    if limit:  # a dry run: the first images only, in a folder of its own
        dry = RUNS / "dry-run"
        dry.mkdir(parents=True, exist_ok=True)
        runs.write_table(split[split["subset"] == "val"].head(limit), runs.RunLayout(dry).split)
        run_dir = dry
    (_, val_probs), = calibration.predict_validation(model, run_dir, root, tta=True,
                                                     progress=progress, labels="original")
    source = data_mod.open_split(TEST, root)
    test_probs = predict_split(model, source, run_dir, tta=True, progress=progress,
                               keep_probs=False, ids=source.ids[:limit] if limit else None)
    source.close()
    maps = {**{f"val/{k}": v for k, v in val_probs.items()},
            **{f"test/{k}": v for k, v in test_probs.items()}}
    seconds = time.perf_counter() - t0
    if not limit:
        with runs.atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, fingerprint=fingerprint, seconds=seconds,
                         **{k: v.astype(np.float16) for k, v in maps.items()})
    return maps, seconds


def study_model(name: str, model_path: Path, run_dir: Path, root, progress: bool,
                limit: int | None = None) -> dict:
    """Every row of one model (see the module's docstring), and how long it took."""
    maps, predict_seconds = predict_model(name, model_path, run_dir, root, progress, limit)
    t0 = time.perf_counter()
    val_probs = {k[4:]: v for k, v in maps.items() if k.startswith("val/")}
    test_probs = {k[5:]: v for k, v in maps.items() if k.startswith("test/")}
    config = read_config(model_path)
    info = runs.read_json(runs.RunLayout(run_dir).run_json) if name != "committed" else {}
    profile = info.get("profile", {"train_labels": "original", "seed": 42, "split_by": "random"})
    split = pd.read_csv(runs.RunLayout(run_dir).split, dtype={"id": str})
    val_types = dict(zip(split["id"], split["type"]))
    base = {"model": name, "labels": profile.get("train_labels", "original"),
            "seed": profile.get("seed"), "validation": profile.get("split_by", "random")}
    # the validation images scored against the fixed masks (and, for the committed model,
    # the original ones it was chosen on)
    # (the ground truth read once for every setting)
    split_fixed = data_mod.open_split("stage1_train", root, labels="fixed")
    fixed_probs = {i: p for i, p in val_probs.items() if i in set(split_fixed.ids)}
    fixed = calibration.GroundTruth(split_fixed, fixed_probs)
    split_fixed.close()
    if name == "committed":
        split_original = data_mod.open_split("stage1_train", root)
        original = calibration.GroundTruth(split_original, val_probs)
        split_original.close()
    if name == "committed":  # its method as published; the filters it chose are rows here
        chosen = {k: config.get(k) for k in ("postprocess", "threshold", "dilation")}
    else:  # the methods' grids only: the filters are this study's rows
        chosen, _, _ = calibration.select_postprocessing(model_path, run_dir, root,
                                                         predicted=[(fixed, fixed_probs)],
                                                         labels="fixed", filters=False)
    config = {**config, **chosen, **calibration.NO_FILTERS}
    test_source = data_mod.open_split(TEST, root)
    source = calibration.GroundTruth(test_source, test_probs)
    test_source.close()
    types = test_types(root)
    rows = []
    for setting, change in FILTERS.items():
        cfg = {**config, **change}
        masks = [("fixed", fixed, fixed_probs)]
        if name == "committed":
            masks.append(("original", original, val_probs))
        for label_set, src, probs in masks:
            rows += rows_of(score(probs, src, cfg), val_types,
                            {**base, "setting": setting, "scored": "validation",
                             "masks": label_set})
        rows += rows_of(score(test_probs, source, cfg), types,
                        {**base, "setting": setting, "scored": TEST, "masks": "solution"})
    return {"version": STUDY_VERSION, "fingerprint": runs.file_fingerprint(model_path),
            "chosen": chosen, "best_epoch": info.get("best_epoch"), "train_seconds": info.get("train_seconds"),
            "predict_seconds": predict_seconds, "seconds": time.perf_counter() - t0,
            "rows": rows}


def current(study: dict | None, fingerprint: str | None = None) -> bool:
    """Whether cached or recorded scores were made by this study's scoring and filters (and,
    given a fingerprint, of that model file)."""
    return bool(study) and study.get("filters") == list(FILTERS) and \
        study.get("version") == STUDY_VERSION and \
        (fingerprint is None or study.get("fingerprint") == fingerprint)


def recorded_studies() -> dict:
    """{name: study} of the committed record (:data:`RECORD`, rows from the committed CSV),
    each marked ``recorded``; only the studies made by this study's scoring and filters."""
    if not (RECORD.is_file() and OUT.with_suffix(".csv").is_file()):
        return {}
    table = pd.read_csv(OUT.with_suffix(".csv"), dtype={"seed": "Int64"})
    out = {}
    for name, summary in runs.read_json(RECORD).items():
        rows = table[table["model"] == name].astype(object).where(table.notna(), None)
        if current(summary) and len(rows):
            out[name] = {**summary, "rows": rows.to_dict("records"), "recorded": True}
    return out


def cached_study(name, model_path, run_dir, root, progress, recorded=None) -> dict:
    path = Path(run_dir) / "study.json"
    fingerprint = runs.file_fingerprint(model_path)
    if path.is_file():
        cached = runs.read_json(path)
        if current(cached, fingerprint):
            return cached
    if current(recorded, fingerprint):  # the committed record holds this very model file
        return {**recorded, "recorded": False, "by_fingerprint": True}
    result = {**study_model(name, model_path, run_dir, root, progress), "filters": list(FILTERS)}
    runs.write_json(path, result)
    return result


def finished_runs() -> list[Path]:
    out = []
    for d in sorted(RUNS.glob("*-s*")) + sorted(LEVER_RUNS.glob("*-s*")):
        layout = runs.RunLayout(d)
        if layout.run_json.is_file() and runs.read_json(layout.run_json).get("completed"):
            out.append(d)
    return out


# ----------------------------------------------------------------------------- the report
def _f(v, digits=4) -> str:
    return "" if v is None or v != v else f"{v:.{digits}f}"


def _pm(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} +- {np.std(values, ddof=1):.4f}"


def report(table: pd.DataFrame, studies: dict) -> str:
    t = table.assign(recipe=table["recipe"].fillna(BASE))
    chosen = t[t["setting"] == "none"]
    recipe = {m: t[t["model"] == m]["recipe"].iloc[0] for m in studies}
    # sections 1 and 3: the committed recipe's runs drawn by type; section 4: the levers
    models = [m for m in studies if m != "committed" and recipe[m] == BASE]
    levers = [m for m in studies if m != "committed" and recipe[m] != BASE]

    def value(model, scored, typ="all", setting="none", masks=None, key="dsb"):
        sel = t[(t["model"] == model) & (t["scored"] == scored) & (t["type"] == typ)
                & (t["setting"] == setting)]
        if masks:
            sel = sel[sel["masks"] == masks]
        return float(sel[key].iloc[0]) if len(sel) else float("nan")

    lines = ["# Labels, validation and object filters (issue 22)", "",
             "Written by `python benchmarks/validation_study.py` from the runs below (the "
             "`cpu` recipe, 15 x 100 steps, its validation images drawn by image type: "
             "`--split-by type`). Every row: 8-fold TTA, the post-processing chosen on the "
             "validation images alone (`calibration.select_postprocessing`, against the fixed "
             "masks), native resolution. Validation: the run's held-out stage1_train images "
             "scored against the **fixed** masks, whichever labels the run learnt from (the "
             "images the fixed labels drop are not scored). stage1_test is scored only to see "
             "how well the validation predicts it: nothing below was chosen on it.", ""]
    # 1. labels
    lines += ["## 1. Original or fixed stage1_train labels", "", *RUN_TABLE]
    stained_val = {}

    def run_row(m):
        s = studies[m]
        sel = chosen[(chosen["model"] == m) & (chosen["type"].isin(STAINED))]
        v = sel[sel["scored"] == "validation"]
        w = sel[sel["scored"] == TEST]
        sv = float((v["dsb"] * v["images"]).sum() / v["images"].sum()) if len(v) else np.nan
        sw = float((w["dsb"] * w["images"]).sum() / w["images"].sum()) if len(w) else np.nan
        stained_val[m] = (sv, sw)
        row = t[(t["model"] == m)].iloc[0]
        ch = s["chosen"]
        command = train_command(row["labels"], int(row["seed"]), recipe[m], s.get("folder"))
        return (f"| {m} | {row['labels']} | {row['seed']} | {s.get('best_epoch')} "
                f"| {ch['postprocess']} {ch.get('threshold', '')}, dilation "
                f"{ch.get('dilation')} | {_f(value(m, 'validation'))} | {_f(sv)} "
                f"| {_f(value(m, TEST))} | {_f(sw)} | `{command}` |")

    def differences(pairs) -> list:
        """The seed-by-seed table of (twin, changed run) pairs: the change minus its twin."""
        out = ["| seed | validation DSB | validation DSB, stained | stage1_test DSB "
               "| stage1_test DSB, stained |", "|---|---|---|---|---|"]
        for o, m in pairs:
            out.append(f"| {t[t['model'] == m]['seed'].iloc[0]} "
                       f"| {value(m, 'validation') - value(o, 'validation'):+.4f} "
                       f"| {stained_val[m][0] - stained_val[o][0]:+.4f} "
                       f"| {value(m, TEST) - value(o, TEST):+.4f} "
                       f"| {stained_val[m][1] - stained_val[o][1]:+.4f} |")
        return out

    lines += [run_row(m) for m in models]
    by_labels = {}
    for m in models:
        lab = t[t["model"] == m]["labels"].iloc[0]
        by_labels.setdefault(lab, []).append(m)
    lines += ["", "Over seeds (mean +- standard deviation of the runs):", "",
              "| labels | runs | validation DSB | validation DSB, stained | stage1_test DSB "
              "| stage1_test DSB, stained |", "|---|---|---|---|---|---|"]
    for lab, ms in sorted(by_labels.items()):
        lines.append(f"| {lab} | {len(ms)} | {_pm([value(m, 'validation') for m in ms])} "
                     f"| {_pm([stained_val[m][0] for m in ms])} "
                     f"| {_pm([value(m, TEST) for m in ms])} "
                     f"| {_pm([stained_val[m][1] for m in ms])} |")
    seeds = sorted({int(t[t['model'] == m]['seed'].iloc[0]) for m in models})
    pairs = [(f"original-s{s}", f"fixed-s{s}") for s in seeds
             if f"original-s{s}" in studies and f"fixed-s{s}" in studies]
    if pairs:
        lines += ["", "Fixed minus original, seed by seed (the same seed, the same validation "
                  "images):", "", *differences(pairs)]
    # 2. validation against test, per type
    lines += ["", "## 2. How well each validation predicts stage1_test", "",
              "Validation DSB against stage1_test DSB, overall and per image type (the "
              "post-processing chosen on the model's validation images). `committed` is the "
              "committed `cpu` model (`models/cpu`), whose validation images were drawn at "
              "random (10 % of stage1_train, `split_seed` 42, recomputed from its profile); "
              "its row is scored against the original masks it was chosen on, and its "
              "fixed-mask score is in brackets. The others hold out images by type.", "",
              "| model | validation drawn | type | validation images | validation DSB "
              "| stage1_test images | stage1_test DSB | test - validation |",
              "|---|---|---|---|---|---|---|---|"]
    types = [ty for ty in image_types.TYPE_ORDER if ty in set(t["type"])] + ["all"]
    for m in studies:
        for ty in types:
            masks = "original" if m == "committed" else "fixed"
            v = value(m, "validation", ty, masks=masks)
            vf = value(m, "validation", ty, masks="fixed")
            n_v = value(m, "validation", ty, masks=masks, key="images")
            w = value(m, TEST, ty)
            n_w = value(m, TEST, ty, key="images")
            if v != v and w != w:
                continue
            extra = f" ({_f(vf)})" if m == "committed" and vf == vf else ""
            kind = t[t["model"] == m]["validation"].iloc[0]
            lines.append(f"| {m} | {kind} | {ty} | {'' if n_v != n_v else int(n_v)} "
                         f"| {_f(v)}{extra} | {'' if n_w != n_w else int(n_w)} | {_f(w)} "
                         f"| {'' if v != v or w != w else f'{w - v:+.4f}'} |")
    # ranking agreement: does a lever move validation and test the same way?
    twin = {m: t[t["model"] == m].iloc[0] for m in levers}  # its run of section 1
    lever_pairs = [(f"{twin[m]['labels']}-s{int(twin[m]['seed'])}", m) for m in levers]
    lever_pairs = [(o, m) for o, m in lever_pairs if o in studies]
    lines += ["", "Does a lever move the validation and the test the same way? For every "
              "object filter against none (section 3) on every model, for fixed against "
              "original labels on every seed, and for each recipe lever of section 4 against "
              "the same seed's run: the sign of the change in validation DSB "
              "against the sign of the change in stage1_test DSB (changes under 0.002 count "
              "as none).", "",
              "| validation | levers | same direction | opposite | validation flat |",
              "|---|---|---|---|---|"]
    for kind in ("random", "type"):
        agree = opposite = flat = 0
        for m in studies:
            if t[t["model"] == m]["validation"].iloc[0] != kind:
                continue
            masks = "original" if m == "committed" else "fixed"
            for setting in FILTERS:
                if setting == "none":
                    continue
                dv = value(m, "validation", setting=setting, masks=masks) - \
                    value(m, "validation", masks=masks)
                dw = value(m, TEST, setting=setting) - value(m, TEST)
                a, o, f = _direction(dv, dw)
                agree, opposite, flat = agree + a, opposite + o, flat + f
        if kind == "type":
            for o, f in pairs + lever_pairs:
                a, op, fl = _direction(value(f, "validation") - value(o, "validation"),
                                       value(f, TEST) - value(o, TEST))
                agree, opposite, flat = agree + a, opposite + op, flat + fl
        n = agree + opposite + flat
        if n:
            lines.append(f"| {kind} | {n} | {agree} | {opposite} | {flat} |")
    # 3. filters
    lines += ["", "## 3. Object filters", "",
              "Change in DSB from adding one filter to the chosen post-processing, mean over "
              "the runs drawn by type (validation: fixed masks), overall and on the stained "
              "validation images; stage1_test beside it as a check.", "",
              "| filter | validation | validation, fluorescence | validation, stained "
              "| stage1_test | committed model: its validation | committed model: stage1_test |",
              "|---|---|---|---|---|---|---|"]

    def pooled(m, scored, setting, which, masks=None):
        sel = t[(t["model"] == m) & (t["scored"] == scored) & (t["setting"] == setting)
                & (t["type"] != "all")]
        if masks:
            sel = sel[sel["masks"] == masks]
        sel = sel[sel["type"].isin(STAINED)] if which == "stained" else \
            sel[~sel["type"].isin(STAINED)] if which == "fluorescence" else sel
        return float((sel["dsb"] * sel["images"]).sum() / sel["images"].sum()) \
            if len(sel) else float("nan")

    for setting in FILTERS:
        if setting == "none":
            continue
        cells = []
        for scored, which in (("validation", "all"), ("validation", "fluorescence"),
                              ("validation", "stained"), (TEST, "all")):
            d = [pooled(m, scored, setting, which, "fixed" if scored == "validation" else None)
                 - pooled(m, scored, "none", which, "fixed" if scored == "validation" else None)
                 for m in models]
            cells.append(f"{np.mean(d):+.4f}" if d else "")
        if "committed" in studies:
            cells += [f"{value('committed', 'validation', setting=setting, masks='original') - value('committed', 'validation', masks='original'):+.4f}",
                      f"{value('committed', TEST, setting=setting) - value('committed', TEST):+.4f}"]
        else:
            cells += ["", ""]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    # the best filter on validation, and what it does on the test
    gains = {}
    for setting in FILTERS:
        if setting != "none" and models:
            gains[setting] = (np.mean([value(m, "validation", setting=setting) -
                                       value(m, "validation") for m in models]),
                              np.mean([value(m, TEST, setting=setting) - value(m, TEST)
                                       for m in models]))
    if gains:
        best = max(gains, key=lambda k: gains[k][0])
        lines += ["", f"Best on the validation images (mean over the {len(models)} runs drawn "
                  f"by type): **{best}**, {gains[best][0]:+.4f} DSB; on stage1_test the same "
                  f"setting gives {gains[best][1]:+.4f}."]
    lines += lever_section(t, levers, lever_pairs, value, run_row, differences, stained_val)
    timed = [m for m, s in studies.items() if not s.get("recorded")
             and not s.get("by_fingerprint") and s.get("seconds") is not None]
    if timed:
        lines += ["", "Predicted in "
                  f"{sum(studies[m].get('predict_seconds') or 0 for m in timed) / 60:.0f} minutes"
                  f" and scored in {sum(studies[m]['seconds'] for m in timed) / 60:.0f} minutes"
                  f" on {runs.machine()['cores']} CPU cores ({', '.join(timed)})."]
    known = [m for m, s in studies.items() if s.get("by_fingerprint")]
    if known:
        lines += ["", "Not predicted again (the committed record holds the scores of this very "
                  f"model file, by its fingerprint): {', '.join(known)}."]
    recorded = [m for m, s in studies.items() if s.get("recorded")]
    if recorded:
        lines += ["", f"Taken from the committed record (`{RECORD.relative_to(REPO).as_posix()}` "
                  "and the CSV; their run folders, which are not committed, are not on the "
                  f"machine that wrote this report): {', '.join(recorded)}."]
    return "\n".join(lines) + "\n"


def lever_section(t, levers, lever_pairs, value, run_row, differences, stained_val) -> list:
    """Section 4: each recipe lever against the committed recipe, seed by seed (the same
    labels, split and seeds), overall and per image type, the stained types first."""
    if not levers:
        return []
    lines = ["", "## 4. A recipe lever for stained tissue, judged on the stained validation "
             "images", "",
             "The committed `cpu` recipe with one option changed, trained on the original "
             "labels with the validation drawn by type and the seeds of section 1, so that "
             "each run has a twin there that differs in that option alone. Judged on the "
             "stained validation images (grey + purple + H&E), where it is meant to help; "
             "stage1_test beside it as a check.", "", *RUN_TABLE]
    lines += [run_row(m) for m in levers]
    recipes = {}
    for o, m in lever_pairs:
        recipes.setdefault(t[t["model"] == m]["recipe"].iloc[0], []).append((o, m))
    types = [ty for ty in image_types.TYPE_ORDER if ty in set(t["type"])]
    types = [ty for ty in types if ty in STAINED] + [ty for ty in types if ty not in STAINED]
    for rec, pairs in recipes.items():
        lines += ["", f"`{rec}` minus the committed recipe, seed by seed:", "",
                  *differences(pairs)]
        lines += ["", f"Per image type, mean over the {len(pairs)} seeds (validation: fixed "
                  f"masks; the post-processing each run chose, no object filter):", "",
                  "| type | validation images | validation DSB, committed recipe "
                  f"| validation DSB, `{rec}` | change | stage1_test images "
                  "| stage1_test DSB, committed recipe "
                  f"| stage1_test DSB, `{rec}` | change |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for ty in types + ["all"]:
            cells = []
            for scored, masks in (("validation", "fixed"), (TEST, None)):
                n = value(pairs[0][1], scored, ty, masks=masks, key="images")
                a = [value(o, scored, ty, masks=masks) for o, _ in pairs]
                b = [value(m, scored, ty, masks=masks) for _, m in pairs]
                if n != n:
                    cells += ["", "", "", ""]
                    continue
                cells += [str(int(n)), _pm(a), _pm(b),
                          f"{np.mean(np.subtract(b, a)):+.4f}"]
            lines.append(f"| {ty} | " + " | ".join(cells) + " |")
        gain = [stained_val[m][0] - stained_val[o][0] for o, m in pairs]
        wins = sum(g > 0 for g in gain)
        lines += ["", f"On the stained validation images `{rec}` changes the DSB by "
                  f"{np.mean(gain):+.4f} on average, up on {wins} of {len(pairs)} seeds; "
                  f"overall by {np.mean([value(m, 'validation') - value(o, 'validation') for o, m in pairs]):+.4f}."]
    return lines


def _direction(dv: float, dw: float, flat: float = 0.002) -> tuple[int, int, int]:
    """(same, opposite, validation flat) for one lever's change on validation and test."""
    if abs(dv) < flat:
        return 0, 0, 1
    if abs(dw) < flat or np.sign(dv) != np.sign(dw):
        return 0, 1, 0
    return 1, 0, 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", help="run folders (default: the finished runs/labels/*)")
    ap.add_argument("--data", help="data root (default: $NUCSEG_DATA, else ./data)")
    ap.add_argument("--no-committed", action="store_true",
                    help="leave out the committed cpu model")
    ap.add_argument("--no-record", action="store_true",
                    help="leave out the runs of the committed record whose folders are absent")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--dry-run", type=int, metavar="N", help="score N images of each split of "
                    "the committed model only, nothing cached or written but the report to "
                    "runs/labels/dry-run.md (a check of this script)")
    a = ap.parse_args(argv)
    root = data_mod.find_data_root(a.data)
    if data_mod.is_synthetic(root):
        ap.error("the study needs the DSB2018 data (NUCSEG_DATA)")
    if a.dry_run:
        studies = {"committed": study_model("committed", CPU_MODEL, committed_split(root), root,
                                            not a.quiet, limit=a.dry_run)}
        table = pd.DataFrame(studies["committed"]["rows"], columns=COLUMNS)
        runs.write_text(RUNS / "dry-run.md", report(table, studies))
        print(f"wrote {RUNS / 'dry-run.md'}")
        return 0
    folders = [Path(r) for r in a.runs] or finished_runs()
    record = {} if a.no_record else recorded_studies()
    studies = {}
    if not a.no_committed:
        studies["committed"] = cached_study("committed", CPU_MODEL, committed_split(root),
                                            root, not a.quiet, record.get("committed"))
    for f in folders:
        study = cached_study(f.name, f / "model.npz", f, root, not a.quiet, record.get(f.name))
        rec = recipe_of(runs.read_json(runs.RunLayout(f).run_json).get("profile", {}))
        for r in study["rows"]:  # derived from the run's profile, not cached with its scores
            r["recipe"] = rec
        study["folder"] = (f.resolve().relative_to(REPO.resolve()) if
                           f.resolve().is_relative_to(REPO.resolve()) else f).as_posix()
        studies[f.name] = study
        print(f"{f.name}: scored", flush=True)
    absent = {n: s for n, s in record.items() if n not in studies and n != "committed"}
    if absent:
        print(f"from the committed record (folders absent): {', '.join(absent)}")
    trained = {**{n: s for n, s in studies.items() if n != "committed"}, **absent}
    studies = {**{n: s for n, s in studies.items() if n == "committed"},
               **dict(sorted(trained.items(), key=lambda i: (i[1].get("folder", ""), i[0])))}
    table = pd.DataFrame([r for s in studies.values() for r in s["rows"]], columns=COLUMNS)
    table["recipe"] = table["recipe"].fillna(BASE)  # the committed model: the cpu recipe
    # the report is computed from the scores as the CSV keeps them (4 decimals), so that a run
    # taken from the committed record and a run scored again give the same report
    table[SCORES] = table[SCORES].astype(float).round(4)
    runs.write_table(table, OUT.with_suffix(".csv"))
    runs.write_json(RECORD, {n: {k: v for k, v in s.items() if k not in ("rows", "recorded", "by_fingerprint")}
                             for n, s in studies.items()})
    runs.write_text(OUT.with_suffix(".md"), report(table, studies))
    print(f"wrote {OUT.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
