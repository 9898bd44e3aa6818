"""How well is the nucleus size estimated at prediction time? (validation images only)

For each validation image of a run (held-out stage1_train, from its ``split.csv``), compares
the true median nucleus diameter with the estimates ``nucseg_utils.inference.scale`` could use:

- ``net``: what :func:`nucseg_utils.inference.scale.predict_scaled` uses (a first pass at native scale,
  refined by a second pass when the factor moved by more than 30 %);
- ``probe_<s>``: one pass of the network at scale ``s`` (0.5, 1), foreground > threshold;
- ``otsu``: no network: Otsu's threshold of the grey normalised image, holes filled.

Writes ``benchmarks/scale_estimate.md`` and ``.csv``. Usage (about 4 minutes on 2 cores):

    python benchmarks/scale_estimate.py [--run runs/cpu] [--model models/cpu/model.npz]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

# common first: it puts the repository on sys.path for nucseg_utils
from common import open_run
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from nucseg_utils import data
from nucseg_utils.core import runs
from nucseg_utils.evaluation import calibration
from nucseg_utils.inference import scale, tta
from nucseg_utils.inference.preprocessing import normalize

PROBES = (0.5, 1.0)


def estimates(net, config, image) -> dict:
    img = normalize(image, config["normalization"])
    _, steps = scale.predict_scaled(net, img, config, tta=False, return_steps=True)
    out = {"net": steps["passes"][-1]["diameter"]}
    for s in PROBES:
        p = tta.predict(net, scale.rescale_image(img, s), config, tta=False)
        out[f"probe_{s:g}"] = scale.mask_diameter(p[..., 0] > scale.SIZE_THRESHOLD) / s
    grey = img.mean(axis=-1)
    fg = ndi.binary_fill_holes(grey > threshold_otsu(grey)) if np.ptp(grey) > 0 else grey > 1
    out["otsu"] = scale.mask_diameter(fg)
    return out


def main(argv=None) -> int:
    a, run, net, config = open_run(__doc__, "scale_estimate", argv)
    rows = []
    for split_name, ids in calibration.validation_ids(run).items():
        source = data.open_split(split_name)
        for sid in ids:
            sample = source.sample(sid)
            rows.append({"id": sid, "modality": data.modality_of(sample.image),
                         "true": scale.label_diameter(sample.labels),
                         **estimates(net, config, sample.image)})
    table = pd.DataFrame(rows).sort_values("true")
    runs.write_table(table, Path(a.out).with_suffix(".csv"))
    cols = ["net"] + [f"probe_{s:g}" for s in PROBES] + ["otsu"]
    bins = [("all", table), ("true diameter < 20 px", table[table["true"] < 20]),
            ("20-40 px", table[(table["true"] >= 20) & (table["true"] < 40)]),
            (">= 40 px", table[table["true"] >= 40])]
    lines = ["# Estimating the nucleus size at prediction time", "",
             f"Model `{Path(a.model).name}` (fingerprint `{runs.file_fingerprint(a.model)}`), "
             f"the {len(table)} validation images of `{a.run}` (held-out stage1_train; no test "
             f"image). Error = estimate / true median diameter; the table gives the median "
             f"ratio and the share of images off by more than 1.5x either way. Written by "
             f"`python benchmarks/scale_estimate.py`.", "",
             "| images | n | " + " | ".join(f"{c}: median ratio | {c}: >1.5x off" for c in cols)
             + " |", "|---|---|" + "---|---|" * len(cols)]
    for name, g in bins:
        cells = []
        for c in cols:
            r = (g[c].clip(lower=1) / g["true"]).to_numpy()
            off = float((np.abs(np.log(r)) > np.log(1.5)).mean()) if len(r) else float("nan")
            cells.append(f"{np.median(r):.2f} | {off:.0%}" if len(r) else " | ")
        lines.append(f"| {name} | {len(g)} | " + " | ".join(cells) + " |")
    runs.write_text(Path(a.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
