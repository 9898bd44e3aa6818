"""5. Quality ablations: DSB on stage1_test with no TTA vs TTA, per post-processing
method, scored at native resolution and at 256x256 (the paper's way), and per modality."""
from __future__ import annotations

# common first: it puts the repository on sys.path for nucseg_utils
from common import Result, md_table, shown
from context import CachedSource, Context

from nucseg_utils.evaluation import scoring

NAME = "quality"
TITLE = "5. Quality ablations"
NEEDS_MODEL = True
SKIPPED_TARGETS = ()


def run(ctx: Context) -> Result:
    res = Result()
    paper_size = scoring.PAPER_SIZE
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
            native, _ = scoring.score_labels(labels, src)
            small, _ = scoring.score_labels(labels, src, resize_to=paper_size)
            mods = mods or sorted(native["by_modality"])
            counts = counts or native["by_modality"]
            tag = f"{'TTA' if which == 'tta' else 'no TTA'}, {m}"
            res.add(NAME, f"DSB native: {tag}", native["dsb"], "", f"{n} images")
            res.add(NAME, f"DSB at {paper_size}x{paper_size}: {tag}", small["dsb"], "",
                    "both label images resized (nearest neighbour)")
            res.add(NAME, f"F1 at IoU 0.5 native: {tag}", native["f1"], "")
            for mod, v in native["by_modality"].items():
                res.add(NAME, f"DSB native {mod}: {tag}", v["dsb"], "",
                        f"{v['images']} images")
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
        f"and post-processing, every method at the model's own settings (its threshold, "
        f"marker spacing and object filters; notebook 6 compares the methods each at its own "
        f"best validation setting instead). *Native* scores the label images at the image's own size against "
        f"stage1_solution.csv (Kaggle's way); *{paper_size}x{paper_size}* resizes both label "
        f"images with nearest neighbour first (`scoring.score_labels(..., resize_to=256)`, "
        f"the paper's way). Precision, recall and F1 are object-level at IoU > 0.5, summed "
        f"over images. The last columns split the native DSB by modality "
        f"({mod_counts}).",
        "",
        *md_table(["TTA", "post-processing", "DSB native", f"DSB {paper_size}x{paper_size}",
                   "precision", "recall", "F1"] + [f"DSB {k}" for k in mods], rows),
    ]
    return res
