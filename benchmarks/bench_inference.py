"""3. Inference: the same 8-fold TTA with TensorFlow and with nucseg's default engine
(OpenVINO on a CPU) side by side: time, probability differences, identical label images;
images/s with and without TTA as ``nucseg evaluate`` predicts; the end-to-end time to
evaluate stage1_test; peak resident memory.

The timings are those :meth:`context.Context.predictions` measured while predicting."""
from __future__ import annotations

import os
import time

import numpy as np

# common first: it puts the repository on sys.path for nucseg_utils
from common import STAGE1_TEST_IMAGES, Result, fmt, md_table, peak_rss_mib, shown
from context import CachedSource, Context

from nucseg_utils.evaluation import scoring

NAME = "inference"
TITLE = "3. Inference"
NEEDS_MODEL = True
SKIPPED_TARGETS = ()
TTA_SPEEDUP_TARGET = 2.0            # 8-fold TTA x faster than TensorFlow's eager call (#13)
BASE = "tensorflow"                 # the engine the others are compared with


def evaluate_speed(ctx: Context):
    """(ids, seconds without TTA, seconds with TTA, Mpx) of the predictions made as
    ``nucseg evaluate`` makes them."""
    tm = ctx.timings
    ids = sorted(ctx.predictions()["tta"])
    shapes = [ctx.predictions()["tta"][sid].shape[:2] for sid in ids]
    mpix = sum(h * w for h, w in shapes) / 1e6
    plain = sum(tm["predict_plain"][s] for s in ids)
    tta = sum(tm["predict_tta"][s] for s in ids)
    return ids, plain, tta, mpix


def engines_side_by_side(ctx: Context, res: Result, src, own: str, ids):
    """The native-size 8-fold TTA of each engine against TensorFlow's: time, the largest
    probability difference, identical label images, DSB; returns (engines, seconds per
    engine, the table's rows)."""
    preds, tm, n = ctx.predictions(), ctx.timings, len(ids)
    engines = sorted(preds["native"])
    engines = [BASE] + [e for e in engines if e != BASE]
    secs = {e: sum(tm[f"native_tta_{e}"][s] for s in ids) for e in engines}
    side = []
    ref_labels, _ = ctx.labels("native", own, engine=BASE)
    for e in engines:
        labels, _ = ctx.labels("native", own, engine=e)
        summary, _ = scoring.score_labels(labels, src)
        diff = 0.0 if e == BASE else max(
            float(np.abs(preds["native"][e][s] - preds["native"][BASE][s]).max()) for s in ids)
        same = sum(np.array_equal(labels[s], ref_labels[s]) for s in ids)
        res.add(NAME, f"native 8-fold TTA: {e}", secs[e], "s", f"{n} images")
        res.add(NAME, f"native 8-fold TTA: {e}, max abs difference from tensorflow", diff, "")
        res.add(NAME, f"native 8-fold TTA: {e}, label images identical to tensorflow's",
                same, "images", f"of {n}")
        res.add(NAME, f"native 8-fold TTA: {e}, DSB", summary["dsb"], "", f"{n} images")
        side.append([e, fmt(secs[e]), fmt(1000 * secs[e] / n), fmt(secs[BASE] / secs[e]),
                     f"{diff:.2g}", f"{same} / {n}", f"{summary['dsb']:.4f}"])
    return engines, secs, side


def end_to_end(ctx: Context, res: Result, src, own: str, ids, tta: float):
    """The steps of ``nucseg evaluate``, each measured in this run (the scoring now); returns
    ([(step, s)], total s, total s extrapolated to all of stage1_test)."""
    tm, engine, n = ctx.timings, ctx.engine, len(ids)
    labels, pp_times = ctx.labels("tta", own)
    t0 = time.perf_counter()
    scoring.score_labels(labels, src)
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
        res.add(NAME, f"end to end: {name}", v, "s", f"{n} images")
    res.add(NAME, "end to end: total", total, "s",
            f"{n} images" + ("" if n == STAGE1_TEST_IMAGES else f"; ~{est:.0f} s for 65"))
    return parts, total, est


def size_rows(ctx: Context, ids, engines) -> list:
    """ms per image by image size: as ``nucseg evaluate`` predicts, and each engine's
    native-size TTA."""
    tm = ctx.timings
    buckets: dict = {}
    for s in ids:
        h, w = ctx.predictions()["tta"][s].shape[:2]
        buckets.setdefault((h, w), []).append(s)
    rows = []
    for (h, w), ss in sorted(buckets.items(), key=lambda kv: kv[0][0] * kv[0][1]):
        rows.append([f"{h}x{w}", len(ss),
                     fmt(1000 * np.mean([tm["predict_plain"][s] for s in ss])),
                     fmt(1000 * np.mean([tm["predict_tta"][s] for s in ss]))] +
                    [fmt(1000 * np.mean([tm[f"native_tta_{e}"][s] for s in ss]))
                     for e in engines])
    return rows


def engines_md(ctx: Context, config: dict, n: int, own: str, engines, secs, side) -> list:
    """The report's model description and side-by-side table of the engines."""
    tm = ctx.timings
    warmups = ", ".join(f"{e} {fmt(v)} s" for e, v in tm["warmup"].items())
    return [
        f"The model `{shown(ctx.model_path)}` ({config.get('backbone')} U-Net, "
        f"{len(config.get('targets', []))} output channel(s), input mode "
        f"`{config.get('input_mode')}`) predicts {n} stage1_test images one at a time on "
        f"{os.cpu_count()} cores. The first call of each engine ({warmups}) "
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
           f"{fmt(secs[BASE] / secs['openvino-bf16'])}x as fast as TensorFlow, but not the "
           f"same outputs (bfloat16 keeps 8 bits of mantissa), so it does not count for the "
           f"target above; the table gives what changes.", ""]
          if "openvino-bf16" in secs else []),
    ]


def evaluate_md(engine: str, config: dict, n, plain, tta, mpix, sizes, engines) -> list:
    """The report's tables of the speed as ``nucseg evaluate`` predicts, overall and by
    image size."""
    return [
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
                  [f"native TTA, {e}" for e in engines], sizes),
        "",
    ]


def end_to_end_md(parts, total, est, n, rss_after_predict, rss, engines) -> list:
    """The report's end-to-end table and its paragraph on memory."""
    return [
        f"End to end, the steps of `nucseg evaluate --split stage1_test` (without writing its "
        f"output files), each timed in this run:",
        "",
        *md_table(["step", "s"], [[k, fmt(v)] for k, v in parts] +
                  [["**total**", f"**{fmt(total)}**" +
                    ("" if n == STAGE1_TEST_IMAGES else f" (~{est:.0f} s for all 65)")]]),
        "",
        f"Peak resident memory (`resource.getrusage(...).ru_maxrss`) after the predictions: "
        f"{rss_after_predict:.0f} MiB; now {rss:.0f} MiB. It is the benchmark "
        f"process's peak, so it includes TensorFlow, OpenVINO, {len(engines)} copies of the "
        f"model and "
        f"all stage1_test images and maps held in memory; `nucseg predict`'s own memory, "
        f"which streams, is measured in section 6.",
    ]


def run(ctx: Context) -> Result:
    res = Result()
    _, config = ctx.model()
    engine = ctx.engine
    tm = ctx.timings
    ids, plain, tta, mpix = evaluate_speed(ctx)
    n = len(ids)
    res.add(NAME, f"model load ({engine})", tm["load_model"][engine], "s",
            shown(ctx.model_path))
    res.add(NAME, f"first call (warm-up, 64x64, {engine})", tm["warmup"][engine], "s")
    res.add(NAME, "predict without TTA", n / plain, "images/s",
            f"{n} images, {mpix / plain:.2f} Mpx/s, {engine}, as `nucseg evaluate`")
    res.add(NAME, "predict with 8-fold TTA", n / tta, "images/s",
            f"{n} images, {mpix / tta:.3f} Mpx/s, {engine}, as `nucseg evaluate`")
    res.add(NAME, "TTA cost", tta / plain, "x", "time with TTA / time without")
    src = CachedSource("stage1_test", ctx.test_samples(ctx.sizes["predict_images"]))
    own = config.get("postprocess", "paper")
    engines, secs, side = engines_side_by_side(ctx, res, src, own, ids)
    speedup = secs[BASE] / secs[engine] if engine != BASE else 1.0
    res.verdict("8-fold TTA >= 2x faster than TensorFlow with the same outputs",
                f"{speedup:.2f}x ({engine})", speedup >= TTA_SPEEDUP_TARGET,
                f"{TTA_SPEEDUP_TARGET / speedup:.2f}x" if speedup else "",
                f"load average at the end of the predictions {os.getloadavg()[0]:.2f}")
    parts, total, est = end_to_end(ctx, res, src, own, ids, tta)
    rss = peak_rss_mib()
    res.add(NAME, "peak resident memory after prediction", tm["rss_after_predict"], "MiB",
            "ru_maxrss of the benchmark process (includes the data and TensorFlow)")
    res.md += [*engines_md(ctx, config, n, own, engines, secs, side),
               *evaluate_md(engine, config, n, plain, tta, mpix, size_rows(ctx, ids, engines),
                            engines),
               *end_to_end_md(parts, total, est, n, tm["rss_after_predict"], rss, engines)]
    return res
