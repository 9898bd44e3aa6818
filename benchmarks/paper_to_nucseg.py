"""From the paper's recipe to nucseg's, one change at a time (issue 35, part 2).

Every step is trained at the budget of the committed ``cpu`` model (the pixels its training
sees) with its encoder (ResNet-18 from random weights, its narrow decoder), on
stage1_train alone, and judged on the same 67 validation images (``split_seed`` 42, 10 %);
stage1_test is reported for every step and chooses nothing (``models/TEST_LEDGER.md``).

The steps (:data:`STEPS`), each adding one group of nucseg's departures to the one before:

1. ``paper``: the paper's recipe (whole images resized to 256x256, pixel values / 255, the
   paper's augmentation, Jaccard loss, one mask output, Adam at a constant 1e-3, batches of
   32, the best epoch by validation loss, 8-fold TTA at 256, Otsu + distance-marker watershed),
   for 10 epochs (190 steps of 32: the pixels the ``cpu`` recipe's 1,500 steps of 16 crops of
   128 px see).
2. ``native``: how the network sees the images: each rescaled so its nuclei are about 20 px
   across, random 128-px crops, percentile normalisation with bright backgrounds inverted,
   nucseg's augmentation (any rotation, quarter turns, colour and intensity), stained images
   drawn more often (modality balance 0.5), a cosine schedule, 1,500 steps of 16. Still one
   mask output, Jaccard loss and the paper's watershed.
3. ``touching``: a second output for the zone where nuclei touch, BCE + Jaccard loss; still the
   paper's watershed (on the mask output). This is the ``cpu`` recipe's training: the
   committed ``cpu`` model is its seed 42.
4. ``touching watershed``: the same models, seeds from the mask minus the touching zone.
5. ``calibrated``: threshold, dilation and marker spacing chosen on the validation images.
6. ``object filters``: the minimum size and mean probability chosen on the validation images:
   the committed ``cpu`` pipeline.

Steps 4-6 train nothing. Beside the ``paper`` step, one row that is not a step of the recipe
but a check of its row: ``paper, BN re-estimated``, the same models with their BatchNorm
layers' moving statistics re-estimated on :data:`BN_BATCHES` batches of their own training
stream (a forward pass in training mode, weights unchanged; ``runs/.../paper-bn-s<seed>``,
made from the paper run when it is scored). At this budget the paper's models make 190
optimizer steps, too few for BatchNorm's moving averages (momentum 0.99) to settle.

Usage:

    python benchmarks/paper_to_nucseg.py train paper --seed 42   # one training (resumable)
    python benchmarks/paper_to_nucseg.py                          # score what is trained

Writes ``benchmarks/paper_to_nucseg.md`` and ``.csv`` (one row per step, seed and image type);
the runs are in ``runs/paper_to_nucseg/<step>-s<seed>`` (not committed; a step whose runs are
absent is listed with the command that trains it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from common import REPO  # first: puts the repository on sys.path

import validation_study as vs  # noqa: E402 (the same scoring, and its caches)

from nucseg_utils import data as data_mod  # noqa: E402
from nucseg_utils import training  # noqa: E402
from nucseg_utils.core import runs  # noqa: E402
from nucseg_utils.core.profiles import RECIPES  # noqa: E402
from nucseg_utils.core.settings import PostprocessSettings  # noqa: E402
from nucseg_utils.evaluation import calibration  # noqa: E402
from nucseg_utils.inference.preprocessing import normalize  # noqa: E402
from nucseg_utils.model import network as model_mod  # noqa: E402
from nucseg_utils.model.network import CPU_MODEL, read_config  # noqa: E402
from nucseg_utils.training.augmentation import PatchSampler  # noqa: E402

RUNS = REPO / "runs" / "paper_to_nucseg"
OUT = REPO / "benchmarks" / "paper_to_nucseg"
SEEDS = (42, 43, 44)
CPU_NETWORK = {"backbone": "resnet18", "decoder_filters": [64, 32, 16, 16, 16],
               "encoder_weights": None}
HERE = {"train_splits": ["stage1_train"], "val_fraction": 0.1, "split_seed": 42}

# the trained steps, each a recipe; the seed is set per run
TRAINED = {
    "paper": RECIPES["paper"].replace(
        "paper-cpu", **CPU_NETWORK, **HERE, micro_batch=None, mixed_precision=False,
        checkpoint_every=1, epochs=10, steps_per_epoch=None),
    "native": RECIPES["cpu"].replace("native", targets=["mask"], loss="jaccard",
                                     postprocess="paper"),
    "touching": RECIPES["cpu"].replace("cpu", postprocess="paper"),
}


# the paper step's models with their BatchNorm statistics re-estimated (not a training step)
PAPER_BN = "paper-bn"
BN_BATCHES = 100     # batches of the recipe's training stream (3,200 images' worth)
BN_MOMENTUM = 0.9    # 0.9^100: nothing of the trained statistics is left
BN_SEED_OFFSET = 1000  # the batches are drawn with seed + this: not the ones trained on

# the steps in order: (name, what it adds, the trained step whose models it scores)
STEPS = [
    ("paper", "the paper's recipe at this budget", "paper"),
    ("paper, BN re-estimated", "(a check of the row above, not a step: its BatchNorm "
     f"statistics re-estimated on {BN_BATCHES} batches of its training stream)", PAPER_BN),
    ("native scale", "nuclei at 20 px in 128-px crops, percentile normalisation, nucseg's "
     "augmentation, modality balance, cosine schedule, 1,500 steps of 16", "native"),
    ("touching target", "a touching-zone output, BCE + Jaccard loss", "touching"),
    ("touching watershed", "seeds from the mask minus the touching zone", "touching"),
    ("calibrated", "threshold, dilation, marker spacing chosen on validation", "touching"),
    ("object filters", "minimum size and mean probability chosen on validation: the "
     "committed cpu pipeline", "touching"),
]
PAPER_PP = PostprocessSettings(method="paper").config()        # the paper's, its defaults
TOUCHING_PP = PostprocessSettings(method="touching").config()  # nucseg's, uncalibrated
COLUMNS = ["step", "seed", "scored", "type", "images", "dsb", "recall", "f1", "setting",
           "train_minutes"]


def run_dir(step: str, seed: int) -> Path:
    return RUNS / f"{step}-s{seed}"


def command(step: str, seed: int) -> str:
    return f"python benchmarks/paper_to_nucseg.py train {step} --seed {seed}"


def bn_reestimated(seed: int, root) -> Path | None:
    """The folder of the paper step's seed with its BatchNorm statistics re-estimated (made
    once, from the paper run: its split, record and history copied, ``model.npz`` the
    network with new moving means and variances), or None when the paper run is absent."""
    import shutil

    import tensorflow as tf
    folder, source = run_dir(PAPER_BN, seed), model_of("paper", seed, root)
    if source is None or (folder / "run.json").is_file():
        return folder if source is not None else None
    model_path, paper_folder = source
    recipe = TRAINED["paper"].replace(seed=seed + BN_SEED_OFFSET)
    config = model_mod.read_config(model_path)
    net = model_mod.fresh_network(model_path)  # its own: the statistics change in place
    table, samples = training.load_training_data(recipe, root, progress=False)
    train = [s for s, subset in zip(samples, table["subset"]) if subset == "train"]
    sampler = PatchSampler([normalize(s.image, recipe.network.normalization) for s in train],
                           [s.labels.astype(np.int32) for s in train], recipe)
    norms = [layer for layer in net.layers
             if isinstance(layer, tf.keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = BN_MOMENTUM
    for step in range(BN_BATCHES):
        net(sampler.batch(step)[0], training=True)  # moves the statistics, not the weights
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("split.csv", "history.csv"):
        shutil.copy2(paper_folder / name, tmp / name)
    model_mod.save_model(net, tmp / "model.npz", config)
    info = runs.read_json(paper_folder / "run.json")
    runs.update_run_json(tmp, **{**info, "bn_reestimated": {"run": paper_folder.name,
        "from": model_path.name, "batches": BN_BATCHES,
        "momentum": BN_MOMENTUM, "seed": seed + BN_SEED_OFFSET}})
    tmp.rename(folder)
    return folder


def model_of(trained: str, seed: int, root) -> tuple[Path, Path] | None:
    """(model file, run folder) of a trained step's seed, or None when it is not trained.
    The ``cpu`` recipe's seed 42 is the committed ``cpu`` model (its validation split
    recomputed, as the validation study does)."""
    if trained == "touching" and seed == 42:
        return CPU_MODEL, vs.committed_split(root)
    folder = run_dir(trained, seed)
    info = runs.read_json(runs.RunLayout(folder).run_json) if (folder / "run.json").is_file() \
        else {}
    if not info.get("completed"):
        return None
    return folder / "model.npz", folder


def score_model(trained: str, seed: int, root, progress: bool) -> list[dict]:
    """Every row of one trained model: each step that scores it, on its validation images
    and on stage1_test, overall and per image type."""
    found = model_of(trained, seed, root)
    if found is None:
        return []
    model_path, folder = found
    name = "committed" if model_path == CPU_MODEL else folder.name
    maps, _ = vs.predict_model(name, model_path, folder, root, progress)
    val = {k[4:]: v for k, v in maps.items() if k.startswith("val/")}
    test = {k[5:]: v for k, v in maps.items() if k.startswith("test/")}
    split = pd.read_csv(runs.RunLayout(folder).split, dtype={"id": str})
    val_types = dict(zip(split["id"], split["type"]))
    source = data_mod.open_split("stage1_train", root)
    gt_val = calibration.GroundTruth(source, val)
    source.close()
    source = data_mod.open_split(vs.TEST, root)
    gt_test = calibration.GroundTruth(source, test)
    source.close()
    config = read_config(model_path)
    info = runs.read_json(runs.RunLayout(folder).run_json) if name != "committed" else \
        runs.read_json(CPU_MODEL.parent / "run.json")
    minutes = round(float(info.get("train_seconds") or np.nan) / 60, 1)
    settings = {}
    for step, _, of in STEPS:
        if of != trained:
            continue
        if step in ("paper", "paper, BN re-estimated", "native scale", "touching target"):
            settings[step] = {**config, **PAPER_PP}
        elif step == "touching watershed":
            settings[step] = {**config, **TOUCHING_PP}
    if trained == "touching":
        chosen, table, _ = calibration.select_postprocessing(
            model_path, folder, root, predicted=[(gt_val, val)], labels="original")
        plain = calibration.unfiltered(table)
        settings["calibrated"] = {**config, **TOUCHING_PP, **calibration.setting_of(
            plain.loc[plain["dsb"].idxmax()]), **calibration.NO_FILTERS}
        settings["object filters"] = {**config, **TOUCHING_PP, **chosen}
    rows = []
    for step, cfg in settings.items():
        setting = ", ".join(f"{k} {cfg[k]:g}" if isinstance(cfg[k], float) else
                            f"{k} {cfg[k]}" for k in TOUCHING_PP if cfg[k] != PAPER_PP.get(k)
                            or k == "postprocess")
        base = {"step": step, "seed": seed, "setting": setting, "train_minutes": minutes}
        rows += vs.rows_of(vs.score(val, gt_val, cfg), val_types,
                           {**base, "scored": "validation"})
        rows += vs.rows_of(vs.score(test, gt_test, cfg), vs.test_types(root),
                           {**base, "scored": vs.TEST})
    return rows


def train(step: str, seed: int, progress: bool = True) -> Path:
    """Train (or resume) one step's run; returns its folder."""
    folder = run_dir(step, seed)
    recipe = TRAINED[step].replace(seed=seed)
    root = data_mod.find_data_root(None, "stage1_train")
    training.train(recipe, folder, root=root, resume=True, progress=progress)
    return folder


def _mean(values) -> str:
    v = [x for x in values if not pd.isna(x)]
    if not v:
        return ""
    if len(v) == 1:
        return f"{v[0]:.4f}"
    return f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}"


def _seed_spread(alls: pd.DataFrame) -> str:
    """One sentence on the seed spread measured here: the largest standard deviation of
    validation DSB over the seeds of a step run with two or more ('' when none is)."""
    val = alls[alls["scored"] == "validation"].groupby("step", sort=False)["dsb"]
    sd = val.std(ddof=1)[val.count() >= 2]
    if sd.empty:
        return ""
    step = sd.idxmax()
    return (f"Here the seeds of the '{step}' step give a standard deviation of {sd[step]:.4f} "
            f"({val.count()[step]} seeds).")


SPREAD = 0.011   # a step's validation DSB moves by this with the seed alone (the intro's)
MIN_IMAGES = 10  # the image types a per-type gain or loss is told for


def _changes(table: pd.DataFrame) -> list[str]:
    """What each step does to the mean validation DSB of the one before (a gain or a loss
    when it moves by more than :data:`SPREAD`), its stage1_test change beside it, the image
    types it loses on, and where the paper's recipe beats the last step."""
    val = table[table["scored"] == "validation"]
    means = val.groupby(["step", "type"], sort=False)["dsb"].mean().unstack()
    test = table[(table["scored"] == vs.TEST) & (table["type"] == "all")].groupby(
        "step")["dsb"].mean()
    images = val.groupby("type")["images"].max()
    types = [t for t in images.index if t != "all" and images[t] >= MIN_IMAGES]
    chain = [s for s, _, of in STEPS if of != PAPER_BN and s in means.index]
    lines = []
    for before, step in zip(chain, chain[1:]):
        d = means.loc[step, "all"] - means.loc[before, "all"]
        verdict = "a gain" if d > SPREAD else "a loss" if d < -SPREAD else \
            "within the seed spread"
        lost = [f"{t} {means.loc[step, t] - means.loc[before, t]:+.3f}" for t in types
                if means.loc[step, t] - means.loc[before, t] < -SPREAD]
        lines.append(f"- **{step}** after {before}: validation {d:+.4f} ({verdict}), "
                     f"stage1_test {test.get(step, np.nan) - test.get(before, np.nan):+.4f}"
                     + (f"; loses on {', '.join(lost)}" if lost else "") + ".")
    check = STEPS[1][0]  # the paper's models with settled BatchNorm: a fairer floor
    if len(chain) > 1 and check in means.index:
        d = means.loc[chain[1], "all"] - means.loc[check, "all"]
        lines.append(f"- **{chain[1]}** after {check} (the check row): validation {d:+.4f}, "
                     f"stage1_test {test.get(chain[1], np.nan) - test.get(check, np.nan):+.4f}.")
    if len(chain) > 1:
        last = chain[-1]
        papers = [s for s, _, of in STEPS[:2] if s in means.index]
        better = [f"{t} ({p} {means.loc[p, t]:.3f} against {means.loc[last, t]:.3f})"
                  for p in papers for t in types if means.loc[p, t] > means.loc[last, t]]
        lines.append(f"- The paper's recipe (either of its rows) against the last step, on "
                     f"each image type of {MIN_IMAGES} or more validation images: "
                     + (f"better on {', '.join(better)}." if better else
                        "better on none of them."))
    if not lines:
        return []
    return ["", f"What each step does, on the mean validation DSB over its seeds (a gain or "
            f"a loss when it moves by more than {SPREAD}; the per-type losses on the image "
            f"types of {MIN_IMAGES} or more validation images; stage1_test beside it, "
            f"choosing nothing):", "", *lines]


def report(table: pd.DataFrame) -> str:
    """The staircase: one row per step (mean ± standard deviation over the seeds run), then
    the validation and test scores per image type, then what is left to train."""
    alls = table[table["type"] == "all"]
    spread = _seed_spread(alls)
    lines = ["# From the paper's recipe to nucseg, one change at a time", "",
             "Written by `benchmarks/paper_to_nucseg.py` (its docstring says what each step "
             "is). Every step trains at the `cpu` model's budget with its encoder (ResNet-18 "
             "from random weights, narrow decoder) on stage1_train alone, and is judged on the "
             "same 67 validation images (DSB at native resolution, 8-fold TTA, Kaggle's "
             "original masks). stage1_test is scored for every step and chooses nothing "
             "(`models/TEST_LEDGER.md`). One training of the `cpu` recipe varies by about "
             f"{SPREAD} validation DSB with the seed (three earlier trainings of it, calibrated "
             "without the object filters: 0.5655, 0.5446, 0.5581): a step within that of the "
             "one before has not shown an effect." +
             (f" {spread}" if spread else ""), "",
             "The paper's step makes 190 optimizer steps of 32 in this budget (the paper's own "
             "training, 100 epochs, about 1,700): its validation loss was still falling at "
             "its last epoch, and its BatchNorm layers' moving statistics (momentum 0.99) "
             "still hold 0.99^190 = 15 % of their initial values. Its row is what the recipe "
             "reaches at this budget, a floor for the recipe, not its value. The row below it "
             "is a check of that, not a step: the same models with their BatchNorm statistics "
             f"re-estimated on {BN_BATCHES} batches of 32 of their training stream (momentum "
             f"{BN_MOMENTUM}, a forward pass in training mode: no weight changes), scored "
             "the same way.", "",
             "Validation and stage1_test DSB: the mean ± standard deviation over the seeds "
             "run; training: the minutes of each seed's run (as its run.json records them).",
             "",
             "| step | what it adds | seeds | validation DSB | stage1_test DSB | training "
             "(min) | post-processing |", "|---|---|---|---|---|---|---|"]
    for step, what, trained in STEPS:
        rows = alls[alls["step"] == step]
        val, test = rows[rows["scored"] == "validation"], rows[rows["scored"] == vs.TEST]
        seeds = sorted(val["seed"].unique())
        lines.append(f"| {step} | {what} | {', '.join(map(str, seeds)) or 'not run'} | "
                     f"{_mean(val['dsb'])} | {_mean(test['dsb'])} | "
                     f"{', '.join(f'{m:.0f}' for m in val['train_minutes'])} | "
                     f"{'; '.join(sorted(set(val['setting'])))} |")
    lines += _changes(table)
    for scored in ("validation", vs.TEST):
        part = table[table["scored"] == scored]
        if part.empty:
            continue
        means = part.groupby(["step", "type"], sort=False)["dsb"].mean().unstack()
        images = part.groupby("type", sort=False)["images"].max()
        order = [t for t in part["type"].drop_duplicates() if t != "all"] + ["all"]
        steps = [s for s, _, _ in STEPS if s in means.index]
        lines += ["", f"DSB per image type on {scored} (mean over the seeds run):", "",
                  "| step | " + " | ".join(f"{t} ({images[t]})" for t in order) + " |",
                  "|---|" + "---|" * len(order)]
        for step in steps:
            lines.append(f"| {step} | " + " | ".join(
                "" if pd.isna(means.loc[step].get(t)) else f"{means.loc[step][t]:.3f}"
                for t in order) + " |")
    todo = [(t, seed) for t in TRAINED for seed in SEEDS
            if not ((alls["seed"] == seed) & alls["step"].isin(
                [s for s, _, of in STEPS if of == t])).any()]
    if todo:
        lines += ["", "Not trained yet (each about as long as the trained runs of its step, "
                  "or the cpu model's 46 minutes):", ""]
        lines += [f"- `{command(t, seed)}`" for t, seed in todo]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train one step's run (resumes its checkpoint)")
    t.add_argument("step", choices=list(TRAINED))
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.command == "train":
        print(train(a.step, a.seed, progress=not a.quiet))
        return 0
    root = data_mod.find_data_root(None, "stage1_train")
    if data_mod.is_synthetic(root):
        ap.error("the staircase needs the DSB2018 data (NUCSEG_DATA)")
    rows = []
    for seed in SEEDS:
        bn_reestimated(seed, root)
    for trained in [*TRAINED, PAPER_BN]:
        for seed in SEEDS:
            got = score_model(trained, seed, root, progress=True)
            if got:
                print(f"{trained} seed {seed}: scored", flush=True)
            rows += got
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["dsb"] = table["dsb"].astype(float).round(4)
    order = {step: k for k, (step, _, _) in enumerate(STEPS)}  # the steps in order, then seeds
    table = table.sort_values(["step", "seed"], kind="stable", key=lambda c: c.map(order)
                              if c.name == "step" else c).reset_index(drop=True)
    runs.write_table(table, OUT.with_suffix(".csv"))
    runs.write_text(OUT.with_suffix(".md"), report(table))
    print(f"wrote {OUT.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
