"""Scoring: predicted label images against the ground truth, and the tables made of it.

In: {id: label image} and the source with the ground truth (a DSB split).
Out: the data-set numbers at native resolution (Kaggle's way) and resized to 256x256 (the
paper's way): DSB, object precision, recall and F1 at IoU > 0.5, pixel accuracy, the DSB per
modality, the per-image table; Table II beside the published numbers; TTA's gain; every
post-processing method on one image; the scores per image type at IoU 0.7 beside Caicedo et
al.'s per-type recall on stage 2 (:func:`type_table`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from nucseg_utils import data as data_mod
from nucseg_utils.evaluation import metrics
from nucseg_utils.evaluation.image_types import TYPE_ORDER, image_type
from nucseg_utils.inference.preprocessing import resize_labels
from nucseg_utils.postprocessing.methods import (
    methods_for,
    postprocess_all,
    postprocess_as,
)

PAPER_SIZE = 256


def score_labels(pred: dict, source, resize_to: int | None = None, progress: bool = False):
    """Score predicted label images against the source's ground truth.

    Returns (summary dict, per-image DataFrame). ``resize_to`` rescores both label images
    resized to that square size with nearest neighbour (the paper's 256x256 evaluation).
    At native resolution the summary also holds ``by_type``, the rows of :func:`type_table`
    (each image's type from its image and ground truth, the table's ``type`` column)."""
    rows, results = [], []
    for sid in sorted(pred):
        sample = source.sample(sid)
        true, p = sample.labels, pred[sid]
        if true is None:
            raise data_mod.DataError(f"{source.source}: no ground truth for '{sid}'")
        row = {"modality": data_mod.modality_of(sample.image),
               "height": sample.image.shape[0], "width": sample.image.shape[1]}
        if resize_to:
            true = resize_labels(true, (resize_to, resize_to))
            p = resize_labels(p, (resize_to, resize_to))
        else:
            row["type"] = image_type(sample.image, true)
        r = metrics.image_scores(true, p)
        results.append(r)
        rows.append(row)
    table = metrics.per_image_table(sorted(pred), results)
    table = pd.concat([table, pd.DataFrame(rows)], axis=1)
    summary = metrics.dataset_scores(results)
    summary["by_modality"] = {m: {"dsb": float(g["dsb"].mean()), "images": int(len(g))}
                              for m, g in table.groupby("modality")}
    if not resize_to and results:
        summary["by_type"] = type_table(dict(zip(sorted(pred), results)),
                                        dict(zip(table["id"], table["type"]))).to_dict("records")
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


def summarize(pred: dict, source, tta: bool, method: str, split: str, dataset: str) -> dict:
    """The summary dict of :func:`evaluate` for labels already predicted."""
    native, table = score_labels(pred, source)
    paper_way, _ = score_labels(pred, source, resize_to=PAPER_SIZE)
    return {"split": split, "dataset": dataset, "tta": bool(tta), "postprocess": method,
            "images": native["images"], "native": native,
            "resized_256": {k: v for k, v in paper_way.items() if k != "by_modality"},
            "per_image": table}


def ablation(pred_sets: dict, source) -> "pd.DataFrame":
    """Score several prediction sets ({name: {id: labels}}) at native resolution and at
    256x256; one row per set and resolution, with DSB, precision, recall, F1, pixel accuracy
    and the DSB per modality."""
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


# The published rows of Table II, each with where its numbers come from. The paper's test score
# is the DSB of its Table II (stage 2, masks at 256x256); its accuracy, precision, recall and
# F1 are the pixel scores of its Fig. 7, "training metrics", not test scores, so they are a
# row of their own. The Kaggle winner published the DSB only.
PUBLISHED = [
    {"method": "paper: U-Net ResNet-152 (ImageNet), watershed", "source": "the paper's Table II",
     "data": "stage 2 test (106 scored images)", "resolution": "256x256", "dsb": 0.5187},
    {"method": "paper: U-Net ResNet-152 (ImageNet), training",
     "source": "the paper's Fig. 7 (training metrics)", "data": "its training images",
     "resolution": "256x256", "dsb": float("nan"), "pixel_accuracy": 0.9624,
     "pixel_precision": 0.8873, "pixel_recall": 0.9192, "pixel_f1": 0.8961},
    {"method": "Kaggle DSB2018 winner (topcoders)",
     "source": "Kaggle's private leaderboard (Caicedo et al. 2019)",
     "data": "stage 2 test (private LB)", "resolution": "native", "dsb": 0.6313},
]


def results_table(summary: dict, split: str, dataset: str, profile: str):
    """Table II: our numbers (one run, both resolutions) beside the published ones, each row
    with its source; NaN where a source did not publish a number."""
    rows = []
    for res, key in (("native", "native"), ("256x256", "resized_256")):
        s = summary[key]
        rows.append({"method": f"nucseg {profile} (TTA {'on' if summary['tta'] else 'off'}, "
                               f"{summary['postprocess']})",
                     "source": "this run",
                     "data": f"{split} ({summary['images']} images, {dataset})",
                     "resolution": res, "dsb": s["dsb"], "precision": s["precision"],
                     "recall": s["recall"], "f1": s["f1"],
                     "pixel_accuracy": s["pixel_accuracy"]})
    nan = float("nan")
    rows += [{"precision": nan, "recall": nan, "f1": nan, "pixel_accuracy": nan, **r}
             for r in PUBLISHED]
    return pd.DataFrame(rows)


def tta_gain(probs_tta: dict, probs_plain: dict, config: dict, source):
    """DSB, precision, recall and F1 with and without TTA (the model's post-processing, the
    same images), and the difference."""
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
    :func:`nucseg_utils.evaluation.metrics.dataset_scores`) as a DataFrame."""
    return pd.DataFrame(summary["per_threshold"])


def method_scores(prob: np.ndarray, truth: np.ndarray, config: dict, configs=None):
    """Every post-processing method that applies to one probability map: the nuclei it finds
    and its DSB against ``truth``; each method with its config in ``configs`` ({method:
    config}, :func:`nucseg_utils.evaluation.calibration.method_configs`), else with the
    model's ``config``."""
    rows = []
    for m in methods_for(prob.shape[-1] if prob.ndim == 3 else 1):
        lab = postprocess_as(prob, (configs or {}).get(m, config), m)
        rows.append({"method": m, "nuclei": int(len(np.unique(lab)) - 1),
                     "dsb": metrics.image_scores(truth, lab)["dsb"]})
    rows.append({"method": "ground truth", "nuclei": int(len(np.unique(truth)) - 1),
                 "dsb": 1.0})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- per image type
# Caicedo et al. 2019, "Nucleus segmentation across imaging experiments: the 2018 Data Science
# Bowl", Nature Methods 16, 1247-1253 (https://doi.org/10.1038/s41592-019-0612-7): recall at
# IoU 0.7 per image type on the 106 scored stage-2 images, the mean over the images of a type of
# TP / (TP + FN), from the authors' analysis (carpenterlab/2019_caicedo_dsb, 06-analysis.ipynb,
# the table of recall by group and submission): the winner (topcoders, submission 7193229) and
# their U-Net trained from scratch ("unets"). Keys: nucseg_utils.evaluation.image_types.TYPES; "Default" is
# every stage-2 image of no other group (mostly fluorescence with small nuclei). Context only:
# another test set (stage 2) than any this repository scores.
CAICEDO_RECALL_07 = {
    "fluorescence small nuclei": {"group": "Default", "winner": 0.893, "unet": 0.765},
    "fluorescence large nuclei": {"group": "Superbig", "winner": 0.494, "unet": 0.531},
    "grey tissue (brightfield)": {"group": "TissueBW", "winner": 0.454, "unet": 0.037},
    "purple tissue": {"group": "Purple", "winner": 0.659, "unet": 0.360},
    "pink-and-purple H&E": {"group": "PinkAndPurple", "winner": 0.769, "unet": 0.125},
}
TYPE_IOU = 0.7
WINNER_COLUMN = "winner's recall (IoU > 0.7), stage 2 [context]"
UNET_COLUMN = "from-scratch U-Net recall (IoU > 0.7), stage 2 [context]"


def image_results(pred: dict, source) -> dict:
    """{id: :func:`nucseg_utils.evaluation.metrics.image_scores`} of predicted label images against the
    source's ground truth at native resolution (the per-threshold TP, FP and FN that
    :func:`type_table` reads)."""
    out = {}
    for sid in sorted(pred):
        truth = source.labels(sid)
        out[sid] = metrics.image_scores(truth, pred[sid])
    return out


def counts_at(result: dict, iou: float = TYPE_IOU) -> tuple[int, int, int]:
    """(TP, FP, FN) of one :func:`nucseg_utils.evaluation.metrics.image_scores` result at IoU > ``iou``,
    one of its thresholds."""
    th = np.round(np.asarray(result["thresholds"], float), 4)
    hit = np.flatnonzero(np.isclose(th, iou))
    if not hit.size:
        raise ValueError(f"IoU {iou:g} is not one of the thresholds scored "
                         f"({', '.join(f'{t:g}' for t in th)})")
    k = int(hit[0])
    return int(result["tp"][k]), int(result["fp"][k]), int(result["fn"][k])


def _image_rate(num: int, den: int, n_true: int, n_pred: int) -> float:
    """A per-image ratio as :mod:`nucseg_utils.evaluation.metrics` gives it: 1.0 for an empty image with
    an empty prediction, 0.0 for any other zero denominator."""
    if den:
        return num / den
    return 1.0 if n_true == 0 and n_pred == 0 else 0.0


def type_table(results: dict, types, iou: float = TYPE_IOU, anchors: bool = True):
    """The scores per image type, beside Caicedo et al.'s (:data:`CAICEDO_RECALL_07`).

    ``results``: {id: :func:`nucseg_utils.evaluation.metrics.image_scores`} (:func:`image_results`);
    ``types``: {id: type} or a Series indexed by id (:mod:`nucseg_utils.evaluation.image_types`). One row
    per type present (in :data:`nucseg_utils.evaluation.image_types.TYPE_ORDER`), then ``all``: images,
    true nuclei, DSB (mean over images), recall and object F1 at IoU > ``iou``, each the mean
    over the images of the per-image TP / (TP + FN) and 2TP / (2TP + FP + FN) (Caicedo et al.'s
    way), and with ``anchors`` the winner's and the from-scratch U-Net's recall at 0.7 on
    stage 2 (columns marked context: another test set)."""
    types = dict(types.items()) if hasattr(types, "items") else dict(types)
    missing = sorted(set(results) - set(types))
    if missing:
        raise ValueError(f"no image type for {len(missing)} scored image(s), e.g. "
                         f"'{missing[0]}'")
    rows = []
    for sid, r in results.items():
        tp, fp, fn = counts_at(r, iou)
        rows.append({"id": sid, "type": types[sid], "dsb": float(r["dsb"]),
                     "n_true": int(r["n_true"]),
                     "recall": _image_rate(tp, tp + fn, r["n_true"], r["n_pred"]),
                     "f1": _image_rate(2 * tp, 2 * tp + fp + fn, r["n_true"], r["n_pred"])})
    per_image = pd.DataFrame(rows, columns=["id", "type", "dsb", "n_true", "recall", "f1"])
    present = [t for t in TYPE_ORDER if t in set(per_image["type"])]
    present += sorted(set(per_image["type"]) - set(present))
    groups = [(t, per_image[per_image["type"] == t]) for t in present] + [("all", per_image)]
    out = []
    for name, g in groups:
        row = {"image type": name, "images": int(len(g)), "nuclei": int(g["n_true"].sum()),
               "DSB": float(g["dsb"].mean()) if len(g) else float("nan"),
               f"recall (IoU > {iou:g})": float(g["recall"].mean()) if len(g) else float("nan"),
               f"F1 (IoU > {iou:g})": float(g["f1"].mean()) if len(g) else float("nan")}
        if anchors:
            ref = CAICEDO_RECALL_07.get(name, {})
            row[WINNER_COLUMN] = ref.get("winner", float("nan"))
            row[UNET_COLUMN] = ref.get("unet", float("nan"))
        out.append(row)
    return type_frame(out, iou)


def type_columns(iou: float = TYPE_IOU) -> list[str]:
    """The columns of :func:`type_table`, in the order a reader reads them."""
    return ["image type", "images", "nuclei", "DSB", f"recall (IoU > {iou:g})",
            f"F1 (IoU > {iou:g})", WINNER_COLUMN, UNET_COLUMN]


def type_frame(rows, iou: float = TYPE_IOU) -> pd.DataFrame:
    """A :func:`type_table` as a DataFrame in :func:`type_columns` order, from its rows (as
    a results file stores them, whose keys come back sorted); columns it lacks are left out,
    others go last."""
    df = pd.DataFrame(list(rows))
    known = [c for c in type_columns(iou) if c in df.columns]
    return df[known + [c for c in df.columns if c not in known]]


# what the plain statement of trust per image type reads off the type table: object F1 at
# IoU > 0.7 (a nucleus counts when its outline is close), and how few images make a type's
# score a rough guide only
TRUST_RELIABLE, TRUST_UNRELIABLE, TRUST_FEW_IMAGES = 0.6, 0.3, 8


def trust_statement(by_type) -> list[str]:
    """Plain sentences for a biologist, from a :func:`type_table` (a DataFrame or its rows):
    on which image types the model's nuclei can be trusted (F1 at IoU > 0.7 of at least
    :data:`TRUST_RELIABLE`), on which to check every image (between that and
    :data:`TRUST_UNRELIABLE`), and on which not to rely on it (below); a type scored on fewer
    than :data:`TRUST_FEW_IMAGES` images is said to be a rough guide. Images unlike any type
    of DSB2018 stage 1 were never seen."""
    rows = by_type.to_dict("records") if hasattr(by_type, "to_dict") else list(by_type)
    f1_key = f"F1 (IoU > {TYPE_IOU:g})"
    groups = {"reliable": [], "check": [], "not": []}
    for r in rows:
        if r["image type"] == "all" or r[f1_key] != r[f1_key]:
            continue
        few = (f", only {r['images']} images: a rough guide"
               if r["images"] < TRUST_FEW_IMAGES else "")
        entry = f"{r['image type']} (F1 {r[f1_key]:.2f}{few})"
        key = ("reliable" if r[f1_key] >= TRUST_RELIABLE else
               "check" if r[f1_key] >= TRUST_UNRELIABLE else "not")
        groups[key].append(entry)
    words = {"reliable": "Reliable on", "check": "Usable with care, checking every image's "
             "overlay (expect merged, split or missed nuclei), on",
             "not": "Not reliable on"}
    out = [f"{words[k]}: {', '.join(v)}." for k, v in groups.items() if v]
    out.append(f"(Object F1 at IoU > {TYPE_IOU:g} on held-out images per type: reliable from "
               f"{TRUST_RELIABLE:g}, not reliable below {TRUST_UNRELIABLE:g}.) Image types "
               f"unlike any of DSB2018 stage 1 (unstained brightfield cells, other stains, "
               f"other magnifications far from its range, 3-D stacks) were never seen in "
               f"training: check a few overlays before trusting counts and sizes.")
    return out
