"""Outputs: the files a prediction leaves behind, written atomically and read back.

In: probability maps, label images, or a folder of them.
Out: ``probs/<id>.npz`` (float16 probability maps: the precision every path uses), 16-bit
label PNGs, Kaggle's ``submission.csv`` (column-major RLE, one row per nucleus, an empty row for
an image with none), and the clean-up of a folder that holds another model's outputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from nucseg_utils.core import runs
from nucseg_utils.data.rle import encode_labels


def save_probs(path, prob: np.ndarray):
    with runs.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, prob=prob.astype(np.float16))


def load_probs(path) -> np.ndarray:
    with np.load(path) as z:
        return z["prob"].astype(np.float32)


def save_labels_png(path, labels: np.ndarray):
    if labels.max() > 65535:
        raise ValueError(f"{path}: more than 65535 objects do not fit a 16-bit PNG")
    with runs.atomic_path(path) as tmp:
        iio.imwrite(tmp, labels.astype(np.uint16), extension=".png")


def read_labels_png(path) -> np.ndarray:
    return np.asarray(iio.imread(path))


def submission_rows(image_id: str, labels: np.ndarray) -> list[tuple[str, str]]:
    runs_ = encode_labels(labels)
    return [(image_id, r) for r in runs_.values()] or [(image_id, "")]


def write_submission(labels_by_id: dict, path) -> Path:
    """Kaggle submission CSV for {id: label image}, written atomically."""
    lines = ["ImageId,EncodedPixels"]
    for sid in sorted(labels_by_id):
        lines += [f"{a},{b}" for a, b in submission_rows(sid, labels_by_id[sid])]
    return runs.write_text(path, "\n".join(lines) + "\n")


def clear_other_outputs(out_dir, made_by: dict) -> list[str]:
    """Before :func:`evaluate` writes into ``out_dir``: when the folder holds the outputs of
    another model, split, data set or setting (its ``summary.json`` records them; maps or
    labels without one are of unknown origin), remove them (probability maps, label images,
    result tables), so that nothing of theirs mixes with the new ones. Returns the names
    removed (and says so on stderr)."""
    out_dir = Path(out_dir)
    summary = out_dir / "summary.json"
    if summary.is_file():
        before = runs.read_json(summary)
        if all(before.get(k) == v for k, v in made_by.items()):
            return []
    removed = []
    for sub, pattern in ((runs.PROBS, "*.npz"), (runs.LABELS, "*.png")):
        for f in sorted((out_dir / sub).glob(pattern)):
            f.unlink()
            removed.append(f"{sub}/{f.name}")
        if (out_dir / sub).is_dir() and not any((out_dir / sub).iterdir()):
            (out_dir / sub).rmdir()
    for name in runs.RESULT_FILES:
        if (out_dir / name).is_file():
            (out_dir / name).unlink()
            removed.append(name)
    if removed:
        print(f"{out_dir}: held the outputs of another model, split or setting; removed "
              f"{len(removed)} file(s) before writing the new ones", file=sys.stderr)
    return removed


def _select(found: dict, ids, folder, what: str) -> dict:
    """``found`` restricted to ``ids`` (when given); FileNotFoundError naming the first
    missing one."""
    if ids is None:
        return found
    missing = [i for i in ids if i not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{folder}: no {what} for '{missing[0]}'{more} (run the "
                                f"notebook that writes them again)")
    return {i: found[i] for i in ids}


def load_prob_dir(folder, ids=None) -> dict:
    """{id: probability map} from a ``probs/`` folder written by :func:`predict_split`: every
    map, or those of ``ids`` (all of which must be there; others are not read)."""
    folder = Path(folder)
    files = {f.stem: f for f in sorted(folder.glob("*.npz"))}
    if not files:
        raise FileNotFoundError(f"{folder}: no probability maps (run the TTA notebook first)")
    return {i: load_probs(f) for i, f in _select(files, ids, folder, "probability map").items()}


def save_label_dir(labels: dict, folder):
    for sid, lab in labels.items():
        save_labels_png(Path(folder) / f"{sid}.png", lab)


def load_label_dir(folder, ids=None) -> dict:
    """{id: label image} from a folder of label PNGs: every one, or those of ``ids``."""
    folder = Path(folder)
    files = {f.stem: f for f in sorted(folder.glob("*.png"))}
    if not files:
        raise FileNotFoundError(f"{folder}: no label images (run the post-processing notebook)")
    return {i: read_labels_png(f) for i, f in _select(files, ids, folder, "label image").items()}


def done_marker(out, sid: str) -> Path:
    return Path(out) / "done" / f"{sid}.json"
