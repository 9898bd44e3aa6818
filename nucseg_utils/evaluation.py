"""Evaluation: predict a split, post-process, score at native resolution, write the tables.

In: a saved model (or a loaded one), a split (with ground truth for scoring), TTA on/off.
Out, in an output folder:

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
from . import metrics, runs
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


def predict_split(model, config: dict, source, out_dir, tta: bool = True, ids=None,
                  progress: bool = True, keep_probs: bool = True) -> dict:
    """Predict every image of ``source`` (a Split or FolderImages); returns {id: prob map}
    and writes ``probs/<id>.npz`` under ``out_dir`` when ``keep_probs``."""
    from .tta import predict
    out_dir = Path(out_dir)
    ids = source.ids if ids is None else list(ids)
    it = ids
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(ids, desc=f"predict{' (TTA)' if tta else ''}", unit="img")
    probs = {}
    for sid in it:
        img = normalize(source.image(sid), config["normalization"])
        # kept at float16 precision, as stored: the maps post-processed now and the ones a
        # notebook reads back from probs/ are the same numbers, so every path scores the same
        p = predict(model, img, config, tta=tta).astype(np.float16).astype(np.float32)
        probs[sid] = p
        if keep_probs:
            save_probs(out_dir / "probs" / f"{sid}.npz", p)
    return probs


def postprocess_all(probs: dict, config: dict, method: str | None = None) -> dict:
    method = method or config.get("postprocess", "paper")
    return {sid: postprocess(p, method, config.get("min_distance_factor", 0.5),
                             config.get("min_size", 10)) for sid, p in probs.items()}


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


def evaluate(model_path, split: str = "stage1_test", root=None, out_dir=None,
             tta: bool | None = None, method: str | None = None, progress: bool = True,
             command: str | None = None) -> dict:
    """Predict and score a split with ground truth; write everything listed in the module
    docstring to ``out_dir``. Returns the summary."""
    from .model import load_model
    t0 = time.time()
    # the data is checked before the model is built, so a data error comes at once
    source = data_mod.open_split(split, root)
    if not source.has_labels():
        raise data_mod.DataError(f"{split}: no ground truth found (needs "
                                 f"{data_mod.SOLUTIONS.get(split)}) - use `nucseg predict`")
    ids = scored_ids(source)
    model, config = load_model(model_path)
    tta = config.get("tta", True) if tta is None else tta
    method = method or config.get("postprocess", "paper")
    out_dir = Path(out_dir or Path("runs") / "evaluate" / f"{split}{'_tta' if tta else ''}")
    probs = predict_split(model, config, source, out_dir, tta=tta, ids=ids, progress=progress)
    t_pred = time.time() - t0
    labels = postprocess_all(probs, config, method)
    save_label_dir(labels, out_dir / "labels")
    write_submission(labels, out_dir / "submission.csv")
    dataset = data_mod.dataset_name(data_mod.find_data_root(root, split))
    summary = summarize(labels, source, tta, method, split, dataset)
    runs.write_table(summary.pop("per_image"), out_dir / "per_image.csv")
    summary.update({
        "model": str(model_path), "model_fingerprint": runs.file_fingerprint(model_path),
        "data_fingerprint": (runs.file_fingerprint(source.source)
                             if Path(source.source).exists() else None),
        "unscored_images": len(source.ids) - len(ids),
        "seconds_predict": t_pred, "seconds_total": time.time() - t0,
        "command": command or " ".join(["nucseg"] + sys.argv[1:]),
        "versions": runs.library_versions(), "machine": runs.machine(),
    })
    runs.write_json(out_dir / "summary.json", summary)
    return summary


def load_prob_dir(folder) -> dict:
    """{id: probability map} from a ``probs/`` folder written by :func:`predict_split`."""
    folder = Path(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{folder}: no probability maps (run the TTA notebook first)")
    return {f.stem: load_probs(f) for f in files}


def save_label_dir(labels: dict, folder):
    for sid, lab in labels.items():
        save_labels_png(Path(folder) / f"{sid}.png", lab)


def load_label_dir(folder) -> dict:
    folder = Path(folder)
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{folder}: no label images (run the post-processing notebook)")
    return {f.stem: read_labels_png(f) for f in files}


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


def select_postprocessing(model_path, run_dir, root=None, tta: bool = True,
                          progress: bool = True):
    """Choose the post-processing on the run's *validation* images (held-out stage1_train,
    from ``split.csv``; never the test set) by DSB at native resolution. Returns (the chosen
    config fields, the table of every candidate)."""
    import pandas as pd
    from .model import load_model
    from .postprocessing import postprocess
    run_dir = Path(run_dir)
    split_table = pd.read_csv(run_dir / "split.csv", dtype={"id": str})
    val = split_table[split_table["subset"] == "val"]
    model, config = load_model(model_path)
    rows = []
    for split_name, g in val.groupby("split"):
        source = data_mod.open_split(split_name, root)
        probs = predict_split(model, config, source, run_dir, tta=tta, ids=g["id"].tolist(),
                              progress=progress, keep_probs=False)
        candidates = [("paper", f) for f in (0.5, 0.75, 1.0)] + [("cc", None)]
        if len(config["targets"]) > 1:
            candidates.insert(0, ("touching", None))
        for method, factor in candidates:
            f = factor if factor is not None else config.get("min_distance_factor", 0.5)
            labels = {sid: postprocess(p, method, f, config.get("min_size", 10))
                      for sid, p in probs.items()}
            s, _ = score_labels(labels, source)
            rows.append({"postprocess": method, "min_distance_factor": factor,
                         "split": split_name, "images": s["images"], "dsb": s["dsb"],
                         "precision": s["precision"], "recall": s["recall"], "f1": s["f1"]})
    table = pd.DataFrame(rows)
    best = table.loc[table["dsb"].idxmax()]
    chosen = {"postprocess": best["postprocess"]}
    if best["postprocess"] == "paper":
        chosen["min_distance_factor"] = float(best["min_distance_factor"])
    return chosen, table


def publish_model(run_dir, dest, split: str = "stage1_test", root=None,
                  progress: bool = True) -> dict:
    """Copy a finished run's model, history and run.json to ``dest`` (e.g. ``models/cpu``),
    evaluate the copied model on ``split`` with and without TTA, and write ``results.md`` and
    ``results.json`` beside it: every number from this one model file, with the commands."""
    import shutil
    run_dir, dest = Path(run_dir), Path(dest)
    info = runs.read_json(run_dir / "run.json")
    if not info.get("completed"):
        raise data_mod.DataError(f"{run_dir}: the training run is not complete "
                                 f"(resume it with `nucseg train --resume --out {run_dir}`)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.npz", "history.csv", "run.json"):
        with runs.atomic_path(dest / name) as tmp:
            shutil.copyfile(run_dir / name, tmp)
    from .model import update_config
    chosen, candidates = select_postprocessing(dest / "model.npz", run_dir, root,
                                               progress=progress)
    runs.write_table(candidates, dest / "validation_postprocessing.csv")
    update_config(dest / "model.npz", **chosen)
    out = {}
    for tta in (True, False):
        out["tta" if tta else "no_tta"] = evaluate(
            dest / "model.npz", split, root, Path("runs") / "publish" / f"{split}_{tta}",
            tta=tta, progress=progress,
            command=f"nucseg evaluate --model {dest / 'model.npz'} --split {split} "
                    f"--{'tta' if tta else 'no-tta'}")
    results = {"train_seconds": info.get("train_seconds"), "best_epoch": info.get("best_epoch"),
               "postprocessing_choice": {"chosen": chosen,
                                         "candidates": candidates.to_dict("records")},
               "profile": info.get("profile", {}).get("name"), "evaluations": out,
               "train_command": f"nucseg train --profile {info.get('profile', {}).get('name')} "
                                f"--out {run_dir}"}
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
        lines += ["", "The post-processing was chosen on the validation images (held-out "
                  "stage1_train, TTA on), not on the test set:", "",
                  "| post-processing | min distance (radii) | images | DSB |", "|---|---|---|---|"]
        for c in choice["candidates"]:
            f = c["min_distance_factor"]
            lines.append(f"| {c['postprocess']} | {'' if f is None or f != f else f} "
                         f"| {c['images']} | {c['dsb']:.4f} |")
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
