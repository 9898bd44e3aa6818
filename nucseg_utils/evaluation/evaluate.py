"""Evaluation: predict a split, post-process, score at native resolution, write the tables.

In: a saved model, a split with ground truth, TTA on/off. :func:`evaluate` scores a split only
when the model never trained or chose its checkpoint on it
(:func:`nucseg_utils.evaluation.protocol.check_untouched`; by default the model's test split).
Out, in an output folder (a folder that holds the outputs of another model, split, data set or
setting is cleared of them first, so they never mix):

- ``probs/<id>.npz``: the probability maps (float16, the precision every path uses), for the
  TTA and post-processing notebooks;
- ``labels/<id>.png``: one 16-bit label PNG per image at its native size;
- ``submission.csv``: Kaggle's format, one row per nucleus (an image with none gets one empty
  row), column-major RLE whose decoding reproduces the labels exactly;
- ``per_image.csv``: DSB, TP/FP/FN at IoU > 0.5, precision, recall, F1, pixel accuracy, modality;
- ``summary.json``: the data-set numbers, at native resolution (Kaggle's way) and with both
  label images resized to 256x256 (the paper's way), with the command that made them and
  fingerprints of the model file and of the data.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from nucseg_utils import data as data_mod
from nucseg_utils.core import runs
from nucseg_utils.data.outputs import clear_other_outputs, save_label_dir, write_submission
from nucseg_utils.evaluation.protocol import check_untouched, test_split_name, training_splits
from nucseg_utils.evaluation.scoring import scored_ids, summarize
from nucseg_utils.inference.maps import predict_split
from nucseg_utils.model.network import NucleusModel
from nucseg_utils.postprocessing.methods import postprocess_all

__all__ = [
    "evaluate"
]


def evaluate(model_path, split: str | None = None, root=None, out_dir=None,
             tta: bool | None = None, method: str | None = None, progress: bool = True,
             command: str | None = None, engine: str | None = None) -> dict:
    """Predict and score a split with ground truth; write everything listed in the module
    docstring to ``out_dir``. Returns the summary.

    ``split``: None is the model's test split (:func:`test_split_name` of the splits it was
    trained on). A split the model trained or chose its checkpoint on is refused
    (ProtocolError, before anything is predicted or written)."""
    t0 = time.time()
    seen = training_splits(model_path)
    split = split or test_split_name(seen)
    check_untouched(split, seen)
    # the data is checked before the model is built, so a data error comes at once
    source = data_mod.open_split(split, root)
    if not source.has_labels():
        raise data_mod.DataError(f"{split}: no ground truth found (needs "
                                 f"{data_mod.SOLUTIONS.get(split)}) - use `nucseg predict`")
    ids = scored_ids(source)
    model = NucleusModel.load(model_path, engine=engine)
    tta = model.settings.tta if tta is None else tta
    method = method or model.settings.postprocessing.method
    out_dir = Path(out_dir or Path("runs") / "evaluate" / f"{split}{'_tta' if tta else ''}")
    made_by = {"model_fingerprint": runs.file_fingerprint(model_path), "split": split,
               "data_fingerprint": (runs.file_fingerprint(source.source)
                                    if Path(source.source).exists() else None),
               "tta": bool(tta), "postprocess": method}
    clear_other_outputs(out_dir, made_by)
    probs = predict_split(model, source, out_dir, tta=tta, ids=ids, progress=progress)
    t_pred = time.time() - t0
    labels = postprocess_all(probs, model.config, method)
    save_label_dir(labels, out_dir / runs.LABELS)
    write_submission(labels, out_dir / "submission.csv")
    dataset = data_mod.dataset_name(data_mod.find_data_root(root, split))
    summary = summarize(labels, source, tta, method, split, dataset)
    runs.write_table(summary.pop("per_image"), out_dir / "per_image.csv")
    summary.update({
        "model": str(model_path), **made_by,
        "unscored_images": len(source.ids) - len(ids), "engine": model.engine,
        "seconds_predict": t_pred, "seconds_total": time.time() - t0,
        "command": command or " ".join(["nucseg"] + sys.argv[1:]),
        "versions": runs.library_versions(), "machine": runs.machine(),
    })
    runs.write_json(out_dir / "summary.json", summary)
    return summary
