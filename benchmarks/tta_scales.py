"""Does test-time scaling pay? (lever 7 of issue 12; validation images only)

The 8-fold TTA averages rotations and flips at one scale: the factor that brings the image's
nuclei to the model's standard size (:func:`nucseg_utils.inference.scale.predict_scaled`). Test-time
scaling adds passes at that factor times each of ``tta_scales`` (e.g. 0.8, 1, 1.25) and
averages their probabilities, resized back to native size. For each set of scales this
predicts the validation images of a run (held-out stage1_train, from its ``split.csv``; no
test image), post-processes them as the model's config says and at the other thresholds of
the calibration, and times the predictions.

Writes ``benchmarks/tta_scales.md``. Usage (about 5 minutes on 2 cores):

    python benchmarks/tta_scales.py [--run runs/cpu] [--model models/cpu/model.npz]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

# common first: it puts the repository on sys.path for nucseg_utils
from common import open_run

from nucseg_utils.core import runs
from nucseg_utils.evaluation import calibration
from nucseg_utils.postprocessing import THRESHOLDS

SCALE_SETS = ((1.0,), (0.8, 1.0, 1.25))


def main(argv=None) -> int:
    a, run, net, config = open_run(__doc__, "tta_scales.md", argv)
    n = sum(len(ids) for ids in calibration.validation_ids(run).values())
    lines = ["# Test-time scaling on the validation images", "",
             f"Model `{Path(a.model).name}` (fingerprint `{runs.file_fingerprint(a.model)}`, "
             f"engine {net.engine}), the {n} validation images of `{a.run}` "
             f"(held-out stage1_train; no test image), 8-fold TTA at each scale, "
             f"`{config.get('postprocess')}` post-processing. Written by "
             f"`python benchmarks/tta_scales.py`.", "",
             "| scales (x the size factor) | threshold | validation DSB | F1 | s to predict |",
             "|---|---|---|---|---|"]
    for scales in SCALE_SETS:
        cfg = {**config, "tta_scales": list(scales)}
        t0 = time.perf_counter()
        predicted = calibration.predict_validation(net.with_settings(tta_scales=list(scales)), run,
                                                   tta=True, progress=False)
        seconds = time.perf_counter() - t0
        for threshold in THRESHOLDS:
            s = calibration.score_setting(predicted, cfg, {"threshold": threshold})
            mark = " (the model's)" if threshold == config.get("threshold") else ""
            lines.append(f"| {', '.join(f'{x:g}' for x in scales)} | {threshold:g}{mark} | "
                         f"{s['dsb']:.4f} | {s['f1']:.4f} | {seconds:.0f} |")
            print(lines[-1], flush=True)
    runs.write_text(Path(a.out), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
