"""Calibration: choose the post-processing on the validation images, and measure the levers.

In: a saved model and the run folder it was trained in (its ``split.csv`` says which images
were held out for validation: held-out stage1_train, never the test set).
Out: the chosen post-processing fields (method, threshold, dilation, marker spacing), written
into the model's config by ``nucseg publish``, the table of every candidate, and the lever
table (``ablation.csv`` / ``ablation.md``): one row per lever with its validation DSB, the
training time of its model and, for the chosen recipe only, its test DSB.

Every choice is made on validation DSB at native resolution; the test split is scored once,
afterwards, for what was already chosen.

The validation images are scored against the labels the run trained on (its ``run.json``'s
``train_labels``), or those a ``labels`` argument names: "fixed" scores the stage1_train
validation images against the fixed masks (the images the fixed labels leave out are then not
scored), "original" against Kaggle's, so that runs on either labels can be judged on the same
masks.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from nucseg_utils import data as data_mod
from nucseg_utils.core import runs
from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.core.profiles import PROFILES
from nucseg_utils.evaluation import metrics
from nucseg_utils.evaluation.protocol import run_labels
from nucseg_utils.inference.maps import predict_split
from nucseg_utils.model import engines
from nucseg_utils.model.network import DECODER_FILTERS, NucleusModel, read_config
from nucseg_utils.postprocessing.methods import (
    DEFAULTS,
    METHODS,
    PAPER,
    calibrated_settings,
    methods_for,
    postprocess_all,
    setting_words,
)

# the object filters (:func:`nucseg_utils.postprocessing.filter_objects`), tried on top of the
# best method's setting; (0, 0) is no filter
FILTER_GRID = {"min_size_factor": (0.0, 0.05, 0.1, 0.2),
               "min_mean_prob": (0.0, 0.8, 0.85, 0.9)}
FILTER_COLUMNS = tuple(FILTER_GRID)
NO_FILTERS = dict.fromkeys(FILTER_COLUMNS, 0.0)  # the object filters off


def setting_columns() -> list[str]:
    """The settings the registered methods' grids try, besides ``dilation`` and the filters:
    a column each in the table of candidates, in :class:`PostprocessSettings`' order (read
    from the registry each time, so that a newly registered method's setting has one)."""
    tried = {k for m in METHODS.values() for k in m.grid}
    return [k for k in calibrated_settings()
            if k in tried and k != "dilation" and k not in FILTER_COLUMNS]


def candidates(targets) -> list[dict]:
    """The post-processing settings tried for a model of these output channels: the grid of
    every registered method (:data:`nucseg_utils.postprocessing.METHODS`) that the channels
    allow, the methods in their calibration order."""
    allowed = sorted((METHODS[m] for m in methods_for(len(targets))),
                     key=lambda m: m.calibration_rank)
    return [c for m in allowed for c in m.candidates()]


def validation_ids(run_dir) -> dict[str, list[str]]:
    """{split name: ids} of the run's validation images, from its ``split.csv``."""
    path = runs.RunLayout(run_dir).split
    if not path.is_file():
        raise data_mod.DataError(f"{path}: no such file; the run folder must be the one the "
                                 f"model was trained in")
    table = pd.read_csv(path, dtype={"id": str})
    val = table[table["subset"] == "val"]
    return {s: g["id"].tolist() for s, g in val.groupby("split")}


def validation_labels(run_dir, labels: str | None = None) -> str:
    """The labels the validation images are scored against: ``labels`` ("original" or
    "fixed"), or by default those the run trained on (:func:`nucseg_utils.evaluation.protocol.run_labels`)."""
    return data_mod.check_labels(labels or run_labels(run_dir))


def predict_validation(model: NucleusModel, run_dir, root=None, tta: bool = True,
                       progress: bool = True, labels: str | None = None):
    """[(source, {id: probabilities})] for the run's validation images, each source holding
    the ground truth of ``labels`` (:func:`validation_labels`): with "fixed", stage1_train's
    fixed masks, and the validation images they leave out are not predicted (nor scored)."""
    labels = validation_labels(run_dir, labels)
    out = []
    for split_name, ids in validation_ids(run_dir).items():
        source = data_mod.open_split(split_name, root,
                                     labels=data_mod.labels_for(split_name, labels))
        known = set(source.ids)
        ids = [i for i in ids if i in known]
        out.append((source, predict_split(model, source, run_dir, tta=tta, ids=ids,
                                          progress=progress, keep_probs=False)))
    return out


class GroundTruth:
    """The ground truth of some images of a source, read once and held: what scoring many
    settings on the same images reads (``sample(id).labels`` and ``labels(id)``, as a
    split's), instead of decoding each image's masks again for every setting."""

    def __init__(self, source, ids):
        self.name = getattr(source, "name", None)
        self._labels = {sid: source.sample(sid).labels for sid in ids}

    def labels(self, sid, shape=None):
        return self._labels[sid]

    def sample(self, sid):
        return SimpleNamespace(id=sid, labels=self._labels[sid])


def with_ground_truth(predicted) -> list:
    """[(source, {id: map})] with each source's ground truth of those ids read once
    (:class:`GroundTruth`)."""
    return [(s if isinstance(s, GroundTruth) else GroundTruth(s, probs), probs)
            for s, probs in predicted]


def score_setting(predicted, config: dict, setting: dict) -> dict:
    """Post-process every validation map with ``config`` updated by ``setting``; the scores
    over all validation images."""
    cfg = {**config, **setting}
    results = []
    for source, probs in predicted:
        labels = postprocess_all(probs, cfg)
        results += [metrics.image_scores(source.sample(sid).labels, labels[sid])
                    for sid in sorted(labels)]
    return metrics.dataset_scores(results)


def select_postprocessing(model_path, run_dir, root=None, tta: bool = True,
                          progress: bool = True, predicted=None, labels: str | None = None,
                          filters: bool = True):
    """Choose the post-processing by validation DSB (against ``labels``' masks:
    :func:`validation_labels`): the methods' grids, then (``filters``) the object filters of
    :data:`FILTER_GRID` on top of the best. Returns (chosen fields, table of every candidate,
    the validation predictions for reuse, their ground truth held)."""
    if predicted is None:
        model = NucleusModel.load(model_path, engine=engines.exact())
        predicted = predict_validation(model, run_dir, root, tta, progress, labels=labels)
    predicted = with_ground_truth(predicted)
    # the post-processing only (no network needed), without the object filters a model
    # calibrated before holds: the methods' grids are scored unfiltered, as their rows say
    config = {**read_config(model_path), **NO_FILTERS}
    rows, columns = [], setting_columns()

    def add(setting):
        s = score_setting(predicted, config, setting)
        rows.append({**{"postprocess": setting["postprocess"],
                        **{k: setting.get(k) for k in columns},
                        "dilation": setting["dilation"],
                        **{k: float(setting.get(k, 0.0)) for k in FILTER_COLUMNS}},
                     "images": s["images"], "dsb": s["dsb"], "precision": s["precision"],
                     "recall": s["recall"], "f1": s["f1"]})
    for setting in candidates(config["targets"]):
        add(setting)
    grid = pd.DataFrame(rows)
    chosen = setting_of(grid.loc[grid["dsb"].idxmax()])
    # then the object filters on top of that setting (a tie keeps no filter: tried first)
    for values in itertools.product(*FILTER_GRID.values()):
        if filters and any(values):
            add({**chosen, **dict(zip(FILTER_COLUMNS, values))})
    table = pd.DataFrame(rows)
    best = table.loc[table["dsb"].idxmax()]
    chosen.update({k: float(best[k]) for k in FILTER_COLUMNS})
    return chosen, table, predicted


def unfiltered(table):
    """The candidates without an object filter (the methods' own grids)."""
    if not all(k in table for k in FILTER_COLUMNS):
        return table
    return table[(table[list(FILTER_COLUMNS)] == 0).all(axis=1)]


def recipe_name(cfg: dict, training: dict | None = None) -> str:
    """A one-line description of a model's recipe, for the lever table; ``training`` (the
    profile in the run's run.json) adds the network and the length of its training."""
    parts = []
    if training and training.get("epochs"):
        decoder = training.get("decoder_filters") or DECODER_FILTERS
        steps = training.get("steps_per_epoch")
        parts.append(f"{training.get('backbone', cfg.get('backbone'))} U-Net, decoder "
                     f"{'-'.join(map(str, decoder))}, {training['epochs']} epochs"
                     + (f" x {steps} steps" if steps else ""))
        default_seed = PROFILES.get(training.get("name"), {}).get("seed")
        if training.get("seed") is not None and training.get("seed") != default_seed:
            parts.append(f"seed {training['seed']}")
        if training.get("normalization") == "haematoxylin":
            parts.append("stained tissue unmixed to its haematoxylin channel")
        if "distance" in (training.get("targets") or []):
            parts.append("a third output: the distance to the nucleus' edge")
        if (training.get("augmentation") or {}).get("stain"):
            parts.append(f"stain augmentation {training['augmentation']['stain']:g}")
    settings = ModelSettings.of(cfg)
    pp = settings.postprocessing
    if settings.target_diameter:
        parts.append(f"nuclei rescaled to {settings.target_diameter:g} px (training and test)")
        if settings.size_probe:
            parts.append(f"size probed at {settings.size_probe:g}x first")
    else:
        parts.append("native scale")
    parts.append("8-fold TTA" if settings.tta else "no TTA")
    parts.append(METHODS[pp.method].phrase(cfg))
    parts.append(f"dilation {pp.dilation} px")
    if pp.min_size_factor:
        parts.append(f"objects under {pp.min_size_factor:g} x the typical area dropped")
    if pp.min_mean_prob:
        parts.append(f"objects of mean probability under {pp.min_mean_prob:g} dropped")
    return "chosen recipe: " + ", ".join(parts)


def _best(table, method: str):
    """The best candidate row of ``method`` in the candidates table (None if it has none)."""
    table = unfiltered(table)
    rows = table[table["postprocess"] == method]
    return rows.loc[rows["dsb"].idxmax()] if len(rows) else None


def setting_of(row) -> dict:
    """A candidates-table row as config keys: its method and the values of its grid."""
    method = str(row["postprocess"])
    return {"postprocess": method, **{k: int(row[k]) if k == "dilation" else float(row[k])
                                      for k in METHODS[method].grid}}


def best_setting(table, method: str) -> dict | None:
    """``method``'s own best setting in a candidates table (its grid's values, without object
    filters), as config keys; None when the table has no candidate of it."""
    best = _best(table, method)
    return None if best is None else setting_of(best)


def method_configs(model_path) -> tuple[dict, str]:
    """{method: config} for comparing the post-processing methods a model allows fairly: its
    own method as it was published, every other one at its own best setting on the same
    validation images (``validation_postprocessing.csv`` beside the model, written by
    ``nucseg publish``), all with the model's object filters; and one sentence saying so.
    Without that table, every method at the model's settings, and the sentence says that."""
    config = read_config(model_path)
    methods = methods_for(len(config["targets"]))
    path = runs.RunLayout(Path(model_path).parent).candidates
    if not path.is_file():
        return ({m: {**config, "postprocess": m} for m in methods},
                "every method at the model's own settings (no validation table of its "
                "candidates beside the model: each method's best setting is unknown)")
    table = pd.read_csv(path)
    out = {}
    for m in methods:
        best = best_setting(table, m) if m != config["postprocess"] else None
        out[m] = {**config, **best} if best else {**config, "postprocess": m}
    filters = ", ".join(f"{k} {config.get(k, 0):g}" for k in FILTER_COLUMNS)
    return out, (f"each method at its own best setting on the validation images "
                 f"({path.name}), the model's object filters ({filters}) applied to all")


def other_seeded_watershed(candidates_table, chosen: str):
    """(lever name, validation DSB) of the best candidate of the seeded watershed that was
    not chosen, the same network split by its other output (touching zone or distance map);
    None when the model has only one of them, or neither was chosen."""
    if chosen not in METHODS or not METHODS[chosen].seeded:
        return None
    for other in (m for m in METHODS.values() if m.seeded and m.name != chosen):
        best = _best(candidates_table, other.name)
        if best is not None:
            return (f"the {other.seeded} watershed instead (its best: "
                    f"{setting_words(best, other.grid)})", float(best["dsb"]))
    return None


def uncalibrated_row(candidates_table, cfg: dict):
    """(lever name, validation DSB) of the chosen method at its default settings and without
    dilation (None for the paper's method, or when the table lacks that candidate)."""
    name = cfg.get("postprocess")
    if name == PAPER or name not in METHODS:
        return None
    grid = METHODS[name].grid
    default = {k: DEFAULTS[k] for k in grid}
    t = unfiltered(candidates_table)
    base = t[t["postprocess"] == name]
    for k, v in default.items():
        base = base[base[k] == v]
    if not len(base):
        return None
    same = all(cfg.get(k, DEFAULTS[k]) == v for k, v in default.items())
    return (f"without calibration ({setting_words(default, [k for k in grid if k != 'dilation'])}"
            f", no dilation)" + (": what the calibration chose" if same else ""),
            float(base["dsb"].iloc[0]))


def lever_rows(model_path, run_dir, chosen: dict, candidates_table, predicted, root=None,
               progress: bool = True, labels: str | None = None) -> list[dict]:
    """Validation DSB of the chosen recipe with one lever at a time switched back: no
    test-time scaling, no TTA, the default threshold and no dilation, the paper's
    post-processing. Each row names what differs from the chosen recipe. ``labels``: the
    masks the re-predicted levers are scored against (:func:`validation_labels`; give the
    ones ``predicted`` was scored against)."""
    model = NucleusModel.load(model_path, engine=engines.exact()).with_settings(**chosen)
    cfg = model.config
    info = runs.read_json(runs.RunLayout(run_dir).run_json)
    train_s = info.get("train_seconds")
    rows = [{"lever": recipe_name(cfg, info.get("profile")),
             "validation_dsb": score_setting(predicted, cfg, {})["dsb"],
             "train_seconds": train_s, "chosen": True}]
    t = candidates_table
    if any(getattr(model.settings.postprocessing, k) for k in FILTER_COLUMNS):
        rows.append({"lever": "without the object filters",
                     "validation_dsb": score_setting(predicted, cfg, NO_FILTERS)["dsb"],
                     "train_seconds": train_s})
    for found in (uncalibrated_row(t, cfg), other_seeded_watershed(t, cfg.get("postprocess"))):
        if found:
            rows.append({"lever": found[0], "validation_dsb": found[1], "train_seconds": train_s})
    paper = _best(t, PAPER)
    if paper is not None:
        rows.append({"lever": f"the paper's watershed instead (its best: "
                              f"{setting_words(paper, METHODS[PAPER].grid)})",
                     "validation_dsb": float(paper["dsb"]), "train_seconds": train_s})
    variants = [("without TTA", {}, False)]
    if model.settings.target_diameter:
        variants.insert(0, ("without test-time scaling (predicted at native scale)",
                            {"target_diameter": None}, True))
    for name, change, tta in variants:
        changed = model.with_settings(**change)
        pred = predict_validation(changed, run_dir, root, tta, progress, labels=labels)
        rows.append({"lever": name, "validation_dsb": score_setting(pred, changed.config,
                                                                    {})["dsb"],
                     "train_seconds": train_s})
    return rows


def write_ablation(rows: list[dict], dest, model_fingerprint: str, command: str,
                   profile: str = "cpu",
                   validation: str = "the 67 held-out stage1_train images"):
    """Merge this model's lever rows into ``dest/ablation.csv`` (rows of earlier models are
    kept, with their fingerprint and command) and write ``ablation.md``; ``profile`` and
    ``validation`` (its images, in words) for its heading."""
    dest = Path(dest)
    path = dest / "ablation.csv"
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if len(old):
        old = old[old["model"] != model_fingerprint]
    new = pd.DataFrame([{**r, "model": model_fingerprint, "command": command} for r in rows])
    table = pd.concat([new, old], ignore_index=True)
    runs.write_table(table, path)
    lines = [f"# Levers of the `{profile}` recipe, measured on this machine", "",
             f"Validation DSB: {validation}, native resolution, chosen "
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
