"""The 2018 Data Science Bowl score, and the object and pixel counts around it.

In: two instance label images of the same (H, W) shape, ground truth and prediction, each an
integer array with 0 for background and any positive integer per object (labels need not be
consecutive: 1, 5, 9 is fine; a boolean mask is one object). Or, for :func:`score_csv`, a
Kaggle solution CSV and a Kaggle submission CSV.

Out: per image, a dict of scores (:func:`image_scores`); per threshold, a table of TP/FP/FN
(:func:`threshold_table`); per data set, a summary dict (:func:`dataset_scores`) and a
per-image table (:func:`per_image_table`).

The DSB score, exactly as Kaggle defined it
-------------------------------------------
For one image, the IoU (intersection over union) of every true object with every predicted
object is computed. For each threshold t in 0.50, 0.55, ..., 0.95 (:data:`THRESHOLDS`) a true
and a predicted object *match* when their IoU is **strictly greater** than t. Then

    TP(t) = matched true objects, FP(t) = unmatched predicted objects,
    FN(t) = unmatched true objects,   score(t) = TP(t) / (TP(t) + FP(t) + FN(t)).

The image score is the mean of score(t) over the ten thresholds and the data set score is the
mean of the image scores (every image weighs the same, whatever its number of nuclei).

Edge cases (as on Kaggle):

- ground truth and prediction both empty: score(t) = 1.0 for every t (nothing to find,
  nothing found), so the image scores 1.0;
- ground truth empty but something predicted: TP = 0, FP > 0, so 0.0;
- prediction empty but ground truth present: TP = 0, FN > 0, so 0.0.

Because t >= 0.5 and objects of one label image are disjoint, IoU > t implies that the overlap
is more than half of both objects, so a true object can match at most one predicted object and
vice versa. Hence no assignment problem has to be solved: TP(t) is just the number of
(true, predicted) pairs with IoU > t. Thresholds below 0.5 are refused for that reason.

Difference from StarDist's ``stardist.matching.matching``: StarDist counts a match at
IoU >= t, this metric (Kaggle's) at IoU > t. A pair with IoU exactly t (e.g. a 10-pixel nucleus
and a 6-pixel prediction inside it: IoU = 6/10 = 0.6) matches at t = 0.6 in StarDist but not
here, so the two can differ at exact ties (frequent on small objects, whose IoUs are ratios
of small integers).

Implementation: for small label values (the usual case) one ``np.bincount`` over the
(true, predicted) label pair of every pixel gives the object areas (row and column sums) and
the overlap of every pair of objects at once; for large label values a sparse path looks only
at foreground pixels (lookup table or ``np.unique``). There is no Python loop over objects or
pairs; a 1000 x 1400 image with hundreds of nuclei takes a few milliseconds.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from nucseg_utils import data
from nucseg_utils.data import rle

THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)  # 0.5, 0.55, ..., 0.95 (ten values)

# Above this many (true x predicted) object pairs the overlap counts are gathered sparsely.
_DENSE_PAIRS = 1 << 22


class ScoreError(ValueError):
    """A submission (or solution) that cannot be scored; the message names the file row."""


# --------------------------------------------------------------------------- per image
def _flat_labels(labels, name: str) -> np.ndarray:
    """A label image as a flat array of non-negative integers (validated, not copied when it
    already is one)."""
    a = np.asarray(labels)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D label image, got shape {a.shape}")
    if a.dtype == bool:
        a = a.view(np.uint8)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"{name}: label image holds non-integer values")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise ValueError(f"{name}: label image must be integer or boolean, not {a.dtype}")
    flat = a.ravel()
    if flat.size and a.dtype.kind == "i" and flat.min() < 0:
        raise ValueError(f"{name}: label image holds negative values")
    return flat


def _objects(values: np.ndarray):
    """Objects of the foreground pixel values: (lookup, areas). ``lookup(v)`` maps label values
    to object indices 0..n-1 (a table when the labels are small integers, else a search in the
    sorted unique labels)."""
    if values.size == 0:
        return (lambda v: np.zeros(np.shape(v), np.intp)), np.zeros(0, np.int64)
    top = int(values.max())
    if top <= 4 * values.size + 1024:  # lookup table: linear time, no sort
        counts = np.bincount(values)
        present = counts > 0
        lut = np.cumsum(present) - 1
        return (lambda v: lut[v]), counts[present].astype(np.int64)
    uniq, counts = np.unique(values, return_counts=True)
    return (lambda v: np.searchsorted(uniq, v)), counts.astype(np.int64)


def _pairs(true_labels, pred_labels):
    """Overlapping object pairs: (true index, pred index, IoU) arrays (0-based indices), the
    object areas, and the pixel counts (foreground of each image, of both, all pixels).

    Small label values (the usual case) take one ``bincount`` over the pixels' (true,
    predicted) label pairs; large ones a sparse path over the foreground pixels."""
    t_shape, p_shape = np.shape(true_labels), np.shape(pred_labels)
    if t_shape != p_shape:
        raise ValueError(f"true and predicted label images differ in shape: "
                         f"{t_shape} vs {p_shape}")
    t = _flat_labels(true_labels, "true labels")
    p = _flat_labels(pred_labels, "predicted labels")
    if t.size == 0:
        return _sparse_pairs(t, p)
    nt, np_ = int(t.max()) + 1, int(p.max()) + 1
    if nt * np_ <= _DENSE_PAIRS:
        # small label values (the usual case): one bincount over (true, predicted) label pairs
        # of all pixels gives the areas (row and column sums) and every intersection at once
        code = t.astype(np.intp) * np_ + p.astype(np.intp)
        counts = np.bincount(code, minlength=nt * np_).reshape(nt, np_)
        all_t, all_p = counts.sum(axis=1), counts.sum(axis=0)
        t_ids, p_ids = np.flatnonzero(all_t[1:]) + 1, np.flatnonzero(all_p[1:]) + 1
        inter_m = counts[np.ix_(t_ids, p_ids)]
        ti, pi = np.nonzero(inter_m)
        inter = inter_m[ti, pi]
        area_t, area_p = all_t[t_ids].astype(np.int64), all_p[p_ids].astype(np.int64)
        iou = inter / (area_t[ti] + area_p[pi] - inter).astype(np.float64)
        pixels = {"true": int(area_t.sum()), "pred": int(area_p.sum()),
                  "both": int(inter.sum()), "all": int(t.size)}
        return ti.astype(np.int64), pi.astype(np.int64), iou, area_t, area_p, pixels
    return _sparse_pairs(t, p)


def _sparse_pairs(t, p):
    """:func:`_pairs` for large label values: only the foreground pixels are looked at."""
    fg_t = np.flatnonzero(t)
    t_vals, p_at_t = t[fg_t], p[fg_t]          # true foreground: its labels and the predicted
    p_vals = p[p > 0]                          # predicted foreground
    find_t, area_t = _objects(t_vals)
    find_p, area_p = _objects(p_vals)
    n_t, n_p = area_t.size, area_p.size
    inside = p_at_t > 0                        # pixels in both foregrounds
    code = find_t(t_vals[inside]).astype(np.int64) * n_p + find_p(p_at_t[inside])
    if code.size == 0:
        ti = pi = np.zeros(0, np.int64)
        inter = np.zeros(0, np.int64)
    elif n_t * n_p <= _DENSE_PAIRS:
        counts = np.bincount(code, minlength=n_t * n_p)
        nz = np.flatnonzero(counts)
        ti, pi, inter = nz // n_p, nz % n_p, counts[nz]
    else:
        nz, inter = np.unique(code, return_counts=True)
        ti, pi = nz // n_p, nz % n_p
    iou = inter / (area_t[ti] + area_p[pi] - inter).astype(np.float64)
    pixels = {"true": int(t_vals.size), "pred": int(p_vals.size), "both": int(code.size),
              "all": int(t.size)}
    return ti, pi, iou, area_t, area_p, pixels


def iou_matrix(true_labels, pred_labels) -> np.ndarray:
    """IoU of every true object (rows) with every predicted object (columns).

    Objects are ordered by increasing label value in each image. Shape (n_true, n_pred)."""
    ti, pi, iou, area_t, area_p, _ = _pairs(true_labels, pred_labels)
    out = np.zeros((area_t.size, area_p.size), np.float64)
    out[ti, pi] = iou
    return out


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num) / float(den) if den else float(empty)


def image_scores(true_labels, pred_labels, thresholds=THRESHOLDS) -> dict:
    """All scores of one image.

    Keys:

    - ``dsb``: the DSB image score (mean over ``thresholds`` of TP / (TP + FP + FN));
    - ``thresholds``, and ``tp``, ``fp``, ``fn``: int arrays, one value per threshold;
    - ``score``: TP / (TP + FP + FN) per threshold (1.0 where both images are empty);
    - ``n_true``, ``n_pred``: object counts;
    - ``tp50``, ``fp50``, ``fn50``: the counts at IoU > 0.5, and from them the object-level
      ``precision`` = TP/(TP+FP), ``recall`` = TP/(TP+FN), ``f1`` = 2TP/(2TP+FP+FN).
      A ratio with a zero denominator is 1.0 when both images are empty, else 0.0 (e.g. no
      prediction on an image with nuclei: precision 0.0, recall 0.0);
    - ``pixel_accuracy``: fraction of pixels whose foreground/background call is right;
    - ``pixel_iou``: IoU of the two binary foreground masks (1.0 when both are empty).
    """
    th = np.atleast_1d(np.asarray(thresholds, np.float64))
    if th.size == 0 or (th < 0.5).any() or (th >= 1).any():
        raise ValueError("thresholds must lie in [0.5, 1); below 0.5 one object could match "
                         "several and the matching would no longer be unique")
    ti, pi, iou, area_t, area_p, px = _pairs(true_labels, pred_labels)
    n_t, n_p = int(area_t.size), int(area_p.size)
    tp = (iou[:, None] > th[None, :]).sum(axis=0).astype(np.int64)
    fp = n_p - tp
    fn = n_t - tp
    den = tp + fp + fn
    per_t = np.where(den > 0, tp / np.maximum(den, 1), 1.0)
    tp50 = int((iou > 0.5).sum())
    fp50, fn50 = n_p - tp50, n_t - tp50
    empty = 1.0 if n_t == 0 and n_p == 0 else 0.0
    union = px["true"] + px["pred"] - px["both"]
    return {
        "dsb": float(per_t.mean()),
        "thresholds": th,
        "score": per_t,
        "tp": tp, "fp": fp, "fn": fn,
        "n_true": n_t, "n_pred": n_p,
        "tp50": tp50, "fp50": fp50, "fn50": fn50,
        "precision": _ratio(tp50, tp50 + fp50, empty),
        "recall": _ratio(tp50, tp50 + fn50, empty),
        "f1": _ratio(2 * tp50, 2 * tp50 + fp50 + fn50, empty),
        "pixel_accuracy": 1.0 - (union - px["both"]) / px["all"] if px["all"] else 1.0,
        "pixel_iou": _ratio(px["both"], union, 1.0),
    }


def threshold_table(true_labels, pred_labels, thresholds=THRESHOLDS):
    """One image, one row per threshold: threshold, TP, FP, FN, score (the paper's Fig. 10)."""
    r = image_scores(true_labels, pred_labels, thresholds)
    return pd.DataFrame({"threshold": r["thresholds"], "TP": r["tp"], "FP": r["fp"],
                         "FN": r["fn"], "score": r["score"]})


ERROR_CLASSES = ("matched", "missed", "false", "merged", "split")


def object_errors(true_labels, pred_labels, iou: float = 0.5, cover: float = 0.5) -> dict:
    """What went wrong with each object of one image, at IoU > ``iou`` (for notebook 06).

    - **matched**: a true and a predicted object with IoU > ``iou`` (the DSB's TP at that
      threshold);
    - **merged**: an unmatched predicted object that covers two or more true objects, each by
      at least ``cover`` of the true object's area (two nuclei given one label); those true
      objects are *merged* too;
    - **split**: an unmatched true object of which two or more predicted objects lie, each by
      at least ``cover`` of its own area, inside it (one nucleus cut in pieces); those
      predicted pieces are *split* too;
    - **missed**: any other unmatched true object (FN); **false**: any other unmatched
      predicted object (FP).

    Returns ``{"true": {label: class}, "pred": {label: class}, "counts": {...}}``; ``counts``
    holds ``true_<class>`` and ``pred_<class>`` for every class that applies.
    """
    t = np.asarray(true_labels).ravel()
    p = np.asarray(pred_labels).ravel()
    if t.shape != p.shape:
        raise ValueError(f"true and predicted label images differ in shape: "
                         f"{np.shape(true_labels)} vs {np.shape(pred_labels)}")
    t_ids, t_area = np.unique(t[t > 0], return_counts=True)
    p_ids, p_area = np.unique(p[p > 0], return_counts=True)
    area_t, area_p = dict(zip(t_ids.tolist(), t_area)), dict(zip(p_ids.tolist(), p_area))
    both = (t > 0) & (p > 0)
    if both.any():
        pairs, inter = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
    else:
        pairs, inter = np.zeros((2, 0), np.int64), np.zeros(0, np.int64)
    true_cls = {int(k): "missed" for k in t_ids}
    pred_cls = {int(k): "false" for k in p_ids}
    covers_true: dict[int, list[int]] = {}   # predicted label -> true labels it covers
    pieces_of: dict[int, list[int]] = {}     # true label -> predicted pieces inside it
    for (a, b), n in zip(pairs.T.tolist(), inter.tolist()):
        if n / (area_t[a] + area_p[b] - n) > iou:
            true_cls[a] = pred_cls[b] = "matched"
        if n >= cover * area_t[a]:
            covers_true.setdefault(b, []).append(a)
        if n >= cover * area_p[b]:
            pieces_of.setdefault(a, []).append(b)
    for b, ts in covers_true.items():
        if pred_cls[b] != "matched" and len(ts) >= 2:
            pred_cls[b] = "merged"
            for a in ts:
                if true_cls[a] != "matched":
                    true_cls[a] = "merged"
    for a, ps in pieces_of.items():
        if true_cls[a] == "missed" and len(ps) >= 2:
            true_cls[a] = "split"
            for b in ps:
                if pred_cls[b] == "false":
                    pred_cls[b] = "split"
    counts = {f"true_{c}": sum(v == c for v in true_cls.values())
              for c in ("matched", "missed", "merged", "split")}
    counts.update({f"pred_{c}": sum(v == c for v in pred_cls.values())
                   for c in ("matched", "false", "merged", "split")})
    return {"true": true_cls, "pred": pred_cls, "counts": counts}


# --------------------------------------------------------------------------- data sets
def dataset_scores(items) -> dict:
    """Summary over images; ``items`` is a sequence of :func:`image_scores` dicts or of
    ``(true_labels, pred_labels)`` pairs.

    - ``dsb``: mean over images of the image DSB score (Kaggle's leaderboard number);
    - ``precision``, ``recall``, ``f1``: object level at IoU > 0.5 from the TP/FP/FN *summed over
      all images* (micro average: large images with many nuclei weigh more than in ``dsb``);
    - ``tp50``, ``fp50``, ``fn50``, ``n_true``, ``n_pred``: those sums (a ratio with a zero
      denominator is 1.0 if no image holds any object, else 0.0);
    - ``pixel_accuracy``, ``pixel_iou``: means over images;
    - ``images``: the number of images;
    - ``per_threshold``: one dict per IoU threshold (see :func:`_per_threshold`).

    With no image at all the scores are NaN.
    """
    results = [r if isinstance(r, dict) else image_scores(*r) for r in items]
    n = len(results)
    nan = float("nan")

    def mean(key):
        return float(np.mean([r[key] for r in results])) if n else nan

    tp = sum(int(r["tp50"]) for r in results)
    fp = sum(int(r["fp50"]) for r in results)
    fn = sum(int(r["fn50"]) for r in results)
    empty = 1.0 if tp + fp + fn == 0 else 0.0
    return {
        "dsb": mean("dsb"),
        "precision": _ratio(tp, tp + fp, empty) if n else nan,
        "recall": _ratio(tp, tp + fn, empty) if n else nan,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty) if n else nan,
        "pixel_accuracy": mean("pixel_accuracy"),
        "pixel_iou": mean("pixel_iou"),
        "tp50": tp, "fp50": fp, "fn50": fn,
        "n_true": sum(int(r["n_true"]) for r in results),
        "n_pred": sum(int(r["n_pred"]) for r in results),
        "images": n,
        "per_threshold": _per_threshold(results),
    }


def _per_threshold(results) -> list[dict]:
    """The data set over IoU thresholds: TP, FP, FN summed over images, precision, recall,
    F1 from those sums, and ``dsb_term``: the mean over images of TP/(TP+FP+FN) at that
    threshold (the ten terms whose mean is the DSB score)."""
    if not results:
        return []
    rows = []
    for k, t in enumerate(results[0]["thresholds"]):
        tp = sum(int(r["tp"][k]) for r in results)
        fp = sum(int(r["fp"][k]) for r in results)
        fn = sum(int(r["fn"][k]) for r in results)
        empty = 1.0 if tp + fp + fn == 0 else 0.0
        rows.append({"threshold": round(float(t), 4), "tp": tp, "fp": fp, "fn": fn,
                     "precision": _ratio(tp, tp + fp, empty),
                     "recall": _ratio(tp, tp + fn, empty),
                     "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty),
                     "dsb_term": float(np.mean([r["score"][k] for r in results]))})
    return rows


def per_image_table(ids, results):
    """A DataFrame with one row per image: id, dsb, n_true, n_pred, tp, fp, fn (at IoU > 0.5),
    precision, recall, f1, pixel_accuracy, pixel_iou."""
    ids = list(ids)
    results = list(results)
    if len(ids) != len(results):
        raise ValueError(f"{len(ids)} ids but {len(results)} results")
    rows = [{"id": i, "dsb": r["dsb"], "n_true": r["n_true"], "n_pred": r["n_pred"],
             "tp": r["tp50"], "fp": r["fp50"], "fn": r["fn50"], "precision": r["precision"],
             "recall": r["recall"], "f1": r["f1"], "pixel_accuracy": r["pixel_accuracy"],
             "pixel_iou": r["pixel_iou"]} for i, r in zip(ids, results)]
    cols = ["id", "dsb", "n_true", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1",
            "pixel_accuracy", "pixel_iou"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- Kaggle CSVs
def _read_submission(path) -> dict[str, list[tuple[int, str]]]:
    """{ImageId: [(line number, run string), ...]} in file order; ScoreError on bad rows."""
    out: dict[str, list[tuple[int, str]]] = {}
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise ScoreError(f"{path}: cannot open submission ({err})") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise ScoreError(f"{path}: empty file (expected the header "
                                 f"'ImageId,EncodedPixels')")
            cols = [c.strip() for c in header]
            if "ImageId" not in cols or "EncodedPixels" not in cols:
                raise ScoreError(f"{path}:1: header must hold columns ImageId and "
                                 f"EncodedPixels; found {cols}")
            i_id, i_px = cols.index("ImageId"), cols.index("EncodedPixels")
            need = max(i_id, i_px) + 1
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) < need:
                    raise ScoreError(f"{path}:{line}: expected columns {cols}, got {row!r}")
                sid = row[i_id].strip()
                if not sid:
                    raise ScoreError(f"{path}:{line}: empty ImageId")
                out.setdefault(sid, []).append((line, row[i_px].strip()))
        except csv.Error as err:
            raise ScoreError(f"{path}:{reader.line_num}: cannot parse CSV ({err})") from None
    return out


def score_csv(solution_csv, submission_csv):
    """Score a Kaggle submission against a Kaggle solution, as Kaggle did.

    ``submission_csv``: ``ImageId,EncodedPixels`` with one row per predicted nucleus (an empty
    ``EncodedPixels`` means "no nucleus in this image"). ``solution_csv``:
    ``ImageId,EncodedPixels,Height,Width[,Usage]``; rows whose ``Usage`` is ``Ignored`` are not
    scored, and images with only ignored rows are skipped (``summary['ignored_images']``).
    Image shapes come from the solution's Height/Width.

    Returns ``(summary, per_image)``: the :func:`dataset_scores` dict plus ``submission``,
    ``solution`` (the paths), ``missing_images`` (solution images absent from the submission,
    scored as empty predictions) and ``ignored_images``; and the :func:`per_image_table` of the
    scored images plus an ``in_submission`` column.

    Raises :class:`ScoreError` naming the file, line (1-based, header = line 1) and ImageId for
    a submission image that is not in the solution, a malformed run, a pixel outside the image
    and overlapping predicted masks (the message then names both rows).
    """


    sol_path, sub_path = Path(solution_csv), Path(submission_csv)
    try:
        solution = data.read_solution(sol_path)
        all_ids = set(pd.read_csv(sol_path, usecols=["ImageId"], dtype=str)["ImageId"])
    except data.DataError as err:
        raise ScoreError(str(err)) from None
    ignored = all_ids - set(solution)
    submission = _read_submission(sub_path)
    for sid, rows in submission.items():
        if sid not in all_ids:
            others = len([s for s in submission if s not in all_ids]) - 1
            more = f" (and {others} more unknown image(s))" if others else ""
            raise ScoreError(f"{sub_path}:{rows[0][0]}: ImageId '{sid}' is not in the "
                             f"solution {sol_path}{more}")
    ids, results, present = [], [], []
    for sid, (runs, h, w) in sorted(solution.items()):
        if h is None or w is None:
            raise ScoreError(f"{sol_path}: no Height/Width columns; cannot size image '{sid}'")
        names = [f"{sol_path}: {sid} mask {i + 1}" for i in range(len(runs))]
        try:
            truth = rle.decode_labels(runs, (h, w), names=names)
        except rle.RLEError as err:
            raise ScoreError(f"bad solution: {err}") from None
        rows = [(line, text) for line, text in submission.get(sid, []) if text]
        names = [f"{sub_path}:{line} ({sid})" for line, _ in rows]
        try:
            pred = rle.decode_labels([text for _, text in rows], (h, w), names=names)
        except rle.RLEError as err:
            raise ScoreError(str(err)) from None
        ids.append(sid)
        results.append(image_scores(truth, pred))
        present.append(sid in submission)
    summary = dataset_scores(results)
    summary.update({"submission": os.fspath(sub_path), "solution": os.fspath(sol_path),
                    "missing_images": int(len(present) - sum(present)),
                    "ignored_images": len(ignored)})
    table = per_image_table(ids, results)
    table["in_submission"] = present
    return summary, table
