"""Calibration: choose the post-processing on the validation images, and measure the levers.

In: a saved model and the run folder it was trained in (its ``split.csv`` says which images
were held out for validation: held-out stage1_train, never the test set).
Out: the chosen post-processing fields (method, threshold, dilation, marker spacing), written
into the model's config by ``nucseg publish``, the table of every candidate, and the lever
table (``ablation.csv`` / ``ablation.md``): one row per lever with its validation DSB, the
training time of its model and, for the chosen recipe only, its test DSB.

Every choice is made on validation DSB at native resolution; the test split is scored once,
afterwards, for what was already chosen.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import data as data_mod
from . import runs

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)  # 0.7 since both models of 0.3-0.6 chose 0.6, its edge
DILATIONS = (0, 1)
MARKER_SPACINGS = (0.5, 0.75, 1.0)
DISTANCE_SEEDS = (0.4, 0.5, 0.6, 0.7, 0.8)  # levels of the distance map for the seeds
SEEDED = {"touching": "touching-zone", "distance": "distance-map"}  # names in the lever rows


def candidates(targets) -> list[dict]:
    """The post-processing settings tried for a model of these output channels: ``touching``
    (two channels or more) and ``cc`` over thresholds and a final dilation, ``distance``
    (three channels) over thresholds, seed levels and dilation, the paper's watershed over its
    marker spacing."""
    from .postprocessing import methods_for
    methods = methods_for(len(targets))
    out = []
    if "distance" in methods:
        out += [{"postprocess": "distance", "threshold": t, "distance_seed": s, "dilation": d}
                for t in THRESHOLDS for s in DISTANCE_SEEDS for d in DILATIONS]
    if "touching" in methods:
        out += [{"postprocess": "touching", "threshold": t, "dilation": d}
                for t in THRESHOLDS for d in DILATIONS]
    out += [{"postprocess": "paper", "min_distance_factor": f, "dilation": d}
            for f in MARKER_SPACINGS for d in DILATIONS]
    out += [{"postprocess": "cc", "threshold": t, "dilation": 0} for t in THRESHOLDS]
    return out


def validation_ids(run_dir) -> dict[str, list[str]]:
    """{split name: ids} of the run's validation images, from its ``split.csv``."""
    import pandas as pd
    path = runs.RunLayout(run_dir).split
    if not path.is_file():
        raise data_mod.DataError(f"{path}: no such file; the run folder must be the one the "
                                 f"model was trained in")
    table = pd.read_csv(path, dtype={"id": str})
    val = table[table["subset"] == "val"]
    return {s: g["id"].tolist() for s, g in val.groupby("split")}


def predict_validation(model, config: dict, run_dir, root=None, tta: bool = True,
                       progress: bool = True):
    """[(source, {id: probabilities})] for the run's validation images."""
    from .evaluation import predict_split
    out = []
    for split_name, ids in validation_ids(run_dir).items():
        source = data_mod.open_split(split_name, root)
        out.append((source, predict_split(model, config, source, run_dir, tta=tta, ids=ids,
                                          progress=progress, keep_probs=False)))
    return out


def score_setting(predicted, config: dict, setting: dict) -> dict:
    """Post-process every validation map with ``config`` updated by ``setting``; the scores
    over all validation images."""
    from . import metrics
    from .evaluation import postprocess_all
    cfg = {**config, **setting}
    results = []
    for source, probs in predicted:
        labels = postprocess_all(probs, cfg)
        results += [metrics.image_scores(source.sample(sid).labels, labels[sid])
                    for sid in sorted(labels)]
    return metrics.dataset_scores(results)


def select_postprocessing(model_path, run_dir, root=None, tta: bool = True,
                          progress: bool = True, predicted=None):
    """Choose the post-processing by validation DSB. Returns (chosen fields, table of every
    candidate, the validation predictions for reuse)."""
    import pandas as pd
    from .model import exact_engine, load_model
    model, config = load_model(model_path, engine=exact_engine())
    if predicted is None:
        predicted = predict_validation(model, config, run_dir, root, tta, progress)
    rows = []
    for setting in candidates(config["targets"]):
        s = score_setting(predicted, config, setting)
        rows.append({**{"postprocess": setting["postprocess"],
                        "threshold": setting.get("threshold"),
                        "distance_seed": setting.get("distance_seed"),
                        "min_distance_factor": setting.get("min_distance_factor"),
                        "dilation": setting["dilation"]},
                     "images": s["images"], "dsb": s["dsb"], "precision": s["precision"],
                     "recall": s["recall"], "f1": s["f1"]})
    table = pd.DataFrame(rows)
    best = table.loc[table["dsb"].idxmax()]
    chosen = {"postprocess": str(best["postprocess"]), "dilation": int(best["dilation"])}
    if best["postprocess"] == "paper":
        chosen["min_distance_factor"] = float(best["min_distance_factor"])
    else:
        chosen["threshold"] = float(best["threshold"])
    if best["postprocess"] == "distance":
        chosen["distance_seed"] = float(best["distance_seed"])
    return chosen, table, predicted


def recipe_name(cfg: dict, training: dict | None = None) -> str:
    """A one-line description of a model's recipe, for the lever table; ``training`` (the
    profile in the run's run.json) adds the network and the length of its training."""
    parts = []
    if training and training.get("epochs"):
        from .model import DECODER_FILTERS
        decoder = training.get("decoder_filters") or DECODER_FILTERS
        steps = training.get("steps_per_epoch")
        parts.append(f"{training.get('backbone', cfg.get('backbone'))} U-Net, decoder "
                     f"{'-'.join(map(str, decoder))}, {training['epochs']} epochs"
                     + (f" x {steps} steps" if steps else ""))
        from .profiles import PROFILES
        default_seed = PROFILES.get(training.get("name"), {}).get("seed")
        if training.get("seed") is not None and training.get("seed") != default_seed:
            parts.append(f"seed {training['seed']}")
        if training.get("normalization") == "haematoxylin":
            parts.append("stained tissue unmixed to its haematoxylin channel")
        if "distance" in (training.get("targets") or []):
            parts.append("a third output: the distance to the nucleus' edge")
        if (training.get("augmentation") or {}).get("stain"):
            parts.append(f"stain augmentation {training['augmentation']['stain']:g}")
    if cfg.get("target_diameter"):
        parts.append(f"nuclei rescaled to {cfg['target_diameter']:g} px (training and test)")
        if cfg.get("size_probe"):
            parts.append(f"size probed at {cfg['size_probe']:g}x first")
    else:
        parts.append("native scale")
    parts.append("8-fold TTA" if cfg.get("tta", True) else "no TTA")
    post = cfg.get("postprocess", "paper")
    if post == "paper":
        parts.append(f"paper's watershed (marker spacing {cfg.get('min_distance_factor', 0.5):g})")
    elif post == "distance":
        parts.append(f"distance watershed at threshold {cfg.get('threshold', 0.5):g}, seeds "
                     f"above {cfg.get('distance_seed', 0.5):g}")
    else:
        parts.append(f"{post} at threshold {cfg.get('threshold', 0.5):g}")
    parts.append(f"dilation {cfg.get('dilation', 0)} px")
    return "chosen recipe: " + ", ".join(parts)


def other_seeded_watershed(candidates_table, chosen: str):
    """(lever name, validation DSB) of the best candidate of the seeded watershed that was
    not chosen, the same network split by its other output (touching zone or distance map);
    None when the model has only one of them, or neither was chosen."""
    other = {"distance": "touching", "touching": "distance"}.get(chosen)
    t = candidates_table
    alt = t[t["postprocess"] == other] if other else t.iloc[:0]
    if not len(alt):
        return None
    best = alt.loc[alt["dsb"].idxmax()]
    seeds = f", seeds above {best['distance_seed']:g}" if other == "distance" else ""
    return (f"the {SEEDED[other]} watershed instead (its best: threshold "
            f"{best['threshold']:g}{seeds}, dilation {best['dilation']})", float(best["dsb"]))


def lever_rows(model_path, run_dir, chosen: dict, candidates_table, predicted, root=None,
               progress: bool = True) -> list[dict]:
    """Validation DSB of the chosen recipe with one lever at a time switched back: no
    test-time scaling, no TTA, the default threshold and no dilation, the paper's
    post-processing. Each row names what differs from the chosen recipe."""
    from .model import exact_engine, load_model
    model, config = load_model(model_path, engine=exact_engine())
    cfg = {**config, **chosen}
    info = runs.read_json(runs.RunLayout(run_dir).run_json)
    train_s = info.get("train_seconds")
    rows = [{"lever": recipe_name(cfg, info.get("profile")),
             "validation_dsb": score_setting(predicted, cfg, {})["dsb"],
             "train_seconds": train_s, "chosen": True}]
    t = candidates_table
    if cfg.get("postprocess") != "paper":
        base = t[(t["postprocess"] == cfg["postprocess"]) & (t["threshold"] == 0.5)
                 & (t["dilation"] == 0)]
        if cfg["postprocess"] == "distance":
            base = base[base["distance_seed"] == 0.5]
        if len(base):
            same = (cfg.get("threshold", 0.5) == 0.5 and not cfg.get("dilation")
                    and cfg.get("distance_seed", 0.5) == 0.5)
            rows.append({"lever": "without calibration (threshold 0.5"
                                  + (", seeds above 0.5" if cfg["postprocess"] == "distance"
                                     else "") + ", no dilation)"
                                  + (": what the calibration chose" if same else ""),
                         "validation_dsb": float(base["dsb"].iloc[0]), "train_seconds": train_s})
    alt = other_seeded_watershed(t, cfg.get("postprocess"))
    if alt:
        rows.append({"lever": alt[0], "validation_dsb": alt[1], "train_seconds": train_s})
    paper = t[t["postprocess"] == "paper"]
    if len(paper):
        best = paper.loc[paper["dsb"].idxmax()]
        rows.append({"lever": f"the paper's watershed instead (its best: marker spacing "
                              f"{best['min_distance_factor']:g}, dilation {best['dilation']})",
                     "validation_dsb": float(best["dsb"]), "train_seconds": train_s})
    variants = [("without TTA", {}, False)]
    if cfg.get("target_diameter"):
        variants.insert(0, ("without test-time scaling (predicted at native scale)",
                            {"target_diameter": None}, True))
    for name, change, tta in variants:
        c = {**cfg, **change}
        pred = predict_validation(model, c, run_dir, root, tta, progress)
        rows.append({"lever": name, "validation_dsb": score_setting(pred, c, {})["dsb"],
                     "train_seconds": train_s})
    return rows


def write_ablation(rows: list[dict], dest, model_fingerprint: str, command: str):
    """Merge this model's lever rows into ``dest/ablation.csv`` (rows of earlier models are
    kept, with their fingerprint and command) and write ``ablation.md``."""
    import pandas as pd
    dest = Path(dest)
    path = dest / "ablation.csv"
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if len(old):
        old = old[old["model"] != model_fingerprint]
    new = pd.DataFrame([{**r, "model": model_fingerprint, "command": command} for r in rows])
    table = pd.concat([new, old], ignore_index=True)
    runs.write_table(table, path)
    lines = ["# Levers of the `cpu` recipe, measured on this machine", "",
             "Validation DSB: the 67 held-out stage1_train images, native resolution, chosen "
             "post-processing unless the row says otherwise. Test DSB (stage1_test) only for "
             "recipes already chosen. Rows of earlier models stay, with their numbers; rows "
             "of a candidate that was judged on validation only, and not published, say so "
             "(`nucseg publish --validation-only`). Regenerated by `nucseg publish` (see "
             "`command`).", "",
             "| model | lever | validation DSB | test DSB | training (min) | command |",
             "|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        test = r.get("test_dsb")
        test = "" if test is None or test != test else f"{test:.4f}"
        tr = r.get("train_seconds")
        tr = "" if tr is None or tr != tr else f"{tr / 60:.0f}"
        lines.append(f"| `{r['model']}` | {r['lever']} | {r['validation_dsb']:.4f} | {test} "
                     f"| {tr} | `{r['command']}` |")
    runs.write_text(dest / "ablation.md", "\n".join(lines) + "\n")
    return table
