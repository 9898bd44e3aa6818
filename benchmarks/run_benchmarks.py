"""Benchmarks of the nucseg pipeline: how fast and how good, side by side, in one report.

    python benchmarks/run_benchmarks.py [--model models/cpu/model.npz] [--quick]
        [--only metric,postprocess,inference,training,quality,streaming] [--out DIR]
        [--data ROOT]

A full run (no ``--quick``, no ``--only``) rewrites ``benchmarks/REPORT.md`` and
``benchmarks/results.csv``; a ``--quick`` or ``--only`` run writes to ``runs/benchmarks_dev/``
unless ``--out`` says otherwise, so a development run never replaces the committed report.

Sections (each a function returning rows ``(section, item, value, unit, note)`` for
results.csv, Markdown for the report and one verdict per target):

1. ``metric``: images/s of the project's DSB metric (:func:`nucseg_utils.metrics.image_scores`)
   against a plain ``numpy.histogram2d`` reference written here from Kaggle's definition, and
   against StarDist's ``matching`` when ``stardist`` imports; on stage1_test ground truth vs
   seeded perturbed copies and on the training images with the most nuclei. Agreement of the
   scores, and where StarDist's ``IoU >= t`` rule differs from Kaggle's ``IoU > t``.
2. ``postprocess``: ms per image at native resolution on the model's stage1_test probability
   maps, median and worst, per method; total time for the split.
3. ``inference``: the same 8-fold TTA with TensorFlow and with nucseg's default engine
   (OpenVINO on a CPU) side by side: time, probability differences, identical label images;
   images/s with and without TTA as ``nucseg evaluate`` predicts; the end-to-end time to
   evaluate stage1_test; peak resident memory.
4. ``training``: images/s of the input pipeline (``PatchSampler.batch``) vs Keras'
   ``ImageDataGenerator`` with the paper's arguments, and of a training step of the cpu
   profile's model.
5. ``quality``: DSB on stage1_test with no TTA vs TTA, per post-processing method, scored at
   native resolution and at 256x256 (the paper's way), and per modality.
6. ``streaming``: ``nucseg predict``'s peak memory on 200 images of 1024x1024 against one
   image's, and an interrupted run resumed to the same per-image files.

The stage1_test probability maps (with and without TTA) are computed once and shared by
sections 2, 3 and 5; the inference timings are measured while computing them.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nucseg_utils import data as data_mod  # noqa: E402
from nucseg_utils import metrics, runs  # noqa: E402
from nucseg_utils.postprocessing import METHODS, methods_for  # noqa: E402

SECTIONS = ("metric", "postprocess", "inference", "training", "quality", "streaming")
TITLES = {
    "metric": "1. Metric speed",
    "postprocess": "2. Post-processing",
    "inference": "3. Inference",
    "training": "4. Training throughput",
    "quality": "5. Quality ablations",
    "streaming": "6. Streaming prediction: memory and resuming",
}
DEFAULT_MODEL = REPO / "models" / "cpu" / "model.npz"
DEFAULT_OUT = REPO / "benchmarks"
DEV_OUT = REPO / "runs" / "benchmarks_dev"

# Targets of issue #6.
METRIC_SPEEDUP_TARGET = 20.0        # x faster than the histogram2d reference
POSTPROCESS_TOTAL_TARGET = 10.0     # s for all of stage1_test
PIPELINE_RATIO_TARGET = 10.0        # pipeline images/s >= 10 x training-step images/s
RUN_MINUTES_TARGET = 15.0           # the whole benchmark, one command
# Targets of issue #13.
TTA_SPEEDUP_TARGET = 2.0            # 8-fold TTA x faster than TensorFlow's eager call
MEMORY_FACTOR_TARGET = 2.0          # peak memory of 200 images <= this x that of one image
STAGE1_TEST_IMAGES = 65

# Sizes of a full and a quick run.
FULL = dict(metric_test=None, metric_train=10, repeats_fast=3, repeats_slow=2,
            predict_images=None, train_images=48, pipeline_batches=10, train_steps=6,
            stream_images=200, stream_size=1024, resume_images=6)
QUICK = dict(metric_test=6, metric_train=2, repeats_fast=2, repeats_slow=1,
             predict_images=4, train_images=16, pipeline_batches=2, train_steps=2,
             stream_images=3, stream_size=256, resume_images=3)


# --------------------------------------------------------------------------- results
@dataclass
class Result:
    """What a section hands to the report: CSV rows, Markdown lines and verdicts."""
    rows: list = field(default_factory=list)
    md: list = field(default_factory=list)
    verdicts: list = field(default_factory=list)

    def add(self, section, item, value, unit="", note=""):
        self.rows.append({"section": section, "item": item, "value": value, "unit": unit,
                          "note": note})

    def verdict(self, target, measured, met, missed_by="", why=""):
        if met is None:
            text = f"not measured{f' ({why})' if why else ''}"
        elif met:
            text = "met"
        else:
            text = f"missed by {missed_by}" + (f": {why}" if why else "")
        self.verdicts.append({"target": target, "measured": measured, "verdict": text})


def md_table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def shown(path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def fmt(v, digits=3):
    """A number for a table: ints as ints, floats to ``digits`` significant figures."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    v = float(v)
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


# --------------------------------------------------------------------------- reference metric
def reference_overlaps(true_labels, pred_labels):
    """Intersections and unions of all (true, predicted) object pairs, the way the
    competition's example kernel computed them: the intersection of every label pair is one
    ``numpy.histogram2d`` over the two flattened label images, the areas are 1-D histograms,
    and union = area_true + area_pred - intersection. Labels need not be consecutive: the bin
    edges sit half-way around every label value present (0 = background is always a bin).

    Returns (intersection, union) as float arrays of shape (n_true, n_pred)."""
    t = np.asarray(true_labels).ravel()
    p = np.asarray(pred_labels).ravel()
    t_ids = np.union1d(np.unique(t), [0]).astype(np.float64)
    p_ids = np.union1d(np.unique(p), [0]).astype(np.float64)
    t_edges = np.append(t_ids - 0.5, t_ids[-1] + 0.5)
    p_edges = np.append(p_ids - 0.5, p_ids[-1] + 0.5)
    inter = np.histogram2d(t, p, bins=(t_edges, p_edges))[0]
    area_t = np.histogram(t, bins=t_edges)[0]
    area_p = np.histogram(p, bins=p_edges)[0]
    inter = inter[1:, 1:]
    union = area_t[1:, None] + area_p[None, 1:] - inter
    return inter, union


def reference_threshold_counts(true_labels, pred_labels, thresholds=metrics.THRESHOLDS):
    """(TP, FP, FN) per threshold: a match is IoU > t; a true object is a TP when it has
    exactly one match, an FN when it has none; a predicted object with none is an FP."""
    inter, union = reference_overlaps(true_labels, pred_labels)
    iou = inter / np.where(union > 0, union, 1.0)
    out = []
    for t in thresholds:
        matches = iou > t
        per_true = matches.sum(axis=1)
        per_pred = matches.sum(axis=0)
        out.append((int((per_true == 1).sum()), int((per_pred == 0).sum()),
                    int((per_true == 0).sum())))
    return out


def reference_image_score(true_labels, pred_labels, thresholds=metrics.THRESHOLDS) -> float:
    """The DSB image score from its definition: mean over thresholds of TP / (TP + FP + FN),
    1.0 at a threshold where both images are empty."""
    scores = [tp / (tp + fp + fn) if tp + fp + fn else 1.0
              for tp, fp, fn in reference_threshold_counts(true_labels, pred_labels,
                                                           thresholds)]
    return float(np.mean(scores))


def nucseg_image_score(true_labels, pred_labels) -> float:
    return metrics.image_scores(true_labels, pred_labels)["dsb"]


def load_stardist():
    """(matching function, version, None) or (None, None, why it is not available)."""
    try:
        import stardist
        from stardist.matching import matching
    except Exception as err:  # noqa: BLE001 - any import failure means "skip"
        return None, None, f"{type(err).__name__}: {err}"
    return matching, getattr(stardist, "__version__", "?"), None


def stardist_counts(matching, true_labels, pred_labels, thresholds=metrics.THRESHOLDS):
    """StarDist's TP per threshold and its image score (mean of its ``accuracy``)."""
    stats = matching(np.asarray(true_labels), np.asarray(pred_labels),
                     thresh=[float(t) for t in thresholds])
    return [int(s.tp) for s in stats], float(np.mean([s.accuracy for s in stats]))


def tie_counts(true_labels, pred_labels, thresholds=metrics.THRESHOLDS):
    """Per threshold: pairs with IoU > t, and pairs with IoU exactly t (exact integer test
    ``100 * intersection == round(100 t) * union``)."""
    inter, union = reference_overlaps(true_labels, pred_labels)
    inter, union = inter.astype(np.int64), union.astype(np.int64)
    over, ties = [], []
    for t in thresholds:
        k = int(round(float(t) * 100))
        hit = inter > 0
        over.append(int((hit & (100 * inter > k * union)).sum()))
        ties.append(int((hit & (100 * inter == k * union)).sum()))
    return over, ties


# --------------------------------------------------------------------------- perturbations
def perturb_labels(labels, rng, p_drop=0.1, p_erode=0.3, p_shift=0.3, max_shift=3,
                   false_fraction=0.1):
    """A seeded 'prediction' of a ground-truth label image: each object is dropped with
    probability ``p_drop``, else eroded by one pixel with ``p_erode`` and shifted by up to
    ``max_shift`` pixels with ``p_shift``; then ``false_fraction`` x (number of objects) false
    discs (radius 3-8) are painted on the background. Label values are kept (false objects
    get new ones), so the result is generally not consecutive."""
    lab = np.asarray(labels)
    h, w = lab.shape
    out = np.zeros((h, w), np.int32)
    n = 0
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        n += 1
        u = rng.random(3)
        if u[0] < p_drop:
            continue
        m = lab[sl] == k
        if u[1] < p_erode:
            m = ndi.binary_erosion(m)
            if not m.any():
                continue
        dy = dx = 0
        if u[2] < p_shift:
            dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
        ys, xs = np.nonzero(m)
        ys, xs = ys + sl[0].start + dy, xs + sl[1].start + dx
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        out[ys[ok], xs[ok]] = k
    nxt = int(lab.max()) + 1
    for j in range(max(1, int(round(false_fraction * n)))):
        r = int(rng.integers(3, 9))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1, x0, x1 = max(0, cy - r), min(h, cy + r + 1), max(0, cx - r), min(w, cx + r + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        region = out[y0:y1, x0:x1]
        region[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (region == 0)] = nxt + j
    return out


# --------------------------------------------------------------------------- timing helpers
def time_scorer(score_fn, pairs, repeats: int):
    """Best total time over ``repeats`` passes of ``score_fn`` over ``pairs``; and the scores
    of the last pass."""
    best, scores = float("inf"), []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        scores = [score_fn(t, p) for t, p in pairs]
        best = min(best, time.perf_counter() - t0)
    return best, scores


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss, KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2 ** 20


def evenly(ids, n):
    """``n`` ids spread evenly over the sorted list (all of them when n is None)."""
    ids = sorted(ids)
    if n is None or n >= len(ids):
        return ids
    return [ids[int(i)] for i in np.linspace(0, len(ids) - 1, n).round()]


# --------------------------------------------------------------------------- shared context
class CachedSource:
    """A stand-in for a Split that serves already-read samples to ``score_labels``."""

    def __init__(self, name, samples):
        self.source = name
        self._samples = {s.id: s for s in samples}

    def sample(self, sid):
        return self._samples[sid]


class Context:
    """Data, the model and the stage1_test predictions, each computed once per run."""

    def __init__(self, model_path, sizes: dict, root=None, seed: int = 0, progress=True):
        self.model_path = Path(model_path)
        self.sizes = sizes
        self.root = root
        self.seed = seed
        self.progress = progress
        self._test = None
        self._models: dict = {}
        self._preds = None
        self._labels: dict = {}
        self.timings: dict = {}

    def log(self, msg):
        if self.progress:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- data
    def test_split(self):
        return data_mod.open_split("stage1_test", self.root)

    def test_samples(self, n=None):
        """stage1_test samples (all, or ``n`` spread evenly), with read times per image."""
        if self._test is None:
            self._test = {}
            self.timings["read_image"], self.timings["read_labels"] = {}, {}
        split = self.test_split()
        try:
            for sid in evenly(split.ids, n):
                if sid in self._test:
                    continue
                t0 = time.perf_counter()
                img = split.image(sid)
                t1 = time.perf_counter()
                lab = split.labels(sid, img.shape[:2])
                t2 = time.perf_counter()
                self.timings["read_image"][sid] = t1 - t0
                self.timings["read_labels"][sid] = t2 - t1
                self._test[sid] = data_mod.Sample(sid, img, lab, "stage1_test")
        finally:
            split.close()
        return [self._test[s] for s in evenly(split.ids, n)]

    # -- the model
    def has_model(self) -> bool:
        return self.model_path.is_file()

    def model(self, engine: str | None = None):
        """(model, config) predicting with ``engine`` (None: nucseg's default, as the
        commands use it, in float32 even when ``NUCSEG_ENGINE`` says openvino-bf16); each
        engine's model is loaded once."""
        from nucseg_utils.model import (exact_engine, load_model, predict_probabilities,
                                        resolve_engine)
        engine = resolve_engine(engine) if engine else exact_engine()
        if engine not in self._models:
            t0 = time.perf_counter()
            self._models[engine] = load_model(self.model_path, engine=engine)
            self.timings.setdefault("load_model", {})[engine] = time.perf_counter() - t0
            # the first call builds the kernels; timed apart from the images
            t0 = time.perf_counter()
            model, config = self._models[engine]
            predict_probabilities(model, np.zeros((64, 64, 3), np.float32), config)
            self.timings.setdefault("warmup", {})[engine] = time.perf_counter() - t0
        return self._models[engine]

    @property
    def engine(self) -> str:
        from nucseg_utils.model import engine_of
        return engine_of(self.model()[0])

    def bf16_engine(self) -> list[str]:
        """["openvino-bf16"] when OpenVINO computes in bfloat16 on this CPU, else []."""
        from nucseg_utils.model import has_bfloat16
        return ["openvino-bf16"] if self.engine == "openvino" and has_bfloat16() else []

    def predictions(self):
        """{'plain': {id: prob}, 'tta': {id: prob}} on the evaluated stage1_test images as
        ``nucseg evaluate`` makes them (:func:`evaluation.predict_image`: normalised, rescaled
        to the model's nucleus size, predicted with nucseg's default engine), with per-image
        times; and side by side, the 8-fold TTA of the normalised image at native size
        (:func:`tta.predict`) with TensorFlow and with the default engine."""
        if self._preds is None:
            from nucseg_utils.evaluation import predict_image
            from nucseg_utils.preprocessing import normalize
            from nucseg_utils.tta import predict
            samples = self.test_samples(self.sizes["predict_images"])
            model, config = self.model()
            engines = sorted({"tensorflow", self.engine} | set(self.bf16_engine()))
            t = {k: {} for k in ("predict_plain", "predict_tta",
                                 *(f"native_tta_{e}" for e in engines))}
            plain, tta, native = {}, {}, {e: {} for e in engines}
            for i, s in enumerate(samples):
                t0 = time.perf_counter()
                plain[s.id] = predict_image(model, config, s.image, tta=False)
                t1 = time.perf_counter()
                tta[s.id] = predict_image(model, config, s.image, tta=True)
                t2 = time.perf_counter()
                img = normalize(s.image, config["normalization"])
                t["predict_plain"][s.id], t["predict_tta"][s.id] = t1 - t0, t2 - t1
                for e in engines:
                    t3 = time.perf_counter()
                    native[e][s.id] = predict(self.model(e)[0], img, config, tta=True)
                    t[f"native_tta_{e}"][s.id] = time.perf_counter() - t3
                self.log(f"predicted {i + 1}/{len(samples)} {s.image.shape[:2]}: "
                         f"{t1 - t0:.2f} s, TTA {t2 - t1:.2f} s; native TTA " +
                         ", ".join(f"{e} {t[f'native_tta_{e}'][s.id]:.2f} s" for e in engines))
            self._preds = {"plain": plain, "tta": tta, "native": native}
            self.timings.update(t, rss_after_predict=peak_rss_mib())
        return self._preds

    def methods(self):
        """The post-processing methods this model's maps allow, the model's own first."""
        _, config = self.model()
        probs = next(iter(self.predictions()["tta"].values()))
        channels = probs.shape[-1] if probs.ndim == 3 else 1
        own = config.get("postprocess", "paper")
        ms = methods_for(channels)
        return sorted(ms, key=lambda m: (m != own, METHODS.index(m)))

    def labels(self, which: str, method: str, engine: str | None = None):
        """Post-processed label images of the 'plain' or 'tta' maps (or, with ``engine``, of
        that engine's native-size TTA maps), with the model's threshold, marker spacing,
        minimum size and dilation; with per-image times."""
        from nucseg_utils.evaluation import postprocess_one
        key = (which, method, engine)
        if key not in self._labels:
            _, config = self.model()
            out, times = {}, {}
            maps = self.predictions()[which] if engine is None else \
                self.predictions()["native"][engine]
            for sid, p in maps.items():
                t0 = time.perf_counter()
                out[sid] = postprocess_one(p, config, method)
                times[sid] = time.perf_counter() - t0
            self._labels[key] = (out, times)
        return self._labels[key]


# --------------------------------------------------------------------------- 1. metric
def metric_pairs(ctx: Context):
    """(name, [(true, perturbed)]) groups: stage1_test, and the training images with the
    most nuclei. Seeded by ``ctx.seed``."""
    rng = np.random.default_rng([ctx.seed, 6])
    test = ctx.test_samples(ctx.sizes["metric_test"])
    groups = [(f"stage1_test ({len(test)} images)",
               [(s.labels, perturb_labels(s.labels, rng)) for s in test])]
    n_train = ctx.sizes["metric_train"]
    if n_train:
        split = data_mod.open_split("stage1_train", ctx.root)
        try:
            if split.solution_path is not None:
                counts = sorted(((len(runs_), sid) for sid, (runs_, _, _)
                                 in split.solution().items()), reverse=True)[:n_train]
                labs = [split.labels(sid) for _, sid in counts]
                nuclei = ", ".join(str(c) for c, _ in counts)
                groups.append((f"stage1_train, {len(labs)} images with the most nuclei "
                               f"({nuclei})", [(lab, perturb_labels(lab, rng))
                                               for lab in labs]))
        finally:
            split.close()
    return groups


def section_metric(ctx: Context) -> Result:
    res = Result()
    sec = "metric"
    groups = metric_pairs(ctx)
    matching, sd_version, sd_why = load_stardist()
    impls = [("nucseg metrics.image_scores", nucseg_image_score, ctx.sizes["repeats_fast"]),
             ("reference (numpy.histogram2d)", reference_image_score,
              ctx.sizes["repeats_slow"])]
    sd_compile = None
    if matching is not None:
        t, p = groups[0][1][0]
        t0 = time.perf_counter()
        stardist_counts(matching, t, p)  # numba compiles here
        sd_compile = time.perf_counter() - t0
        impls.append((f"StarDist {sd_version} matching",
                      lambda a, b: stardist_counts(matching, a, b)[1],
                      ctx.sizes["repeats_slow"]))
    table, speed, scores = [], {}, {}
    tot_time = {name: 0.0 for name, _, _ in impls}
    tot_imgs = 0
    for gname, pairs in groups:
        n = len(pairs)
        tot_imgs += n
        mpix = sum(t.size for t, _ in pairs) / 1e6
        objs = sum(int(t.max()) for t, _ in pairs)
        for name, fn, reps in impls:
            ctx.log(f"metric: {name} on {gname}")
            sec_, sc = time_scorer(fn, pairs, reps)
            tot_time[name] += sec_
            speed[(gname, name)] = n / sec_
            scores[(gname, name)] = np.asarray(sc)
            res.add(sec, f"{name}: {gname}", n / sec_, "images/s",
                    f"best of {reps}; {1000 * sec_ / n:.2f} ms/image; {mpix:.1f} Mpx, "
                    f"{objs} true objects")
            table.append([gname, name, fmt(n / sec_), fmt(1000 * sec_ / n),
                          fmt(speed[(gname, impls[0][0])] / speed[(gname, name)])])
    ours, ref = impls[0][0], impls[1][0]
    overall = {name: tot_imgs / tot_time[name] for name in tot_time}
    ratio_ref = overall[ours] / overall[ref]
    for name, _, _ in impls[1:]:
        res.add(sec, f"speed-up of nucseg over {name}", overall[ours] / overall[name], "x",
                f"all {tot_imgs} images")
    # why a miss is a miss: the fixed cost of one call, measured on an empty image
    empty = np.zeros((64, 64), np.uint16)
    call_s, _ = time_scorer(nucseg_image_score, [(empty, empty)] * 200, 3)
    call_ms = 1000 * call_s / 200
    res.add(sec, "fixed cost of one image_scores call (empty 64x64)", call_ms, "ms", "")
    per_image_ms = 1000 / overall[ours]
    why = (f"the reference is itself vectorised C (one `histogram2d` per image), so there is no "
           f"Python loop left to remove; of nucseg's {per_image_ms:.2f} ms per image, "
           f"{call_ms:.2f} ms is the fixed cost of a call (measured on an empty image) and the "
           f"rest is a few passes over the pixels (combining the two label images into pair "
           f"codes, one `bincount`). Per group: " + ", ".join(
               f"{speed[(g, ours)] / speed[(g, ref)]:.1f}x on {g}" for g, _ in groups) +
           f"; load average at the end of the section {os.getloadavg()[0]:.2f}")
    res.verdict(f"metric >= {METRIC_SPEEDUP_TARGET:g}x faster than the histogram2d reference",
                f"{ratio_ref:.1f}x", ratio_ref >= METRIC_SPEEDUP_TARGET,
                f"{METRIC_SPEEDUP_TARGET / ratio_ref:.2f}x "
                f"({ratio_ref:.1f}x instead of {METRIC_SPEEDUP_TARGET:g}x)", why)

    # agreement
    agree_rows = []
    for gname, _ in groups:
        d = np.abs(scores[(gname, ours)] - scores[(gname, ref)])
        res.add(sec, f"max |nucseg - reference| image score: {gname}", float(d.max()), "",
                f"{int((d > 1e-12).sum())} of {d.size} images differ")
        agree_rows.append([gname, ref, fmt(float(d.max())), f"{int((d > 1e-12).sum())} / "
                           f"{d.size}", fmt(float(scores[(gname, ours)].mean()), 4),
                           fmt(float(scores[(gname, ref)].mean()), 4)])
    sd_md = []
    if matching is not None:
        sd = impls[2][0]
        n_diff = n_imgs = cells = explained = tie_cells = 0
        tie_by_t = np.zeros(len(metrics.THRESHOLDS), int)
        for gname, pairs in groups:
            d = np.abs(scores[(gname, ours)] - scores[(gname, sd)])
            agree_rows.append([gname, sd, fmt(float(d.max())),
                               f"{int((d > 1e-12).sum())} / {d.size}",
                               fmt(float(scores[(gname, ours)].mean()), 4),
                               fmt(float(scores[(gname, sd)].mean()), 4)])
            res.add(sec, f"max |nucseg - StarDist| image score: {gname}", float(d.max()), "",
                    f"{int((d > 1e-12).sum())} of {d.size} images differ")
            n_diff += int((d > 1e-12).sum())
            n_imgs += d.size
            for t, p in pairs:
                sd_tp, _ = stardist_counts(matching, t, p)
                ours_r = metrics.image_scores(t, p)
                over, ties = tie_counts(t, p)
                tie_by_t += np.asarray(ties)
                for i in range(len(metrics.THRESHOLDS)):
                    if sd_tp[i] != int(ours_r["tp"][i]):
                        cells += 1
                        tie_cells += ties[i] > 0
                        explained += sd_tp[i] == over[i] + ties[i]
        ties_txt = ", ".join(f"{t:.2f}: {c}" for t, c in zip(metrics.THRESHOLDS, tie_by_t) if c)
        res.add(sec, "StarDist: (image, threshold) cells whose TP differs", cells, "",
                f"{explained} explained by counting IoU == t as a match")
        sd_md = [
            "",
            f"StarDist differs from Kaggle's rule on {n_diff} of {n_imgs} images. Its "
            f"`matching` counts a pair as matched when IoU **>=** t (Kaggle: IoU **>** t), and "
            f"it computes the IoU in float32 and compares it with the threshold as float32, "
            f"so a pair whose IoU is exactly t (a ratio of small integers such as 6/10 = 0.6, "
            f"frequent on small nuclei) is a TP for StarDist and not for Kaggle. In these images "
            f"{int(tie_by_t.sum())} object pairs have an IoU exactly equal to a threshold "
            f"(per threshold: {ties_txt or 'none'}); {cells} (image, threshold) TP counts "
            f"differ, {tie_cells} of them where such a tie exists, and {explained} of the "
            f"{cells} are exactly Kaggle's TP plus the ties. StarDist also scores an image "
            f"with no true and no predicted object 0 (its `accuracy` is 0 whenever TP = 0), "
            f"where Kaggle scores 1; no benchmark image is empty. And it finds the matching "
            f"with `linear_sum_assignment`, which matters only for IoU = 0.5 exactly, the one "
            f"case where a >= rule lets one object match two.",
        ]
    else:
        res.add(sec, "StarDist matching", float("nan"), "", f"skipped: {sd_why}")
        sd_md = ["", f"**StarDist: skipped** - `import stardist` failed here ({sd_why}). "
                 "`stardist` is an optional dependency of this benchmark only; its "
                 "`stardist.matching` module imports `numba` (with `llvmlite`, about 200 MB) "
                 "and `csbdeep`, so `pip install stardist --no-deps` alone does not make it "
                 "importable. With `pip install stardist` (which adds csbdeep, numba and "
                 "llvmlite and leaves numpy and TensorFlow as they are) the next run includes "
                 "it. Known difference, from its source: StarDist matches at IoU >= t, Kaggle "
                 "at IoU > t, so they differ exactly where an IoU equals a threshold."]

    res.md += [
        "The same label images are scored by each implementation: the stage1_test ground "
        "truth against a seeded perturbed copy (each nucleus dropped with p = 0.1, eroded by "
        "one pixel with p = 0.3, shifted by up to 3 pixels with p = 0.3, plus false discs "
        "numbering 10% of the nuclei), and the same for the training images with the most "
        "nuclei. The reference is the competition kernel's approach written here from its "
        "definition: one `numpy.histogram2d` over the two flattened label images for the "
        "intersections, `numpy.histogram` for the areas, union = areas - intersection, and "
        "matches = IoU > t at each threshold. Times are the best of several passes "
        "over all images; nucseg's `image_scores` also computes F1, pixel accuracy and pixel "
        "IoU in that time.",
        "",
        *md_table(["images", "implementation", "images/s", "ms/image", "nucseg is x faster"],
                  table),
        "",
        f"Overall, nucseg scores {overall[ours]:.0f} images/s, the reference "
        f"{overall[ref]:.1f} images/s: **{ratio_ref:.1f}x** (target >= "
        f"{METRIC_SPEEDUP_TARGET:g}x)." +
        (f" StarDist: {overall[impls[2][0]]:.1f} images/s after {sd_compile:.1f} s of "
         f"numba compilation on the first call (not counted)." if matching is not None
         else ""),
        "",
        "Agreement of the image scores:",
        "",
        *md_table(["images", "compared with", "max abs difference", "images that differ",
                   "mean DSB (nucseg)", "mean DSB (other)"], agree_rows),
        *sd_md,
    ]
    return res


# --------------------------------------------------------------------------- 2. post-processing
def section_postprocess(ctx: Context) -> Result:
    res = Result()
    sec = "postprocess"
    _, config = ctx.model()
    preds = ctx.predictions()
    n = len(preds["tta"])
    scale = STAGE1_TEST_IMAGES / n
    own = config.get("postprocess", "paper")
    table = []
    for which in ("tta", "plain"):
        for m in ctx.methods():
            ctx.log(f"postprocess: {m} on {which} maps")
            _, times = ctx.labels(which, m)
            ms = 1000 * np.asarray(list(times.values()))
            total = float(ms.sum() / 1000)
            worst = max(times, key=times.get)
            shape = preds[which][worst].shape[:2]
            est = total * scale
            tag = f"{m} ({'TTA' if which == 'tta' else 'no TTA'} maps)"
            res.add(sec, f"{tag}: median", float(np.median(ms)), "ms/image")
            res.add(sec, f"{tag}: worst", float(ms.max()), "ms/image", f"{shape[0]}x{shape[1]}")
            res.add(sec, f"{tag}: total", total, "s", f"{n} images")
            table.append([m + (" (model's)" if m == own else ""),
                          "TTA" if which == "tta" else "none", fmt(float(np.median(ms))),
                          f"{fmt(float(ms.max()))} ({shape[0]}x{shape[1]})",
                          fmt(float(ms.mean())), fmt(total) +
                          ("" if n == STAGE1_TEST_IMAGES else f" (~{fmt(est)} for 65)")])
            if which == "tta":
                measured = (f"{est:.1f} s" if n == STAGE1_TEST_IMAGES else
                            f"~{est:.1f} s (extrapolated from {n} images)")
                res.verdict(f"all of stage1_test post-processed in < "
                            f"{POSTPROCESS_TOTAL_TARGET:g} s ({m})", measured,
                            est < POSTPROCESS_TOTAL_TARGET,
                            f"{est - POSTPROCESS_TOTAL_TARGET:.1f} s",
                            f"median {np.median(ms):.0f} ms, worst {ms.max():.0f} ms on a "
                            f"{shape[0]}x{shape[1]} image; load average "
                            f"{os.getloadavg()[0]:.2f}")
    res.md += [
        f"Milliseconds per image to turn one probability map into a label image at the "
        f"image's native size (`postprocessing.postprocess` with the model's min_size and "
        f"marker spacing), on the model's own predictions of {n} stage1_test images. One "
        f"process, one thread (scipy and scikit-image do not parallelise these calls).",
        "",
        *md_table(["method", "TTA of the maps", "median ms", "worst ms (image)", "mean ms",
                   "total s"], table),
    ]
    return res


# --------------------------------------------------------------------------- 3. inference
def section_inference(ctx: Context) -> Result:
    from nucseg_utils.evaluation import score_labels
    res = Result()
    sec = "inference"
    model, config = ctx.model()
    engine = ctx.engine
    preds = ctx.predictions()
    tm = ctx.timings
    ids = sorted(preds["tta"])
    n = len(ids)
    shapes = {sid: preds["tta"][sid].shape[:2] for sid in ids}
    mpix = sum(h * w for h, w in shapes.values()) / 1e6
    plain = sum(tm["predict_plain"][s] for s in ids)
    tta = sum(tm["predict_tta"][s] for s in ids)
    res.add(sec, f"model load ({engine})", tm["load_model"][engine], "s", shown(ctx.model_path))
    res.add(sec, f"first call (warm-up, 64x64, {engine})", tm["warmup"][engine], "s")
    res.add(sec, "predict without TTA", n / plain, "images/s",
            f"{n} images, {mpix / plain:.2f} Mpx/s, {engine}, as `nucseg evaluate`")
    res.add(sec, "predict with 8-fold TTA", n / tta, "images/s",
            f"{n} images, {mpix / tta:.3f} Mpx/s, {engine}, as `nucseg evaluate`")
    res.add(sec, "TTA cost", tta / plain, "x", "time with TTA / time without")

    # side by side: the 8-fold TTA at native size, TensorFlow vs the default engine
    src = CachedSource("stage1_test", ctx.test_samples(ctx.sizes["predict_images"]))
    own = config.get("postprocess", "paper")
    engines = sorted(preds["native"])
    base = "tensorflow"
    engines = [base] + [e for e in engines if e != base]
    secs = {e: sum(tm[f"native_tta_{e}"][s] for s in ids) for e in engines}
    side = []
    ref_labels, _ = ctx.labels("native", own, engine=base)
    for e in engines:
        labels, _ = ctx.labels("native", own, engine=e)
        summary, _ = score_labels(labels, src)
        diff = 0.0 if e == base else max(
            float(np.abs(preds["native"][e][s] - preds["native"][base][s]).max()) for s in ids)
        same = sum(np.array_equal(labels[s], ref_labels[s]) for s in ids)
        res.add(sec, f"native 8-fold TTA: {e}", secs[e], "s", f"{n} images")
        res.add(sec, f"native 8-fold TTA: {e}, max abs difference from tensorflow", diff, "")
        res.add(sec, f"native 8-fold TTA: {e}, label images identical to tensorflow's", same,
                "images", f"of {n}")
        res.add(sec, f"native 8-fold TTA: {e}, DSB", summary["dsb"], "", f"{n} images")
        side.append([e, fmt(secs[e]), fmt(1000 * secs[e] / n), fmt(secs[base] / secs[e]),
                     f"{diff:.2g}", f"{same} / {n}", f"{summary['dsb']:.4f}"])
    speedup = secs[base] / secs[engine] if engine != base else 1.0
    res.verdict("8-fold TTA >= 2x faster than TensorFlow with the same outputs",
                f"{speedup:.2f}x ({engine})", speedup >= TTA_SPEEDUP_TARGET,
                f"{TTA_SPEEDUP_TARGET / speedup:.2f}x" if speedup else "",
                f"load average at the end of the predictions {os.getloadavg()[0]:.2f}")

    # end to end: the steps of `nucseg evaluate`, each measured in this run
    labels, pp_times = ctx.labels("tta", own)
    t0 = time.perf_counter()
    score_labels(labels, src)
    t_score = time.perf_counter() - t0
    parts = [
        (f"load model (+ warm-up call), {engine}", tm["load_model"][engine] +
         tm["warmup"][engine]),
        ("read images", sum(tm["read_image"][s] for s in ids)),
        ("normalise, rescale, predict with TTA, resize back", tta),
        (f"post-process ({own})", sum(pp_times.values())),
        ("read ground truth", sum(tm["read_labels"][s] for s in ids)),
        ("score (native)", t_score),
    ]
    total = sum(v for _, v in parts)
    fixed = parts[0][1]
    est = fixed + (total - fixed) * STAGE1_TEST_IMAGES / n
    for name, v in parts:
        res.add(sec, f"end to end: {name}", v, "s", f"{n} images")
    res.add(sec, "end to end: total", total, "s",
            f"{n} images" + ("" if n == STAGE1_TEST_IMAGES else f"; ~{est:.0f} s for 65"))
    rss = peak_rss_mib()
    res.add(sec, "peak resident memory after prediction", tm["rss_after_predict"], "MiB",
            "ru_maxrss of the benchmark process (includes the data and TensorFlow)")
    # by image size
    buckets: dict = {}
    for s in ids:
        h, w = shapes[s]
        buckets.setdefault((h, w), []).append(s)
    size_rows = []
    for (h, w), ss in sorted(buckets.items(), key=lambda kv: kv[0][0] * kv[0][1]):
        size_rows.append([f"{h}x{w}", len(ss),
                          fmt(1000 * np.mean([tm["predict_plain"][s] for s in ss])),
                          fmt(1000 * np.mean([tm["predict_tta"][s] for s in ss]))] +
                         [fmt(1000 * np.mean([tm[f"native_tta_{e}"][s] for s in ss]))
                          for e in engines])
    res.md += [
        f"The model `{shown(ctx.model_path)}` ({config.get('backbone')} U-Net, "
        f"{len(config.get('targets', []))} output channel(s), input mode "
        f"`{config.get('input_mode')}`) predicts {n} stage1_test images one at a time on "
        f"{os.cpu_count()} cores. The first call of each engine ({', '.join(f'{e} {fmt(v)} s' for e, v in tm['warmup'].items())}) "
        f"is timed apart.",
        "",
        f"**Side by side, the same 8-fold TTA** (`tta.predict` on the normalised image at its "
        f"native size, the code path `nucseg evaluate` used before images were rescaled to "
        f"a nucleus size), image after image in one process, once with TensorFlow (Keras' "
        f"eager call, the engine before this change), once with the engine nucseg now "
        f"uses by default{', and once with that engine in bfloat16' if len(engines) > 2 else ''}"
        f". Label images: post-processed as the model's config says "
        f"({own}, threshold {config.get('threshold', 0.5)}); DSB at native size. OpenVINO "
        f"converts the Keras graph once at load ({fmt(tm['load_model'].get('openvino', 0))} s "
        f"with the model's build) and computes in float32 like TensorFlow; only the order of "
        f"floating-point sums differs.",
        "",
        *md_table(["engine", "s for these images", "ms/image", "x faster than tensorflow",
                   "max abs probability difference", "label images identical",
                   "DSB native"], side),
        "",
        *([f"`openvino-bf16` (`--engine openvino-bf16`, never the default) is OpenVINO "
           f"computing in bfloat16, which this CPU has instructions for: "
           f"{fmt(secs[base] / secs['openvino-bf16'])}x as fast as TensorFlow, but not the "
           f"same outputs (bfloat16 keeps 8 bits of mantissa), so it does not count for the "
           f"target above; the table gives what changes.", ""]
          if "openvino-bf16" in secs else []),
        f"As `nucseg evaluate` predicts ({engine}; with the model's rescaling to a nucleus "
        f"diameter of {config.get('target_diameter')} px, a size probe at "
        f"{config.get('size_probe')}x and the probabilities resized back):",
        "",
        *md_table(["", "images/s", "Mpx/s", "s for these images"],
                  [["no TTA", fmt(n / plain), fmt(mpix / plain), fmt(plain)],
                   ["8-fold TTA", fmt(n / tta), fmt(mpix / tta), fmt(tta)]]),
        "",
        "By image size (ms per image):",
        "",
        *md_table(["size", "images", f"evaluate, no TTA ({engine})",
                   f"evaluate, TTA ({engine})"] +
                  [f"native TTA, {e}" for e in engines], size_rows),
        "",
        f"End to end, the steps of `nucseg evaluate --split stage1_test` (without writing its "
        f"output files), each timed in this run:",
        "",
        *md_table(["step", "s"], [[k, fmt(v)] for k, v in parts] +
                  [["**total**", f"**{fmt(total)}**" +
                    ("" if n == STAGE1_TEST_IMAGES else f" (~{est:.0f} s for all 65)")]]),
        "",
        f"Peak resident memory (`resource.getrusage(...).ru_maxrss`) after the predictions: "
        f"{tm['rss_after_predict']:.0f} MiB; now {rss:.0f} MiB. It is the benchmark "
        f"process's peak, so it includes TensorFlow, OpenVINO, {len(engines)} copies of the "
        f"model and "
        f"all stage1_test images and maps held in memory; `nucseg predict`'s own memory, "
        f"which streams, is measured in section 6.",
    ]
    return res


# --------------------------------------------------------------------------- 4. training
def training_data(ctx: Context, n: int):
    """``n`` seeded random stage1_train samples."""
    split = data_mod.open_split("stage1_train", ctx.root)
    try:
        rng = np.random.default_rng([ctx.seed, 4])
        ids = sorted(rng.choice(split.ids, size=min(n, len(split)), replace=False).tolist())
        return [split.sample(s) for s in ids]
    finally:
        split.close()


def time_batches(make_batch, n_batches: int):
    """(images/s, seconds per batch, last batch, mean images per batch) of
    ``make_batch(step)``."""
    t0 = time.perf_counter()
    count = 0
    batch = None
    for step in range(n_batches):
        batch = make_batch(step)
        count += len(batch[0])
    dt = time.perf_counter() - t0
    return count / dt, dt / n_batches, batch, count / n_batches


def keras_generator(images, masks, batch_size: int, seed: int):
    """The paper's augmentation with Keras' ImageDataGenerator: one generator for images,
    one for masks, the same arguments and seed so both see the same transforms."""
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    args = dict(rotation_range=90, width_shift_range=0.1, height_shift_range=0.1,
                shear_range=10, zoom_range=0.1, horizontal_flip=True, vertical_flip=True)
    gi, gm = ImageDataGenerator(**args), ImageDataGenerator(**args)
    fi = gi.flow(images, batch_size=batch_size, seed=seed, shuffle=True)
    fm = gm.flow(masks, batch_size=batch_size, seed=seed, shuffle=True)
    return zip(fi, fm)


def section_training(ctx: Context) -> Result:
    from nucseg_utils.augmentation import PatchSampler
    from nucseg_utils.preprocessing import normalize, resize_image, resize_labels
    from nucseg_utils.profiles import get_profile
    res = Result()
    sec = "training"
    nb = ctx.sizes["pipeline_batches"]
    cpu = get_profile("cpu")
    paper = get_profile("paper")
    samples = training_data(ctx, ctx.sizes["train_images"])
    ctx.log(f"training: {len(samples)} stage1_train images")
    labels = [s.labels.astype(np.int32) for s in samples]
    table = []
    # the project's pipeline, cpu profile (what training uses)
    cpu_imgs = [normalize(s.image, cpu["normalization"]) for s in samples]
    sampler = PatchSampler(cpu_imgs, labels, cpu)
    cpu_rate, cpu_sec, cpu_batch, cpu_n = time_batches(sampler.batch, nb)
    table.append(["nucseg PatchSampler.batch, cpu profile",
                  f"{cpu['input_size']}x{cpu['input_size']} crops, "
                  f"{'+'.join(cpu['targets'])}", fmt(cpu_n), fmt(cpu_rate),
                  fmt(1000 * cpu_sec)])
    # the project's pipeline, paper profile (whole image resized to 256, paper ranges)
    ctx.log("training: PatchSampler with the paper profile")
    pap_imgs = [normalize(s.image, paper["normalization"]) for s in samples]
    pap = dict(paper, batch_size=cpu["batch_size"])
    pap_rate, pap_sec, _, pap_n = time_batches(PatchSampler(pap_imgs, labels, pap).batch, nb)
    table.append(["nucseg PatchSampler.batch, paper profile",
                  "whole image to 256x256, mask", fmt(pap_n), fmt(pap_rate),
                  fmt(1000 * pap_sec)])
    # Keras ImageDataGenerator on the same images, resized to 256x256 beforehand
    ctx.log("training: Keras ImageDataGenerator")
    x = np.stack([resize_image(im, (256, 256)) for im in pap_imgs])
    y = np.stack([(resize_labels(lab, (256, 256)) > 0)[..., None] for lab in labels]
                 ).astype(np.float32)
    gen = keras_generator(x, y, cpu["batch_size"], ctx.seed)
    k_rate, k_sec, _, k_n = time_batches(lambda _step: next(gen), nb)
    table.append(["Keras ImageDataGenerator (paper's arguments)",
                  "pre-resized 256x256 image + mask", fmt(k_n), fmt(k_rate),
                  fmt(1000 * k_sec)])
    for name, rate in (("PatchSampler cpu profile", cpu_rate),
                       ("PatchSampler paper profile", pap_rate),
                       ("Keras ImageDataGenerator paper arguments", k_rate)):
        res.add(sec, f"input pipeline: {name}", rate, "images/s",
                f"{nb} batches of {cpu['batch_size']}, one thread")
    # a training step of the cpu profile's model
    ctx.log("training: train_on_batch of the cpu profile's model")
    from nucseg_utils import model as model_mod
    model_mod.tf_setup()
    net = model_mod.compile_model(model_mod.build_model(cpu), cpu)
    xb, yb = cpu_batch
    t0 = time.perf_counter()
    net.train_on_batch(xb, yb)
    first = time.perf_counter() - t0
    steps = ctx.sizes["train_steps"]
    batches = [sampler.batch(1000 + s) for s in range(steps)]  # made first: steps alone
    t0 = time.perf_counter()
    for xb, yb in batches:
        net.train_on_batch(xb, yb)
    step_sec = (time.perf_counter() - t0) / steps
    step_rate = cpu["batch_size"] / step_sec
    res.add(sec, "training step (cpu profile model)", step_rate, "images/s",
            f"{1000 * step_sec:.0f} ms per step of {cpu['batch_size']}x{cpu['input_size']}^2;"
            f" mean of {steps}")
    res.add(sec, "first training step (graph tracing)", first, "s")
    ratio = cpu_rate / step_rate
    share = 100 * step_rate / cpu_rate
    res.add(sec, "pipeline / training step", ratio, "x",
            f"the pipeline costs {share:.1f}% of a training step's time")
    res.verdict(f"input pipeline never the bottleneck (pipeline images/s >= "
                f"{PIPELINE_RATIO_TARGET:g}x training step images/s)",
                f"{ratio:.1f}x ({fmt(cpu_rate)} vs {fmt(step_rate)} images/s)",
                ratio >= PIPELINE_RATIO_TARGET,
                f"{PIPELINE_RATIO_TARGET / ratio:.2f}x",
                f"a batch takes {1000 * cpu_sec:.0f} ms to make and "
                f"{1000 * step_sec:.0f} ms to train on")
    res.md += [
        f"Images per second of the input pipeline alone (one thread, {nb} batches, on "
        f"{len(samples)} seeded random stage1_train images held in memory), and of a "
        f"training step (`train_on_batch`) of the cpu profile's model "
        f"({cpu['backbone']} U-Net, batch {cpu['batch_size']} x {cpu['input_size']}x"
        f"{cpu['input_size']}, {'+'.join(cpu['targets'])} targets, {steps} steps after one "
        f"untimed first step of {first:.1f} s). Keras' `ImageDataGenerator` gets the paper's "
        f"arguments (rotation_range=90, width/height_shift_range=0.1, shear_range=10, "
        f"zoom_range=0.1, horizontal and vertical flips) and the same images resized to "
        f"256x256 beforehand (not timed), with a second generator and the same seed for the "
        f"masks; nucseg's paper profile does the resize, rotation, shear, zoom, shift and "
        f"flips in one interpolation per sample, and also builds the targets.",
        "",
        *md_table(["pipeline", "what it makes", "images per batch", "images/s", "ms/batch"],
                  table),
        "",
        f"Training step: **{fmt(step_rate)} images/s** ({1000 * step_sec:.0f} ms per "
        f"batch). The cpu pipeline makes **{ratio:.1f}x** as many images per second as the "
        f"training step consumes, so with `augmentation.prefetch` (one background thread) it "
        f"takes about {fmt(share, 2)}% of the time of a step: " +
        ("it is not the bottleneck." if ratio >= PIPELINE_RATIO_TARGET else
         f"below the {PIPELINE_RATIO_TARGET:g}x margin this benchmark asks for."),
    ]
    return res


# --------------------------------------------------------------------------- 5. quality
def section_quality(ctx: Context) -> Result:
    from nucseg_utils.evaluation import PAPER_SIZE, score_labels
    res = Result()
    sec = "quality"
    _, config = ctx.model()
    preds = ctx.predictions()
    n = len(preds["tta"])
    src = CachedSource("stage1_test", ctx.test_samples(ctx.sizes["predict_images"]))
    own = config.get("postprocess", "paper")
    rows, mods, counts = [], None, {}
    for which in ("plain", "tta"):
        for m in ctx.methods():
            ctx.log(f"quality: {m}, {which}")
            labels, _ = ctx.labels(which, m)
            native, _ = score_labels(labels, src)
            small, _ = score_labels(labels, src, resize_to=PAPER_SIZE)
            mods = mods or sorted(native["by_modality"])
            counts = counts or native["by_modality"]
            tag = f"{'TTA' if which == 'tta' else 'no TTA'}, {m}"
            res.add(sec, f"DSB native: {tag}", native["dsb"], "", f"{n} images")
            res.add(sec, f"DSB at {PAPER_SIZE}x{PAPER_SIZE}: {tag}", small["dsb"], "",
                    "both label images resized (nearest neighbour)")
            res.add(sec, f"F1 at IoU 0.5 native: {tag}", native["f1"], "")
            for mod, v in native["by_modality"].items():
                res.add(sec, f"DSB native {mod}: {tag}", v["dsb"], "", f"{v['images']} images")
            rows.append(["TTA" if which == "tta" else "none",
                         m + (" (model's)" if m == own else ""),
                         f"**{native['dsb']:.4f}**" if (which == "tta" and m == own)
                         else f"{native['dsb']:.4f}",
                         f"{small['dsb']:.4f}", f"{native['precision']:.3f}",
                         f"{native['recall']:.3f}", f"{native['f1']:.3f}"] +
                        [f"{native['by_modality'][k]['dsb']:.4f}"
                         if k in native["by_modality"] else "-" for k in mods])
    mod_counts = ", ".join(f"{k}: {v['images']} images" for k, v in sorted(counts.items()))
    res.md += [
        f"DSB score (mean over images of the mean over IoU thresholds 0.5-0.95) of the model "
        f"`{shown(ctx.model_path)}` on {n} stage1_test images, for each combination of TTA "
        f"and post-processing. *Native* scores the label images at the image's own size against "
        f"stage1_solution.csv (Kaggle's way); *{PAPER_SIZE}x{PAPER_SIZE}* resizes both label "
        f"images with nearest neighbour first (`evaluation.score_labels(..., resize_to=256)`, "
        f"the paper's way). Precision, recall and F1 are object-level at IoU > 0.5, summed "
        f"over images. The last columns split the native DSB by modality "
        f"({mod_counts}).",
        "",
        *md_table(["TTA", "post-processing", "DSB native", f"DSB {PAPER_SIZE}x{PAPER_SIZE}",
                   "precision", "recall", "F1"] + [f"DSB {k}" for k in mods], rows),
    ]
    return res


# --------------------------------------------------------------------------- 6. streaming
# `nucseg predict` in a child process that reports its own peak resident memory on exit:
# VmHWM (ru_maxrss would include the parent's peak, inherited through fork and exec)
PREDICT_CHILD = (
    "import resource, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job ignores it\n"
    "from nucseg_utils.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "finally:\n"
    "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
    "    print('MAXRSS_KIB', hwm[0].split()[1] if hwm else\n"
    "          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n")


def run_predict(model_path, images, out, *extra, stop_after: int | None = None):
    """Run `nucseg predict --no-tta` on ``images`` in a child process; returns (exit code,
    wall s, peak RSS MiB). ``stop_after``: interrupt it (SIGINT, as Ctrl-C) once that many
    images are done."""
    import re
    import signal
    import subprocess
    argv = [sys.executable, "-c", PREDICT_CHILD, "predict", "--model", str(model_path),
            "--images", str(images), "--out", str(out), "--no-tta", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if stop_after is not None:
        done = Path(out) / "done"
        while proc.poll() is None:
            if done.is_dir() and len(list(done.glob("*.json"))) >= stop_after:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    found = re.findall(r"MAXRSS_KIB (\d+)", stderr)
    if not found:
        raise RuntimeError(f"nucseg predict failed (exit {proc.returncode}):\n{stderr[-2000:]}")
    return proc.returncode, wall, int(found[-1]) / 1024


def image_files_digest(out, ids=None) -> dict:
    """{relative path: sha256} of the per-image outputs of images ``ids`` (None: of every
    image, and any temporary file left beside them): not the folder-wide tables, nor the
    done-markers (they record the input file's path, which differs between folders)."""
    from nucseg_utils.predict import output_paths
    out = Path(out)
    if ids is None:
        files = [p for p in sorted(out.rglob("*"))
                 if p.is_file() and p.parent != out and p.parent.name != "done"]
    else:
        files = [p for sid in ids for p in output_paths(out, sid).values() if p.exists()]
    return {str(p.relative_to(out)): runs.file_fingerprint(p) for p in files}


def section_streaming(ctx: Context) -> Result:
    import shutil
    import tempfile

    import imageio.v3 as iio

    from nucseg_utils.synthetic import make_image
    res = Result()
    sec = "streaming"
    n, size, k = (ctx.sizes[x] for x in ("stream_images", "stream_size", "resume_images"))
    work = Path(tempfile.mkdtemp(prefix="nucseg-bench-stream-"))
    try:
        # 10 distinct seeded synthetic images repeated under n file names; of the drawn
        # images (a mean nucleus radius of 5-20 px each) those whose nuclei are near the
        # model's size, as after rescaling (so the network sees each image once at ~1x)
        from nucseg_utils.scale import label_diameter
        _, config = ctx.model()
        target = config.get("target_diameter") or 20
        rng = np.random.default_rng(ctx.seed)
        distinct, drawn = [], 0
        while len(distinct) < min(10, n):
            img, lab = make_image(rng, (size, size), "fluorescence", channels=3)
            drawn += 1
            if 0.8 * target <= label_diameter(lab) <= 1.25 * target or drawn > 200:
                distinct.append(img)
        folder = work / "images"
        folder.mkdir()
        for i in range(n):
            iio.imwrite(folder / f"img{i:03d}.png", distinct[i % len(distinct)])
        one = work / "one"
        one.mkdir()
        shutil.copy(folder / "img000.png", one / "img000.png")
        ctx.log(f"streaming: 1 image of {size}x{size}")
        _, wall_one, rss_one = run_predict(ctx.model_path, one, work / "out-one")
        ctx.log(f"streaming: {n} images of {size}x{size}")
        code, wall_all, rss_all = run_predict(ctx.model_path, folder, work / "out-all")
        factor = rss_all / rss_one
        res.add(sec, f"peak RSS, 1 image of {size}x{size}", rss_one, "MiB",
                "`nucseg predict --no-tta`, whole process")
        res.add(sec, f"peak RSS, {n} images of {size}x{size}", rss_all, "MiB",
                f"exit code {code}")
        res.add(sec, f"wall time, {n} images of {size}x{size}", wall_all, "s",
                f"{n / wall_all:.2f} images/s including start-up")
        res.verdict(f"peak memory of {n} images <= {MEMORY_FACTOR_TARGET:g}x one image's",
                    f"{factor:.2f}x ({rss_all:.0f} vs {rss_one:.0f} MiB)",
                    factor <= MEMORY_FACTOR_TARGET, f"{factor / MEMORY_FACTOR_TARGET:.2f}x")
        # interrupted after half of k images (Ctrl-C), then run again
        part = work / "part"
        part.mkdir()
        for i in range(k):
            shutil.copy(folder / f"img{i:03d}.png", part / f"img{i:03d}.png")
        ctx.log(f"streaming: {k} images, interrupted, then resumed")
        code_int, _, _ = run_predict(ctx.model_path, part, work / "out-part",
                                     stop_after=max(1, k // 2))
        done_before = len(list((work / "out-part" / "done").glob("*.json")))
        code_res, _, _ = run_predict(ctx.model_path, part, work / "out-part")
        ref = image_files_digest(work / "out-all", [f"img{i:03d}" for i in range(k)])
        got = image_files_digest(work / "out-part")
        same = got == ref
        leftovers = [p for p in got if ".tmp" in p]
        res.add(sec, "interrupted run: exit code", code_int, "", "SIGINT after "
                f"{max(1, k // 2)} of {k} images were done")
        res.add(sec, "interrupted run: images done before the interrupt", done_before, "")
        res.add(sec, "resumed run: per-image outputs identical to the uninterrupted run's",
                int(same), "", f"{len(got)} files, {len(leftovers)} temporary files left")
        interrupted = code_int != 0 and done_before < k
        res.verdict("an interrupted run resumes and finishes with the same outputs",
                    f"{'identical' if same else 'different'} ({len(got)} files)" +
                    ("" if interrupted else "; the first run was not interrupted"),
                    same and code_res == 0 and interrupted,
                    "outputs differ" if interrupted else "no interruption happened")
        res.md += [
            f"`nucseg predict --no-tta` (the default engine, every output format) in a child "
            f"process, on {n} seeded synthetic fluorescence images of {size}x{size} (10 "
            f"distinct images with nuclei of 0.8-1.25x the model's {target} px, {drawn} drawn, "
            f"repeated under {n} names), then on one of them alone; the peak "
            f"resident memory is the child's own high-water mark (`VmHWM`) (TensorFlow, the model and the "
            f"images included). The command streams: it holds the image being predicted and "
            f"the one being written, whatever the number of images.",
            "",
            *md_table(["images", "peak RSS MiB", "wall s", "images/s (with start-up)"],
                      [[1, fmt(rss_one), fmt(wall_one), fmt(1 / wall_one)],
                       [n, fmt(rss_all), fmt(wall_all), fmt(n / wall_all)]]),
            "",
            f"{n} images take **{factor:.2f}x** the memory of one. Interrupted with SIGINT "
            f"(Ctrl-C) after {done_before} of {k} images were done (exit code {code_int}), "
            f"the same command run again finished (exit code {code_res}) and its per-image "
            f"files ({len(got)}: label PNG and TIFF, ROI zip, overlay, measurements) are "
            f"byte-identical to those of the uninterrupted run: "
            f"**{'yes' if same else 'no'}**; temporary files left: {len(leftovers)}.",
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


# --------------------------------------------------------------------------- report
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def versions() -> dict:
    v = runs.library_versions()
    _, sd_version, _ = load_stardist() if "stardist" in sys.modules else (None, None, None)
    if sd_version:
        v["stardist"] = sd_version
    return v


def render_report(meta: dict, results: dict, walls: dict) -> str:
    """REPORT.md from the run's metadata, the sections' results and the wall times."""
    lines = ["# nucseg benchmarks", ""]
    if meta.get("dev"):
        lines += [f"> **Development run** ({meta['dev']}): not the committed report; sizes "
                  f"are reduced and the numbers say little.", ""]
    lines += [
        f"Written by `{meta['command']}` on {meta['date']}, in {meta['wall']:.0f} s "
        f"({meta['wall'] / 60:.1f} min). Regenerate with the same command from the repository "
        f"root; it rewrites this file and `results.csv` (one row per number: section, item, "
        f"value, unit, note).",
        "",
        "## Machine",
        "",
        *md_table(["cores", "CPU", "platform", "niceness", "load average at start / end"],
                  [[meta["machine"]["cores"], meta["cpu"], meta["machine"]["platform"],
                    meta["nice"], f"{meta['load_start']} / {meta['load_end']}"]]),
        "",
        "Library versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) +
        ".",
        "",
        f"Model: `{meta['model']}`" + (f" (sha256 {meta['model_sha']}...)"
                                       if meta.get("model_sha") else " (not found)") +
        f". Data: `{meta['data']}`.",
        "",
        "## Targets",
        "",
    ]
    vrows = []
    for name in SECTIONS:
        r = results.get(name)
        if r is None:
            continue
        for v in r.verdicts:
            vrows.append([TITLES[name].split(". ")[0], v["target"], v["measured"],
                          f"**{v['verdict']}**"])
    minutes = meta["wall"] / 60
    if meta.get("full"):
        ok = minutes < RUN_MINUTES_TARGET
        vrows.append(["all", f"the benchmark runs in < {RUN_MINUTES_TARGET:g} min",
                      f"{minutes:.1f} min", "**met**" if ok else
                      f"**missed by {minutes - RUN_MINUTES_TARGET:.1f} min**"])
    else:
        vrows.append(["all", f"the benchmark runs in < {RUN_MINUTES_TARGET:g} min",
                      f"{minutes:.1f} min", "not measured (not a full run)"])
    lines += md_table(["#", "target", "measured", "verdict"], vrows)
    lines += ["", "## Wall time per section", "",
              *md_table(["section", "s"], [[k, f"{v:.1f}"] for k, v in walls.items()]), ""]
    for name in SECTIONS:
        if name not in results:
            continue
        lines += [f"## {TITLES[name]}", ""] + results[name].md + [""]
    return "\n".join(lines).rstrip() + "\n"


def results_table(results: dict, walls: dict, meta: dict):
    import pandas as pd
    rows = []
    for name in SECTIONS:
        if name in results:
            rows += results[name].rows
            rows += [{"section": name, "item": f"target: {v['target']}", "value": np.nan,
                      "unit": "", "note": f"{v['verdict']} (measured {v['measured']})"}
                     for v in results[name].verdicts]
    rows += [{"section": "run", "item": f"wall time: {k}", "value": v, "unit": "s", "note": ""}
             for k, v in walls.items()]
    minutes = meta["wall"] / 60
    rows.append({"section": "run",
                 "item": f"target: the benchmark runs in < {RUN_MINUTES_TARGET:g} min",
                 "value": minutes, "unit": "min",
                 "note": ("met" if minutes < RUN_MINUTES_TARGET else
                          f"missed by {minutes - RUN_MINUTES_TARGET:.1f} min")
                 if meta.get("full") else "not measured (not a full run)"})
    rows += [{"section": "run", "item": "cores", "value": meta["machine"]["cores"], "unit": "",
              "note": meta["machine"]["platform"]},
             {"section": "run", "item": "command", "value": np.nan, "unit": "",
              "note": meta["command"]}]
    return pd.DataFrame(rows, columns=["section", "item", "value", "unit", "note"])


def write_outputs(out_dir, meta, results, walls):
    out_dir = Path(out_dir)
    table = results_table(results, walls, meta)
    runs.write_text(out_dir / "results.csv", table.to_csv(index=False, float_format="%.6g"))
    runs.write_text(out_dir / "REPORT.md", render_report(meta, results, walls))
    return out_dir / "REPORT.md", out_dir / "results.csv"


# --------------------------------------------------------------------------- main
SECTION_FUNCS = {"metric": section_metric, "postprocess": section_postprocess,
                 "inference": section_inference, "training": section_training,
                 "quality": section_quality, "streaming": section_streaming}
NEEDS_MODEL = ("postprocess", "inference", "quality", "streaming")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL.relative_to(REPO)),
                    help="model file (default: models/cpu/model.npz)")
    ap.add_argument("--quick", action="store_true",
                    help="few images and steps, for development (writes to runs/benchmarks_dev)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections ({','.join(SECTIONS)})")
    ap.add_argument("--out", help="output folder (default: benchmarks/ for a full run, "
                    "runs/benchmarks_dev/ for --quick or --only)")
    ap.add_argument("--data", help="data root (default: found like the rest of nucseg)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the perturbations and samples")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in only]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    full = not args.quick and args.sections == list(SECTIONS)
    out_dir = Path(args.out) if args.out else (DEFAULT_OUT if full else DEV_OUT)
    model_path = Path(args.model)
    if not model_path.is_absolute() and not model_path.exists():
        model_path = REPO / model_path  # the default is relative to the repository
    ctx = Context(model_path, QUICK if args.quick else FULL, args.data, args.seed)
    root = data_mod.find_data_root(args.data, "stage1_test")
    argv_shown = sys.argv[1:] if argv is None else list(argv)
    meta = {
        "command": " ".join(["python", "benchmarks/run_benchmarks.py"] + argv_shown),
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": runs.machine(), "cpu": cpu_name(), "nice": os.nice(0),
        "load_start": load_start, "model": shown(model_path), "data": str(root),
        "full": full,
        "dev": None if full else
        ("--quick" if args.quick else f"only {','.join(args.sections)}"),
    }
    if ctx.has_model():
        meta["model_sha"] = runs.file_fingerprint(ctx.model_path)
    results, walls = {}, {}
    for name in args.sections:
        if name in NEEDS_MODEL and not ctx.has_model():
            r = Result()
            why = f"no model at {shown(model_path)}"
            r.md = [f"**Skipped**: {why}. Train one (`nucseg train --profile cpu`) or pass "
                    f"`--model`."]
            r.add(name, "skipped", float("nan"), "", why)
            if name == "postprocess":
                r.verdict("all of stage1_test post-processed in < 10 s", "-", None, why=why)
            results[name] = r
            continue
        if name in NEEDS_MODEL and "predict stage1_test (shared by 2, 3, 5)" not in walls:
            ctx.log("predicting stage1_test with and without TTA")
            t0 = time.perf_counter()
            ctx.predictions()
            walls["predict stage1_test (shared by 2, 3, 5)"] = time.perf_counter() - t0
        ctx.log(f"section {name}")
        t0 = time.perf_counter()
        results[name] = SECTION_FUNCS[name](ctx)
        walls[name] = time.perf_counter() - t0
    meta["versions"] = versions()
    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["wall"] = time.perf_counter() - t_start
    walls["total"] = meta["wall"]
    report, csv = write_outputs(out_dir, meta, results, walls)
    ctx.log(f"wrote {report} and {csv} in {meta['wall']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
