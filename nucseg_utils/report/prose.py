"""Prose: the sentences of the notebooks that quote results, written from the run's tables.

In: the tables a notebook has just computed (data index summary, TTA gain, scores).
Out: Markdown strings (a notebook shows them with ``IPython.display.Markdown``), so that every
number a notebook's text quotes comes from this run and stays true after a new model or on
other data. Nothing is read from disk and nothing is typed in by hand.
"""
from __future__ import annotations


def _n(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def eda(summary) -> str:
    """What the data index says: images and modalities per split, nuclei, nucleus sizes."""
    lines = []
    for split, g in summary.groupby("split", sort=True):
        mods = ", ".join(f"{int(r.images)} {r.modality}" for r in g.itertuples())
        text = f"- `{split}`: {int(g['images'].sum())} images ({mods})"
        if "nuclei" in g and g["nuclei"].notna().any():
            text += f", {int(g['nuclei'].sum()):,} nuclei"
        lines.append(text + ".")
    have = summary.dropna(subset=["mean_area_px"]) if "mean_area_px" in summary else summary[:0]
    if len(have):
        lo, hi = have.loc[have["mean_area_px"].idxmin()], have.loc[have["mean_area_px"].idxmax()]
        lines.append(f"- Mean nucleus area per split and modality ranges from "
                     f"{lo['mean_area_px']:.0f} px ({lo['modality']}, `{lo['split']}`) to "
                     f"{hi['mean_area_px']:.0f} px ({hi['modality']}, `{hi['split']}`).")
    splits = summary.groupby("split")
    mod_sets = {s: set(g["modality"]) for s, g in splits}
    if len(mod_sets) > 1:
        base = sorted(mod_sets)[-1]
        for s, mods in sorted(mod_sets.items()):
            missing = sorted(mod_sets[base] - mods) if s != base else []
            if missing:
                lines.append(f"- `{s}` has no {' and no '.join(missing)} image.")
    return "**In numbers (this run's index).**\n\n" + "\n".join(lines)


def tta(gain, label: str) -> str:
    """The measured effect of TTA (the table of :func:`nucseg_utils.evaluation.scoring.tta_gain`)."""
    on, off, d = gain.iloc[0], gain.iloc[1], gain.iloc[2]
    verb = "raises" if d["dsb"] > 0 else "lowers" if d["dsb"] < 0 else "leaves"
    return (f"**Measured here** ({int(on['images'])} images: {label}): TTA {verb} the DSB "
            f"score from {_n(off['dsb'])} to {_n(on['dsb'])} ({d['dsb']:+.4f}); the object F1 "
            f"(IoU > 0.5) goes from {_n(off['f1'])} to {_n(on['f1'])} ({d['f1']:+.4f}). It "
            f"costs 8 forward passes per image instead of one.")


def crowded(sid: str, touching: int, scores) -> str:
    """The crowded image of notebook 05 and how each post-processing scored on it
    (``scores``: rows with method, nuclei, dsb)."""
    parts = "; ".join(f"{r.method}: {int(r.nuclei)} nuclei" if r.method == "ground truth"
                      else f"`{r.method}`: {int(r.nuclei)} nuclei, DSB {_n(r.dsb)}"
                      for r in scores.itertuples())
    return (f"The image is `{sid[:8]}`, chosen because its ground truth has the most nuclei "
            f"touching another one ({touching}) among the scored images. On it: {parts}.")


def evaluation(summary: dict, per_image, per_threshold, label: str) -> str:
    """The headline numbers of notebook 06, from its tables."""
    nat, small = summary["native"], summary["resized_256"]
    first, last = per_threshold.iloc[0], per_threshold.iloc[-1]
    text = [f"**This run** ({label}, {summary['images']} images): DSB "
            f"**{_n(nat['dsb'])}** at native resolution, {_n(small['dsb'])} with both label "
            f"images resized to 256x256 (the paper's way). Nuclei matched at IoU > 0.5: "
            f"object precision {_n(nat['precision'])}, object recall {_n(nat['recall'])}, "
            f"object F1 {_n(nat['f1'])}."]
    mods = per_image.groupby("modality")["dsb"].agg(["mean", "size"]).sort_values("mean")
    if len(mods) > 1:
        text.append("Per modality: " + ", ".join(
            f"{m} {_n(r['mean'])} ({int(r['size'])} image{'s' if r['size'] != 1 else ''})"
            for m, r in mods.iterrows()) +
            f"; the {mods.index[0]} images score lowest.")
    drop = first["dsb_term"] - last["dsb_term"]
    text.append(f"Over the thresholds the DSB term goes from {_n(first['dsb_term'])} at "
                f"IoU > {first['threshold']:.2f} to {_n(last['dsb_term'])} at "
                f"IoU > {last['threshold']:.2f}" +
                (f"; the drop of {drop:.4f} is what imprecise outlines cost (nuclei found, but "
                 f"not drawn exactly enough for the strict thresholds)." if drop > 0.01 else
                 "."))
    return " ".join(text)
