"""Publishing: a finished run's model copied to ``models/<name>/``, calibrated on its
validation images, scored on its test split, with its results file.

In: a run folder (``runs/cpu``) whose training is complete.
Out: ``model.npz`` (with the post-processing chosen on validation in its config),
``history.csv``, ``run.json``, ``validation_postprocessing.csv``, ``results.json`` and
``results.md``, and its rows in the lever table (``ablation.md``); or, with
``validation_only``, a candidate's lever rows alone.

A model that trained on stage1_test (the ``release`` profile) has no untouched DSB2018 test
set here: its test split would be stage 2, which is not available. Its results file then says
so in its first lines and gives its validation scores, overall and per image type (its
held-out images, drawn by type), and never a test score.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from nucseg_utils import data as data_mod
from nucseg_utils.core import runs
from nucseg_utils.core.profiles import train_command
from nucseg_utils.evaluation import calibration, metrics, scoring
from nucseg_utils.evaluation.evaluate import evaluate
from nucseg_utils.evaluation.protocol import (
    check_untouched,
    has_ground_truth,
    test_split_name,
    training_splits,
)
from nucseg_utils.model import engines
from nucseg_utils.model.network import (ModelSettings, read_calibration, read_config,
                                         read_model_file, read_training_config,
                                         save_calibration)
from nucseg_utils.postprocessing.methods import (
    calibrated_settings,
    postprocess_all,
    setting_label,
)

CANDIDATE = "candidate, not published: "  # how a --validation-only row starts


def publish_model(run_dir, dest, split: str | None = None, root=None,
                  progress: bool = True, validation_only: bool = False) -> dict:
    """Copy a finished run's model, history and run.json to ``dest`` (e.g. ``models/cpu``),
    evaluate the copied model on ``split`` (None: its test split; never one it trained on)
    with and without TTA, and write ``results.md`` and ``results.json`` beside it: every number
    from this one model file, with the commands.

    ``validation_only``: judge a candidate without touching the test split or ``dest``'s
    model: its post-processing is chosen and its levers measured on the validation images
    (a calibrated copy of the model under ``runs/publish/candidate``), and only its rows are
    added to ``dest``'s lever table, marked as a candidate. Publish it for real once it is
    chosen (the same model, calibrated the same way, replaces those rows)."""
    run, dest = runs.RunLayout(run_dir), Path(dest)
    run_dir = run.root
    info = runs.read_json(run.run_json)
    if not info.get("completed"):
        raise data_mod.DataError(f"{run_dir}: the training run is not complete "
                                 f"(resume it with `nucseg train --resume --out {run_dir}`)")
    seen = training_splits(run.model)
    split = split or test_split_name(seen)
    check_untouched(split, seen)  # before anything is copied
    where = Path("runs") / "publish" / "candidate" if validation_only else dest
    where.mkdir(parents=True, exist_ok=True)
    for name in (run.MODEL, run.HISTORY, run.RUN_JSON):
        with runs.atomic_path(where / name) as tmp:
            shutil.copyfile(run_dir / name, tmp)
    chosen, candidates, predicted = calibration.select_postprocessing(
        where / "model.npz", run_dir, root, progress=progress)
    runs.write_table(candidates, runs.RunLayout(where).candidates)
    save_calibration(where / "model.npz", chosen)
    levers = calibration.lever_rows(where / "model.npz", run_dir, chosen, candidates, predicted,
                                    root, progress=progress)
    train_cmd = train_command(info["profile"], run_dir)
    command = (f"{train_cmd} && nucseg publish --run {run_dir} --out {runs.shown(dest)}"
               + (" --validation-only" if validation_only else ""))  # of the lever rows
    if validation_only:
        for row in levers:
            row.update(lever=CANDIDATE + row["lever"], chosen=False, test_dsb=None)
        dest.mkdir(parents=True, exist_ok=True)
        calibration.write_ablation(levers, dest, runs.file_fingerprint(where / "model.npz"),
                                   command)
        return {"postprocessing_choice": {"chosen": chosen,
                                          "candidates": candidates.to_dict("records")},
                "levers": levers, "train_seconds": info.get("train_seconds")}
    if not has_ground_truth(split, root):
        return _publish_without_test(run, dest, info, split, chosen, candidates, predicted,
                                     levers, train_cmd, command)
    out = _evaluate_test(dest, split, root, progress, levers)
    calibration.write_ablation(levers, dest, runs.file_fingerprint(dest / "model.npz"), command)
    results = {"train_seconds": info.get("train_seconds"), "best_epoch": info.get("best_epoch"),
               "postprocessing_choice": {"chosen": chosen,
                                         "candidates": candidates.to_dict("records")},
               "levers": levers,
               "profile": info.get("profile", {}).get("name"), "evaluations": out,
               "train_command": train_cmd}
    runs.write_json(dest / "results.json", results)
    runs.write_text(dest / "results.md", results_markdown(results, split))
    return results


def _evaluate_test(dest: Path, split: str, root, progress: bool, levers: list) -> dict:
    """The published model scored on its test split, TTA on and off ({"tta", "no_tta"}:
    :func:`nucseg_utils.evaluation.evaluate`'s summaries); the lever rows of the recipes
    already chosen get their test DSB (the test split, once, for what was chosen)."""
    out = {}
    for tta in (True, False):
        out["tta" if tta else "no_tta"] = evaluate(
            dest / "model.npz", split, root, Path("runs") / "publish" / f"{split}_{tta}",
            tta=tta, progress=progress, engine=engines.exact(),
            command=f"nucseg evaluate --model {runs.shown(dest / 'model.npz')} --split {split} "
                    f"--{'tta' if tta else 'no-tta'}")
    for row in levers:
        if row.get("chosen"):
            row["test_dsb"] = out["tta"]["native"]["dsb"]
        elif row["lever"] == "without TTA":
            row["test_dsb"] = out["no_tta"]["native"]["dsb"]
    return out


def rescore_model(dest, root=None, progress: bool = True) -> dict:
    """Score a published model (``dest``: its folder, e.g. ``models/cpu``) on its test split
    again and rewrite its ``results.json`` and ``results.md``, keeping the post-processing and
    levers chosen when it was published: for a results file written before a table existed
    (the per-type table), without the run folder. The model file must be the one the results
    were written for (DataError otherwise); the numbers it had are printed beside the new."""
    dest = Path(dest)
    results = published_results(dest / "model.npz")
    if results is None or not results.get("evaluations"):
        raise data_mod.DataError(f"{dest / 'results.json'}: no test-split results of this "
                                 f"model file to score again (publish its run instead)")
    split = results["evaluations"]["tta"]["split"]
    before = {k: v["native"]["dsb"] for k, v in results["evaluations"].items()}
    results["evaluations"] = _evaluate_test(dest, split, root, progress, results["levers"])
    runs.write_json(dest / "results.json", results)
    runs.write_text(dest / "results.md", results_markdown(results, split))
    results["dsb_before"] = before
    return results


def published_results(model_path) -> dict | None:
    """``results.json`` beside a model file (``nucseg publish``'s), when it was written for
    this very file (the same fingerprint), else None."""
    path = Path(model_path)
    try:
        res = runs.read_json(path.parent / "results.json")
    except (OSError, ValueError):
        return None
    evaluations = res.get("evaluations") or {}
    if not isinstance(evaluations, dict):
        return None
    # every evaluation's fingerprint (a model without a test set has one of its own)
    marks = [e.get("model_fingerprint") if isinstance(e, dict) else None
             for e in evaluations.values()]
    marks += [res["model_fingerprint"]] if "model_fingerprint" in res else []
    if not path.is_file() or not marks or set(marks) != {runs.file_fingerprint(path)}:
        return None
    return res


def model_info(model_path) -> dict:
    """What ``nucseg info`` shows of a model file: its network and inference settings, its
    post-processing settings, each marked ``calibrated`` when ``nucseg publish`` chose it on
    the validation images (its ``results.json``, when written for this very file) or
    ``recipe`` when it is the training profile's (or the default), its provenance (epoch,
    training splits) and its published scores."""
    path = Path(model_path)
    config, _ = read_model_file(path)
    settings = ModelSettings.from_config(config)
    results = published_results(path) or {}
    chosen = read_calibration(path)
    apart = chosen is not None
    if not apart:  # calibrated before the choice was kept apart: its results say what it was
        chosen = (results.get("postprocessing_choice") or {}).get("chosen") or {}
    recipe = ModelSettings.from_config(read_training_config(path)).postprocessing.config()
    pp = settings.postprocessing.config()
    info = {"file": str(path), "fingerprint": runs.file_fingerprint(path),
            "network": {k: getattr(settings, k) for k in (
                "backbone", "decoder_filters", "targets", "input_mode", "input_size",
                "normalization")},
            "inference": {k: getattr(settings, k) for k in (
                "tta", "target_diameter", "size_probe", "scale_limits")},
            # "recipe": the training's value (unknown for a chosen one of an older file)
            "postprocessing": {k: {"value": v, "from": "calibrated" if k in chosen else "recipe",
                                   "recipe": recipe[k] if apart or k not in chosen else None}
                               for k, v in pp.items()},
            "training": {k: settings.other[k] for k in ("epoch", "val_loss", "profile")
                         if k in settings.other and not isinstance(settings.other[k], dict)},
            "train_splits": list(settings.train_splits)}
    scores = {}
    for key, ev in (results.get("evaluations") or {}).items():
        if isinstance(ev, dict) and isinstance(ev.get("native"), dict):
            scores[key] = {"split": ev.get("split") or results.get("test_split"),
                           "dsb": ev["native"].get("dsb"), "images": ev.get("images")}
    if scores:
        info["scores"] = scores
    return info


def run_profile(run_dir) -> str:
    """The name of the profile a run folder was trained with (its ``run.json``), the folder
    under ``models/`` it is published to; a DataError when the run has no record."""
    path = runs.RunLayout(run_dir).run_json
    if not path.is_file():
        raise data_mod.DataError(f"{path}: no such file; give the run folder of a training")
    return runs.read_json(path).get("profile", {}).get("name") or "cpu"


def validation_by_type(model_path, run_dir, predicted) -> tuple[dict, pd.DataFrame]:
    """The model's validation scores (its post-processing, ``predicted``: the validation
    maps of :func:`nucseg_utils.evaluation.calibration.predict_validation`): (the data-set scores, the
    table per image type, :func:`nucseg_utils.evaluation.scoring.type_table`, with the types of the
    run's ``split.csv``)."""
    config = read_config(model_path)  # the post-processing: no network needed
    per_image = {}
    for source, probs in predicted:
        per_image.update(scoring.image_results(postprocess_all(probs, config), source))
    table = pd.read_csv(runs.RunLayout(run_dir).split, dtype={"id": str})
    types = dict(zip(table["id"], table["type"]))
    return (metrics.dataset_scores([per_image[i] for i in sorted(per_image)]),
            scoring.type_table(per_image, {i: types[i] for i in per_image}))


def _publish_without_test(run, dest, info, split, chosen, candidates, predicted, levers,
                          train_cmd, command) -> dict:
    """The results of a model with no untouched test set: validation, overall and per type."""
    overall, by_type = validation_by_type(dest / "model.npz", run.root, predicted)
    name = run_profile(run.root)
    calibration.write_ablation(levers, dest, runs.file_fingerprint(dest / "model.npz"), command,
                               profile=name,
                               validation=f"the {overall['images']} held-out images of "
                                          f"{' + '.join(info['profile']['train_splits'])}")
    results = {"train_seconds": info.get("train_seconds"), "best_epoch": info.get("best_epoch"),
               "postprocessing_choice": {"chosen": chosen,
                                         "candidates": candidates.to_dict("records")},
               "levers": levers, "profile": name,
               "train_command": train_cmd, "test_split": None, "missing_test_split": split,
               "train_splits": info["profile"]["train_splits"],
               "train_labels": info["profile"].get("train_labels", "original"),
               "model_fingerprint": runs.file_fingerprint(dest / "model.npz"),
               "machine": runs.machine(), "evaluations": {},
               "validation": {**{k: overall[k] for k in ("images", "dsb", "precision",
                                                         "recall", "f1")},
                              "by_type": by_type.to_dict("records")}}
    runs.write_json(dest / "results.json", results)
    runs.write_text(dest / "results.md", validation_markdown(results))
    return results


def _chosen_words(chosen: dict) -> str:
    """The chosen post-processing in words: `touching`, threshold 0.7, dilation 0 px."""
    rest = ", ".join(f"{k.replace('_', ' ')} {v:g}" + (" px" if k == "dilation" else "")
                     for k, v in chosen.items() if k != "postprocess"
                     and not (k in calibration.FILTER_COLUMNS and not v))
    return f"`{chosen['postprocess']}`" + (f", {rest}" if rest else "")


def validation_markdown(results: dict) -> str:
    """``results.md`` of a model without an untouched test set (:func:`_publish_without_test`)."""
    v = results["validation"]
    train = " + ".join(f"{s} (fixed labels)" if s == "stage1_train" and
                       results["train_labels"] == "fixed" else s
                       for s in results["train_splits"])
    lines = [f"# The committed `{results['profile']}` model",
             "",
             f"**No untouched DSB2018 test set.** This model learnt from every labelled stage-1 "
             f"image ({train}); its test split would be `{results['missing_test_split']}` "
             f"(stage 2), which is not available here. Its numbers below are **validation** "
             f"numbers: its held-out images, drawn by image type, which chose its checkpoint "
             f"and post-processing, so they are optimistic. They are never in one row with "
             f"the `cpu` model's stage1_test scores (`../cpu/results.md`), which stays the "
             f"report's test model.",
             "",
             f"Trained with `{results['train_command']}` in "
             f"{results['train_seconds'] / 60:.0f} minutes on {results['machine']['cores']} CPU "
             f"cores (best epoch {results['best_epoch']} by validation loss). Weights in "
             f"float16 (`model.npz`, fingerprint `{results['model_fingerprint']}`). It is the "
             f"default model of `nucseg predict`, notebook 7 and `nucseg export`.",
             "",
             f"Validation ({v['images']} images, 8-fold TTA, post-processing "
             f"{_chosen_words(results['postprocessing_choice']['chosen'])}): DSB "
             f"**{v['dsb']:.4f}**, "
             f"object precision {v['precision']:.4f}, recall {v['recall']:.4f}, F1 "
             f"{v['f1']:.4f} (IoU > 0.5).",
             "",
             "Per image type (`nucseg_utils/evaluation/image_types.py`; recall and F1 at IoU > 0.7, "
             "means over the images; the last two columns are Caicedo et al. 2019's, on the "
             "106 scored stage-2 images, another test set: context, not a comparison):",
             ""]
    rows = v["by_type"]
    lines.append(runs.to_markdown(scoring.type_frame(rows), digits=3, blank_nan=True))
    if results.get("levers"):
        lines += ["", "Levers, one at a time, on the validation images:", "",
                  "| lever | validation DSB |", "|---|---|"]
        lines += [f"| {r['lever']} | {r['validation_dsb']:.4f} |" for r in results["levers"]]
    lines += ["", "**Which images to trust it on**, from the table above:", ""]
    lines += [f"- {t}" for t in scoring.trust_statement(rows)]
    return "\n".join(lines) + "\n"


def candidates_markdown(candidates: list[dict]) -> list[str]:
    """The table of every post-processing candidate calibration tried: a column per setting
    it may choose (:func:`nucseg_utils.postprocessing.calibrated_settings`, headed by its
    label), then the images, DSB and F1; a setting a candidate has not is blank."""
    columns = calibrated_settings()

    def cell(v):
        return "" if v is None or v != v else f"{v:g}"
    lines = ["| " + " | ".join(["post-processing", *map(setting_label, columns), "images",
                                "DSB", "F1"]) + " |", "|" + "---|" * (len(columns) + 4)]
    for c in candidates:
        lines.append("| " + " | ".join([c["postprocess"], *(cell(c.get(k)) for k in columns),
                                        str(c["images"]), f"{c['dsb']:.4f}",
                                        f"{c.get('f1', float('nan')):.4f}"]) + " |")
    return lines


def results_markdown(results: dict, split: str) -> str:
    """A published model's ``results.md``: its scores on ``split`` with and without TTA, the
    post-processing chosen and the levers, the scores over IoU thresholds, per modality and
    per image type, and the commands that reproduce them."""
    ev = results["evaluations"]
    first = ev.get("tta", next(iter(ev.values())))
    lines = _scores_lines(results, split) + _choice_lines(results)
    lines += _threshold_lines(first) + _modality_lines(ev) + _type_lines(first)
    lines += ["", "Commands:", ""] + [f"- `{s['command']}`" for s in ev.values()]
    # --model: without it, nucseg predict uses the default (release) model, not this one
    lines += ["", f"Check a number with the Kaggle scorer: `nucseg predict --model "
              f"{first['model']} --images <data>/{split}.zip --out runs/check` then "
              f"`nucseg score <data>/{data_mod.SOLUTIONS.get(split, 'SOLUTION.csv')} "
              f"runs/check/submission.csv`."]
    return "\n".join(lines) + "\n"


def _scores_lines(results: dict, split: str) -> list[str]:
    ev = results["evaluations"]
    any_ = next(iter(ev.values()))
    lines = [f"# The committed `{results['profile']}` model",
             "",
             f"Trained with `{results['train_command']}` in "
             f"{results['train_seconds'] / 60:.0f} minutes on {any_['machine']['cores']} CPU "
             f"cores (best epoch {results['best_epoch']} by validation loss). Weights in "
             f"float16 (`model.npz`, fingerprint `{any_['model_fingerprint']}`).",
             "",
             f"Scores on `{split}` ({any_['images']} images, {any_['dataset']}), never seen in "
             f"training or model selection. Post-processing: `{any_['postprocess']}`.",
             "",
             "| TTA | DSB (native, Kaggle's way) | DSB (256x256, the paper's way) | precision "
             "| recall | F1 | pixel accuracy | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for s in ev.values():
        n, r = s["native"], s["resized_256"]
        lines.append(f"| {'8-fold' if s['tta'] else 'off'} | {n['dsb']:.4f} | {r['dsb']:.4f} "
                     f"| {n['precision']:.4f} | {n['recall']:.4f} | {n['f1']:.4f} "
                     f"| {n['pixel_accuracy']:.4f} | {s['seconds_total']:.0f} |")
    return lines


def _choice_lines(results: dict) -> list[str]:
    lines = []
    choice = results.get("postprocessing_choice")
    if choice:
        lines += ["", f"The post-processing was chosen on the validation images (held-out "
                  f"stage1_train, TTA on), not on the test set: `{choice['chosen']}`. Every "
                  f"candidate:", "", *candidates_markdown(choice["candidates"])]
    if results.get("levers"):
        lines += ["", "Levers, one at a time, on the validation images (`ablation.md` keeps "
                  "the rows of earlier models):", "", "| lever | validation DSB | test DSB |",
                  "|---|---|---|"]
        for r in results["levers"]:
            t = r.get("test_dsb")
            lines.append(f"| {r['lever']} | {r['validation_dsb']:.4f} | "
                         f"{'' if t is None else f'{t:.4f}'} |")
    return lines


def _threshold_lines(first: dict) -> list[str]:
    if not first["native"].get("per_threshold"):
        return []
    lines = ["", f"Over IoU thresholds (TTA {'on' if first['tta'] else 'off'}, native "
             f"resolution; counts summed over the images, the DSB term averaged over "
             f"them):", "", "| IoU > | TP | FP | FN | precision | recall | F1 | DSB term |",
             "|---|---|---|---|---|---|---|---|"]
    for r in first["native"]["per_threshold"]:
        lines.append(f"| {r['threshold']:.2f} | {r['tp']} | {r['fp']} | {r['fn']} "
                     f"| {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} "
                     f"| {r['dsb_term']:.4f} |")
    return lines


def _modality_lines(ev: dict) -> list[str]:
    any_ = next(iter(ev.values()))
    lines = ["", "DSB per modality (native resolution):", "",
             "| modality | images | " + " | ".join(
                 f"TTA {'on' if s['tta'] else 'off'}" for s in ev.values()) + " |",
             "|---|---|" + "---|" * len(ev)]
    for m in sorted(any_["native"]["by_modality"]):
        lines.append(f"| {m} | {any_['native']['by_modality'][m]['images']} | " + " | ".join(
            f"{s['native']['by_modality'][m]['dsb']:.4f}" for s in ev.values()) + " |")
    return lines


def _type_lines(first: dict) -> list[str]:
    if not first["native"].get("by_type"):
        return []
    return ["", f"Per image type (TTA {'on' if first['tta'] else 'off'}; "
            f"`nucseg_utils/evaluation/image_types.py`; recall and F1 at IoU > 0.7, means over "
            f"the images; the last two columns are Caicedo et al. 2019's, on the 106 scored "
            f"stage-2 images, another test set: context, not a comparison):", "",
            runs.to_markdown(scoring.type_frame(first["native"]["by_type"]), digits=3,
                             blank_nan=True)]
