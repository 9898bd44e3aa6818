"""Evaluation: predict a split, post-process, score at native resolution, write the tables.

In: a saved model (or a loaded one), a split (with ground truth for scoring), TTA on/off.
:func:`evaluate` scores a split only when the model never trained or chose its checkpoint on
it (:func:`check_untouched`; by default the model's test split, :func:`test_split_name`).
Out, in an output folder (a folder that holds the outputs of another model, split, data set or
setting is cleared of them first, so they never mix):

- ``probs/<id>.npz``: the probability maps (float16, the precision every path uses), for the
  TTA and post-processing notebooks;
- ``labels/<id>.png``: one 16-bit label PNG per image at its native size;
- ``submission.csv``: Kaggle's format, one row per nucleus (an image with none gets one empty
  row), column-major RLE whose decoding reproduces the labels exactly;
- ``per_image.csv``: DSB, TP/FP/FN at IoU > 0.5, precision, recall, F1, pixel accuracy, modality;
- ``summary.json``: the data-set numbers, at native resolution (Kaggle's way) and with both
  label images resized to 256x256 (the paper's way), with the command that made them and
  fingerprints of the model file and of the data.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from . import data as data_mod
from . import metrics, postprocessing, runs
from .postprocessing import postprocess
from .preprocessing import normalize, resize_labels

PAPER_SIZE = 256


def save_probs(path, prob: np.ndarray):
    with runs.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, prob=prob.astype(np.float16))


def load_probs(path) -> np.ndarray:
    with np.load(path) as z:
        return z["prob"].astype(np.float32)


def save_labels_png(path, labels: np.ndarray):
    import imageio.v3 as iio
    if labels.max() > 65535:
        raise ValueError(f"{path}: more than 65535 objects do not fit a 16-bit PNG")
    with runs.atomic_path(path) as tmp:
        iio.imwrite(tmp, labels.astype(np.uint16), extension=".png")


def read_labels_png(path) -> np.ndarray:
    import imageio.v3 as iio
    return np.asarray(iio.imread(path))


def submission_rows(image_id: str, labels: np.ndarray) -> list[tuple[str, str]]:
    from .rle import encode_labels
    runs_ = encode_labels(labels)
    return [(image_id, r) for r in runs_.values()] or [(image_id, "")]


def write_submission(labels_by_id: dict, path) -> Path:
    """Kaggle submission CSV for {id: label image}, written atomically."""
    lines = ["ImageId,EncodedPixels"]
    for sid in sorted(labels_by_id):
        lines += [f"{a},{b}" for a, b in submission_rows(sid, labels_by_id[sid])]
    return runs.write_text(path, "\n".join(lines) + "\n")


def predict_image(model, config: dict, image: np.ndarray, tta: bool = True) -> np.ndarray:
    """Probabilities (H, W, n_targets) at native size for one RGB image as read by
    :mod:`nucseg_utils.data`: normalised as the model was trained, predicted (with the 8-fold
    TTA when ``tta``), rounded to float16 precision (as stored, so every path scores the same
    numbers). The one place every command and notebook predicts an image."""
    from .scale import predict_scaled
    img = normalize(image, config["normalization"])
    return predict_scaled(model, img, config, tta=tta).astype(np.float16).astype(np.float32)


def predict_split(model, config: dict, source, out_dir, tta: bool = True, ids=None,
                  progress: bool = True, keep_probs: bool = True) -> dict:
    """Predict every image of ``source`` (a Split or FolderImages); returns {id: prob map}
    and writes ``probs/<id>.npz`` under ``out_dir`` when ``keep_probs``."""
    out_dir = Path(out_dir)
    ids = source.ids if ids is None else list(ids)
    it = ids
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(ids, desc=f"predict{' (TTA)' if tta else ''}", unit="img")
    probs = {}
    for sid in it:
        p = predict_image(model, config, source.image(sid), tta=tta)
        probs[sid] = p
        if keep_probs:
            save_probs(out_dir / runs.PROBS / f"{sid}.npz", p)
    return probs


def postprocess_one(prob: np.ndarray, config: dict, method: str | None = None) -> np.ndarray:
    """The label image of one probability map, post-processed as the model's config says
    (``method`` overrides its ``postprocess``)."""
    pp = postprocessing.settings(config)
    return postprocess(prob, method or pp["postprocess"], pp["min_distance_factor"],
                       pp["min_size"], pp["threshold"], pp["dilation"], pp["distance_seed"])


def postprocess_all(probs: dict, config: dict, method: str | None = None) -> dict:
    return {sid: postprocess_one(p, config, method) for sid, p in probs.items()}


def score_labels(pred: dict, source, resize_to: int | None = None, progress: bool = False):
    """Score predicted label images against the source's ground truth.

    Returns (summary dict, per-image DataFrame). ``resize_to`` rescores both label images
    resized to that square size with nearest neighbour (the paper's 256x256 evaluation)."""
    import pandas as pd
    rows, results = [], []
    for sid in sorted(pred):
        sample = source.sample(sid)
        true, p = sample.labels, pred[sid]
        if true is None:
            raise data_mod.DataError(f"{source.source}: no ground truth for '{sid}'")
        if resize_to:
            true = resize_labels(true, (resize_to, resize_to))
            p = resize_labels(p, (resize_to, resize_to))
        r = metrics.image_scores(true, p)
        results.append(r)
        rows.append({"modality": data_mod.modality_of(sample.image),
                     "height": sample.image.shape[0], "width": sample.image.shape[1]})
    table = metrics.per_image_table(sorted(pred), results)
    table = pd.concat([table, pd.DataFrame(rows)], axis=1)
    summary = metrics.dataset_scores(results)
    summary["by_modality"] = {m: {"dsb": float(g["dsb"].mean()), "images": int(len(g))}
                              for m, g in table.groupby("modality")}
    return summary, table


def scored_ids(source) -> list[str]:
    """The ids of a split that are scored: all of them, or with a solution CSV the images it
    has rows for (images with only ``Ignored`` rows are not scored, as on Kaggle). A solution
    row for an image the split does not hold is a DataError naming the CSV and the id."""
    if source.solution_path is None or source.labels_from == "masks":
        return source.ids
    solution = source.solution()
    unknown = sorted(set(solution) - set(source.ids))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise data_mod.DataError(f"{source.solution_path}: ImageId '{unknown[0]}'{more} has no "
                                 f"image in {source.source}")
    return [i for i in source.ids if i in solution]


def evaluate(model_path, split: str | None = None, root=None, out_dir=None,
             tta: bool | None = None, method: str | None = None, progress: bool = True,
             command: str | None = None, engine: str | None = None) -> dict:
    """Predict and score a split with ground truth; write everything listed in the module
    docstring to ``out_dir``. Returns the summary.

    ``split``: None is the model's test split (:func:`test_split_name` of the splits it was
    trained on). A split the model trained or chose its checkpoint on is refused
    (ProtocolError, before anything is predicted or written)."""
    from .model import engine_of, load_model
    t0 = time.time()
    seen = training_splits(model_path)
    split = split or test_split_name(seen)
    check_untouched(split, seen)
    # the data is checked before the model is built, so a data error comes at once
    source = data_mod.open_split(split, root)
    if not source.has_labels():
        raise data_mod.DataError(f"{split}: no ground truth found (needs "
                                 f"{data_mod.SOLUTIONS.get(split)}) - use `nucseg predict`")
    ids = scored_ids(source)
    model, config = load_model(model_path, engine=engine)
    tta = config.get("tta", True) if tta is None else tta
    method = method or config.get("postprocess", "paper")
    out_dir = Path(out_dir or Path("runs") / "evaluate" / f"{split}{'_tta' if tta else ''}")
    made_by = {"model_fingerprint": runs.file_fingerprint(model_path), "split": split,
               "data_fingerprint": (runs.file_fingerprint(source.source)
                                    if Path(source.source).exists() else None),
               "tta": bool(tta), "postprocess": method}
    clear_other_outputs(out_dir, made_by)
    probs = predict_split(model, config, source, out_dir, tta=tta, ids=ids, progress=progress)
    t_pred = time.time() - t0
    labels = postprocess_all(probs, config, method)
    save_label_dir(labels, out_dir / runs.LABELS)
    write_submission(labels, out_dir / "submission.csv")
    dataset = data_mod.dataset_name(data_mod.find_data_root(root, split))
    summary = summarize(labels, source, tta, method, split, dataset)
    runs.write_table(summary.pop("per_image"), out_dir / "per_image.csv")
    summary.update({
        "model": str(model_path), **made_by,
        "unscored_images": len(source.ids) - len(ids), "engine": engine_of(model),
        "seconds_predict": t_pred, "seconds_total": time.time() - t0,
        "command": command or " ".join(["nucseg"] + sys.argv[1:]),
        "versions": runs.library_versions(), "machine": runs.machine(),
    })
    runs.write_json(out_dir / "summary.json", summary)
    return summary


def clear_other_outputs(out_dir, made_by: dict) -> list[str]:
    """Before :func:`evaluate` writes into ``out_dir``: when the folder holds the outputs of
    another model, split, data set or setting (its ``summary.json`` records them; maps or
    labels without one are of unknown origin), remove them (probability maps, label images,
    result tables), so that nothing of theirs mixes with the new ones. Returns the names
    removed (and says so on stderr)."""
    out_dir = Path(out_dir)
    summary = out_dir / "summary.json"
    if summary.is_file():
        before = runs.read_json(summary)
        if all(before.get(k) == v for k, v in made_by.items()):
            return []
    removed = []
    for sub, pattern in ((runs.PROBS, "*.npz"), (runs.LABELS, "*.png")):
        for f in sorted((out_dir / sub).glob(pattern)):
            f.unlink()
            removed.append(f"{sub}/{f.name}")
        if (out_dir / sub).is_dir() and not any((out_dir / sub).iterdir()):
            (out_dir / sub).rmdir()
    for name in runs.RESULT_FILES:
        if (out_dir / name).is_file():
            (out_dir / name).unlink()
            removed.append(name)
    if removed:
        print(f"{out_dir}: held the outputs of another model, split or setting; removed "
              f"{len(removed)} file(s) before writing the new ones", file=sys.stderr)
    return removed


def _select(found: dict, ids, folder, what: str) -> dict:
    """``found`` restricted to ``ids`` (when given); FileNotFoundError naming the first
    missing one."""
    if ids is None:
        return found
    missing = [i for i in ids if i not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{folder}: no {what} for '{missing[0]}'{more} (run the "
                                f"notebook that writes them again)")
    return {i: found[i] for i in ids}


def load_prob_dir(folder, ids=None) -> dict:
    """{id: probability map} from a ``probs/`` folder written by :func:`predict_split`: every
    map, or those of ``ids`` (all of which must be there; others are not read)."""
    folder = Path(folder)
    files = {f.stem: f for f in sorted(folder.glob("*.npz"))}
    if not files:
        raise FileNotFoundError(f"{folder}: no probability maps (run the TTA notebook first)")
    return {i: load_probs(f) for i, f in _select(files, ids, folder, "probability map").items()}


def save_label_dir(labels: dict, folder):
    for sid, lab in labels.items():
        save_labels_png(Path(folder) / f"{sid}.png", lab)


def load_label_dir(folder, ids=None) -> dict:
    """{id: label image} from a folder of label PNGs: every one, or those of ``ids``."""
    folder = Path(folder)
    files = {f.stem: f for f in sorted(folder.glob("*.png"))}
    if not files:
        raise FileNotFoundError(f"{folder}: no label images (run the post-processing notebook)")
    return {i: read_labels_png(f) for i, f in _select(files, ids, folder, "label image").items()}


def ablation(pred_sets: dict, source) -> "pd.DataFrame":
    """Score several prediction sets ({name: {id: labels}}) at native resolution and at
    256x256; one row per set and resolution, with DSB, precision, recall, F1, pixel accuracy
    and the DSB per modality."""
    import pandas as pd
    rows = []
    for name, pred in pred_sets.items():
        for res, size in (("native", None), ("256x256 (paper's way)", PAPER_SIZE)):
            s, _ = score_labels(pred, source, resize_to=size)
            row = {"predictions": name, "resolution": res, "images": s["images"],
                   "dsb": s["dsb"], "precision": s["precision"], "recall": s["recall"],
                   "f1": s["f1"], "pixel_accuracy": s["pixel_accuracy"]}
            if size is None:
                row.update({f"dsb_{m}": v["dsb"] for m, v in s["by_modality"].items()})
            rows.append(row)
    return pd.DataFrame(rows)


PUBLISHED = [
    {"method": "paper: U-Net ResNet-152 (ImageNet), TTA, watershed",
     "data": "stage 2 test (106 scored images)", "resolution": "256x256", "dsb": 0.5187},
    {"method": "Kaggle DSB2018 winner (topcoders)", "data": "stage 2 test (private LB)",
     "resolution": "native", "dsb": 0.6313},
]


def results_table(summary: dict, split: str, dataset: str, profile: str):
    """Table II: our numbers (one run, both resolutions) beside the published ones."""
    import pandas as pd
    rows = []
    for res, key in (("native", "native"), ("256x256", "resized_256")):
        s = summary[key]
        rows.append({"method": f"nucseg {profile} (TTA {'on' if summary['tta'] else 'off'}, "
                               f"{summary['postprocess']})",
                     "data": f"{split} ({summary['images']} images, {dataset})",
                     "resolution": res, "dsb": s["dsb"], "precision": s["precision"],
                     "recall": s["recall"], "f1": s["f1"],
                     "pixel_accuracy": s["pixel_accuracy"]})
    rows += [{**r, "precision": float("nan"), "recall": float("nan"), "f1": float("nan"),
              "pixel_accuracy": float("nan")} for r in PUBLISHED]
    return pd.DataFrame(rows)


def summarize(pred: dict, source, tta: bool, method: str, split: str, dataset: str) -> dict:
    """The summary dict of :func:`evaluate` for labels already predicted."""
    native, table = score_labels(pred, source)
    paper_way, _ = score_labels(pred, source, resize_to=PAPER_SIZE)
    return {"split": split, "dataset": dataset, "tta": bool(tta), "postprocess": method,
            "images": native["images"], "native": native,
            "resized_256": {k: v for k, v in paper_way.items() if k != "by_modality"},
            "per_image": table}


def examples_by_score(table, n: int = 3) -> list[str]:
    """Ids of the best, median and worst images by DSB (n spread over the ranking)."""
    ranked = table.sort_values("dsb", ascending=False)["id"].tolist()
    if len(ranked) <= n:
        return ranked
    idx = np.linspace(0, len(ranked) - 1, n).round().astype(int)
    return [ranked[i] for i in idx]


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
    import shutil
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
    from . import calibration
    from .model import exact_engine, update_config
    chosen, candidates, predicted = calibration.select_postprocessing(
        where / "model.npz", run_dir, root, progress=progress)
    runs.write_table(candidates, where / "validation_postprocessing.csv")
    update_config(where / "model.npz", **chosen)
    levers = calibration.lever_rows(where / "model.npz", run_dir, chosen, candidates, predicted,
                                    root, progress=progress)
    from .profiles import train_command
    train_cmd = train_command(info["profile"], run_dir)
    command = (f"{train_cmd} && nucseg publish --run {run_dir} --out {dest}"
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
    out = {}
    for tta in (True, False):
        out["tta" if tta else "no_tta"] = evaluate(
            dest / "model.npz", split, root, Path("runs") / "publish" / f"{split}_{tta}",
            tta=tta, progress=progress, engine=exact_engine(),
            command=f"nucseg evaluate --model {dest / 'model.npz'} --split {split} "
                    f"--{'tta' if tta else 'no-tta'}")
    for row in levers:  # the test split, once, for the recipes already chosen
        if row.get("chosen"):
            row["test_dsb"] = out["tta"]["native"]["dsb"]
        elif row["lever"] == "without TTA":
            row["test_dsb"] = out["no_tta"]["native"]["dsb"]
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


def results_markdown(results: dict, split: str) -> str:
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
    for key, s in ev.items():
        n, r = s["native"], s["resized_256"]
        lines.append(f"| {'8-fold' if s['tta'] else 'off'} | {n['dsb']:.4f} | {r['dsb']:.4f} "
                     f"| {n['precision']:.4f} | {n['recall']:.4f} | {n['f1']:.4f} "
                     f"| {n['pixel_accuracy']:.4f} | {s['seconds_total']:.0f} |")
    choice = results.get("postprocessing_choice")
    if choice:
        lines += ["", f"The post-processing was chosen on the validation images (held-out "
                  f"stage1_train, TTA on), not on the test set: `{choice['chosen']}`. Every "
                  f"candidate:", "",
                  "| post-processing | threshold | seed level | marker spacing (radii) "
                  "| dilation (px) | images | DSB | F1 |", "|---|---|---|---|---|---|---|---|"]

        def cell(v):
            return "" if v is None or v != v else f"{v:g}"
        for c in choice["candidates"]:
            lines.append(f"| {c['postprocess']} | {cell(c.get('threshold'))} "
                         f"| {cell(c.get('distance_seed'))} "
                         f"| {cell(c.get('min_distance_factor'))} | {cell(c.get('dilation'))} "
                         f"| {c['images']} | {c['dsb']:.4f} | {c.get('f1', float('nan')):.4f} |")
    if results.get("levers"):
        lines += ["", "Levers, one at a time, on the validation images (`ablation.md` keeps "
                  "the rows of earlier models):", "", "| lever | validation DSB | test DSB |",
                  "|---|---|---|"]
        for r in results["levers"]:
            t = r.get("test_dsb")
            lines.append(f"| {r['lever']} | {r['validation_dsb']:.4f} | "
                         f"{'' if t is None else f'{t:.4f}'} |")
    first = ev.get("tta", any_)
    if first["native"].get("per_threshold"):
        lines += ["", f"Over IoU thresholds (TTA {'on' if first['tta'] else 'off'}, native "
                  f"resolution; counts summed over the images, the DSB term averaged over "
                  f"them):", "", "| IoU > | TP | FP | FN | precision | recall | F1 | DSB term |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in first["native"]["per_threshold"]:
            lines.append(f"| {r['threshold']:.2f} | {r['tp']} | {r['fp']} | {r['fn']} "
                         f"| {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} "
                         f"| {r['dsb_term']:.4f} |")
    lines += ["", "DSB per modality (native resolution):", "",
              "| modality | images | " + " | ".join(
                  f"TTA {'on' if s['tta'] else 'off'}" for s in ev.values()) + " |",
              "|---|---|" + "---|" * len(ev)]
    mods = sorted(any_["native"]["by_modality"])
    for m in mods:
        lines.append(f"| {m} | {any_['native']['by_modality'][m]['images']} | " + " | ".join(
            f"{s['native']['by_modality'][m]['dsb']:.4f}" for s in ev.values()) + " |")
    lines += ["", "Commands:", ""] + [f"- `{s['command']}`" for s in ev.values()]
    lines += ["", "Check a number with the Kaggle scorer: `nucseg predict --images "
              "<data>/stage1_test.zip --out runs/check` then `nucseg score "
              "<data>/stage1_solution.csv runs/check/submission.csv`."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- honest protocol
class ProtocolError(data_mod.DataError):
    """Scoring a split as a test set that the model trained or chose its checkpoint on."""


def training_splits(model_path, profile: dict | None = None) -> list[str]:
    """Every split the model may have seen in training or checkpoint selection: the union
    of its config's ``train_splits`` (when the model records them), the profile in the
    ``run.json`` beside the model file, and ``profile`` (conservative: when in doubt, the
    split counts as seen)."""
    seen: list[str] = []

    def add(splits):
        seen.extend(s for s in (splits or []) if s not in seen)

    path = Path(model_path)
    if path.is_file():
        from .model import read_config
        add(read_config(path).get("train_splits"))
    info = runs.RunLayout(path.parent).run_json
    if info.is_file():
        add(runs.read_json(info).get("profile", {}).get("train_splits"))
    add((profile or {}).get("train_splits"))
    return seen


def check_untouched(split: str, train_splits) -> None:
    """Refuse (ProtocolError) to score ``split`` as a test set when the model trained or
    chose its checkpoint on it."""
    if split in set(train_splits):
        raise ProtocolError(f"refusing to score {split} as a test set: the model trained or "
                            f"chose its checkpoint on it (training splits: "
                            f"{' + '.join(train_splits)}); its test split is "
                            f"{test_split_name(train_splits)}")


def test_split_name(train_splits) -> str:
    """The profile's test split: stage1_test, unless the profile trains on it (the paper's),
    then stage2_test_final."""
    return "stage2_test_final" if "stage1_test" in set(train_splits) else "stage1_test"


def _labelled(split: str, root) -> bool:
    try:
        return data_mod.open_split(split, root).has_labels()
    except data_mod.DataError:
        return False


def evaluation_set(model_path, root=None, profile: dict | None = None) -> dict:
    """Which images notebooks 04-06 score, and what the tables call them.

    The profile's test split (:func:`test_split_name`) when it is there with its ground truth
    and the model never saw it (:func:`check_untouched`). Otherwise there is no untouched
    test set: the run's validation images of a labelled split (from ``split.csv`` beside the
    model) are scored, and every table says "validation, no untouched test set".

    Returns ``split`` (name), ``ids``, ``is_test`` and ``label`` (for table captions)."""
    import pandas as pd
    seen = training_splits(model_path, profile)
    name = test_split_name(seen)
    if _labelled(name, root):
        check_untouched(name, seen)
        ids = scored_ids(data_mod.open_split(name, root))
        return {"split": name, "ids": ids, "is_test": True, "train_splits": seen,
                "label": f"{name}, test (untouched by training and checkpoint choice)"}
    table = runs.RunLayout(Path(model_path).parent).split
    val = pd.read_csv(table, dtype={"id": str}) if table.is_file() else pd.DataFrame()
    val = val[val["subset"] == "val"] if len(val) else val
    for split in ("stage1_test", "stage1_train"):
        ids = sorted(val.loc[val["split"] == split, "id"]) if len(val) else []
        if ids and _labelled(split, root):
            return {"split": split, "ids": ids, "is_test": False, "train_splits": seen,
                    "label": f"{split}: {len(ids)} validation images (used to choose the "
                             f"checkpoint), no untouched test set ({name} not found)"}
    raise ProtocolError(f"no untouched test split ({name} with its ground truth not found) "
                        f"and no validation images recorded beside {model_path} (split.csv): "
                        f"nothing can be scored honestly")


# --------------------------------------------------------------------------- choosing images
def touching_nuclei(labels: np.ndarray, gap: int = 1) -> int:
    """How many nuclei of a label image touch another one (at most ``gap`` background
    pixels between them): the criterion for a crowded image."""
    lab = np.asarray(labels)
    touching = set()
    for dy in range(0, gap + 2):
        for dx in range(-gap - 1, gap + 2):
            if (dy, dx) <= (0, 0) or max(abs(dy), abs(dx)) > gap + 1:
                continue
            a = lab[dy:, max(dx, 0):lab.shape[1] + min(dx, 0)]
            b = lab[:lab.shape[0] - dy, max(-dx, 0):lab.shape[1] + min(-dx, 0)]
            hit = (a > 0) & (b > 0) & (a != b)
            touching.update(np.unique(a[hit]).tolist())
            touching.update(np.unique(b[hit]).tolist())
    return len(touching)


def most_crowded(source, ids) -> tuple[str, int]:
    """(id, count) of the image whose ground truth has the most nuclei touching another."""
    counts = {sid: touching_nuclei(source.labels(sid)) for sid in ids}
    best = max(sorted(counts), key=lambda s: counts[s])
    return best, counts[best]


def densest_centre(mask: np.ndarray, size: int) -> tuple[int, int]:
    """The centre (row, col) of the ``size`` px window inside the image that holds the most
    of ``mask`` (the first such window in raster order; the image's centre when the mask is
    empty). For figures: where to look."""
    from scipy import ndimage as ndi
    m = np.asarray(mask, np.float32)
    if not m.any():
        return m.shape[0] // 2, m.shape[1] // 2
    box = ndi.uniform_filter(m, size=size, mode="constant")
    lo = [min(size // 2, n // 2) for n in m.shape]  # window centres that keep it inside
    hi = [max(n - size // 2, n // 2 + 1) for n in m.shape]
    r, c = np.unravel_index(int(np.argmax(box[lo[0]:hi[0], lo[1]:hi[1]])),
                            (hi[0] - lo[0], hi[1] - lo[1]))
    return int(r + lo[0]), int(c + lo[1])


def window_around(shape, centre, size: int) -> tuple[slice, slice]:
    """Row and column slices of a ``size`` px window around ``centre``, inside ``shape``."""
    return tuple(slice(start, start + size) for start in (
        int(np.clip(round(c - size / 2), 0, max(n - size, 0)))
        for c, n in zip(centre, shape[:2])))


def crowded_window(labels: np.ndarray, size: int = 160) -> tuple[slice, slice]:
    """A ``size`` x ``size`` window of an image around its densest cluster of touching
    nuclei (for figures: seeds and markers stay visible)."""
    from scipy import ndimage as ndi
    lab = np.asarray(labels).astype(np.int64)
    highest = ndi.grey_dilation(lab, size=3)
    lowest = ndi.grey_erosion(np.where(lab > 0, lab, lab.max() + 1), size=3)
    contact = (lab > 0) & (highest != lowest)  # a nucleus pixel next to another nucleus
    return window_around(lab.shape, densest_centre(contact, size), size)


def worst_images(table, n: int = 3) -> list[str]:
    """Ids of the ``n`` images with the lowest DSB (ties by id)."""
    return table.sort_values(["dsb", "id"])["id"].head(n).tolist()


# --------------------------------------------------------------------------- TTA
def tta_disagreement(model, config: dict, image: np.ndarray) -> dict:
    """The 8 TTA variants of one image (as read by :mod:`nucseg_utils.data`), each
    predicted at the model's standard nucleus scale and mapped back to native size:
    ``variants`` [(name, nucleus probability)], their ``mean`` and ``std`` (pixel-wise),
    ``mean_std`` (one number), and the scale ``steps`` of
    :func:`nucseg_utils.scale.predict_scaled` (first-pass nucleus size, factor)."""
    from .preprocessing import resize_image
    from .scale import predict_scaled, rescale_image
    from .tta import variant_predictions
    img = normalize(image, config["normalization"])
    _, steps = predict_scaled(model, img, config, tta=False, return_steps=True)
    passes = steps.get("passes") or []
    factor = float(passes[-1]["next"] if passes else steps["factor"])  # TTA's final factor
    h, w = img.shape[:2]
    out = []
    for name, p in variant_predictions(model, rescale_image(img, factor), config):
        if p.shape != (h, w):
            p = resize_image(p[..., None], (h, w))[..., 0]
        out.append((name, np.clip(p, 0, 1)))
    stack = np.stack([p for _, p in out])
    std = stack.std(axis=0)
    return {"variants": out, "mean": stack.mean(axis=0), "std": std,
            "mean_std": float(std.mean()), "factor": factor, "steps": steps}


def tta_change(probs_tta: dict, probs_plain: dict) -> "pd.Series":
    """Mean absolute difference of the nucleus probability with and without TTA, per image
    (largest first): where TTA changes the prediction most."""
    import pandas as pd
    return pd.Series({sid: float(np.abs(probs_tta[sid][..., 0] - probs_plain[sid][..., 0])
                                 .mean()) for sid in sorted(probs_tta) if sid in probs_plain}
                     ).sort_values(ascending=False)


def scale_steps_table(steps: dict):
    """The passes of :func:`nucseg_utils.scale.predict_scaled` as a table: the factor each
    pass predicted at, the nucleus diameter it measured (native px) and the factor it
    proposed."""
    import pandas as pd
    return pd.DataFrame([{"pass": i + 1, "predicted at factor": p["factor"],
                          "nucleus diameter measured (px)": p["diameter"],
                          "factor proposed": p["next"]}
                         for i, p in enumerate(steps.get("passes", []))])


def tta_gain(probs_tta: dict, probs_plain: dict, config: dict, source):
    """DSB, precision, recall and F1 with and without TTA (the model's post-processing, the
    same images), and the difference."""
    import pandas as pd
    rows = []
    for name, probs in (("with TTA (8 variants)", probs_tta), ("without TTA", probs_plain)):
        s, _ = score_labels(postprocess_all(probs, config), source)
        rows.append({"predictions": name, "images": s["images"], "dsb": s["dsb"],
                     "precision": s["precision"], "recall": s["recall"], "f1": s["f1"]})
    t = pd.DataFrame(rows)
    diff = {"predictions": "gain from TTA", "images": t["images"].iloc[0]}
    diff.update({k: float(t[k].iloc[0] - t[k].iloc[1])
                 for k in ("dsb", "precision", "recall", "f1")})
    return pd.concat([t, pd.DataFrame([diff])], ignore_index=True)


def per_threshold_table(summary: dict):
    """The data set over IoU thresholds (``summary['per_threshold']`` of
    :func:`nucseg_utils.metrics.dataset_scores`) as a DataFrame."""
    import pandas as pd
    return pd.DataFrame(summary["per_threshold"])


def method_scores(prob: np.ndarray, truth: np.ndarray, config: dict):
    """Every post-processing method that applies to one probability map (the model's
    settings otherwise): the nuclei it finds and its DSB against ``truth``."""
    import pandas as pd
    from .postprocessing import methods_for
    rows = []
    for m in methods_for(prob.shape[-1] if prob.ndim == 3 else 1):
        lab = postprocess_one(prob, config, m)
        rows.append({"method": m, "nuclei": int(len(np.unique(lab)) - 1),
                     "dsb": metrics.image_scores(truth, lab)["dsb"]})
    rows.append({"method": "ground truth", "nuclei": int(len(np.unique(truth)) - 1),
                 "dsb": 1.0})
    return pd.DataFrame(rows)
