"""The test-set rules: which split a model may be scored on as its test set.

In: a model file (its config's ``train_splits``, the ``run.json`` beside it) or a profile.
Out: the splits the model saw in training or checkpoint choice; a ProtocolError for scoring one
of them as a test set; the profile's test split (stage1_test, or stage2_test_final for a model
that trained on stage1_test); which images notebooks 04-06 score.

Splits are judged by their images, not their labels: a model trained on the fixed stage1_train
labels (``train_labels`` "fixed", or a split recorded as ``stage1_train_fixed``) has seen the
stage1_train images, so neither labelling of stage1_train is a test set for it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nucseg_utils import data as data_mod
from nucseg_utils.core import runs
from nucseg_utils.core.profiles import complete
from nucseg_utils.evaluation.scoring import scored_ids
from nucseg_utils.model.network import read_config


class ProtocolError(data_mod.DataError):
    """Scoring a split as a test set that the model trained or chose its checkpoint on."""


def training_splits(model_path, profile: dict | None = None) -> list[str]:
    """Every split the model may have seen in training or checkpoint selection: the union
    of its config's ``train_splits`` (when the model records them), the profile in the
    ``run.json`` beside the model file, and ``profile`` (conservative: when in doubt, the
    split counts as seen)."""
    seen: list[str] = []

    def add(splits):  # by their images: stage1_train_fixed is stage1_train
        for s in splits or []:
            if data_mod.base_split(s) not in seen:
                seen.append(data_mod.base_split(s))

    path = Path(model_path)
    if path.is_file():
        add(read_config(path).get("train_splits"))
    info = runs.RunLayout(path.parent).run_json
    if info.is_file():
        add(runs.read_json(info).get("profile", {}).get("train_splits"))
    add((profile or {}).get("train_splits"))
    return seen


def check_untouched(split: str, train_splits) -> None:
    """Refuse (ProtocolError) to score ``split`` as a test set when the model trained or
    chose its checkpoint on it (with either labelling: the fixed stage1_train holds the
    stage1_train images)."""
    seen = {data_mod.base_split(s) for s in train_splits}
    if data_mod.base_split(split) in seen:
        raise ProtocolError(f"refusing to score {split} as a test set: the model trained or "
                            f"chose its checkpoint on its images (training splits: "
                            f"{' + '.join(train_splits)}); its test split is "
                            f"{test_split_name(train_splits)}")


def test_split_name(train_splits) -> str:
    """The profile's test split: stage1_test, unless the profile trains on it (the paper's),
    then stage2_test_final."""
    seen = {data_mod.base_split(s) for s in train_splits}
    return "stage2_test_final" if "stage1_test" in seen else "stage1_test"


def run_labels(run_dir) -> str:
    """The stage1_train labels a run trained on: its ``run.json`` profile's ``train_labels``
    ("original" for a run recorded before the key, or without a ``run.json``)."""
    info = runs.RunLayout(run_dir).run_json
    profile = (runs.read_json(info).get("profile") or {}) if info.is_file() else {}
    return complete(profile)["train_labels"]


def has_ground_truth(split: str, root) -> bool:
    try:
        return data_mod.open_split(split, root).has_labels()
    except data_mod.DataError:
        return False


def evaluation_set(model_path, root=None, profile: dict | None = None) -> dict:
    """Which images notebooks 04-06 score, and what the tables call them.

    The profile's test split (:func:`test_split_name`) when it is there with its ground truth
    and the model never saw it (:func:`check_untouched`). Otherwise there is no untouched
    test set: the run's validation images of a labelled split (from ``split.csv`` beside the
    model) are scored, and every table says "validation, no untouched test set".

    Returns ``split`` (name), ``ids``, ``is_test``, ``label`` (for table captions) and
    ``labels``: the ground truth to score them against ("original" for a test split; for
    validation images, the labels the run trained on, "fixed" for stage1_train when its
    ``run.json`` says ``train_labels`` "fixed")."""
    seen = training_splits(model_path, profile)
    name = test_split_name(seen)
    if has_ground_truth(name, root):
        check_untouched(name, seen)
        ids = scored_ids(data_mod.open_split(name, root))
        return {"split": name, "ids": ids, "is_test": True, "train_splits": seen,
                "labels": "original",
                "label": f"{name}, test (untouched by training and checkpoint choice)"}
    table = runs.RunLayout(Path(model_path).parent).split
    val = pd.read_csv(table, dtype={"id": str}) if table.is_file() else pd.DataFrame()
    val = val[val["subset"] == "val"] if len(val) else val
    labels = data_mod.labels_for("stage1_train", run_labels(Path(model_path).parent))
    for split in ("stage1_test", "stage1_train"):
        ids = sorted(val.loc[val["split"] == split, "id"]) if len(val) else []
        if ids and has_ground_truth(split, root):
            return {"split": split, "ids": ids, "is_test": False, "train_splits": seen,
                    "labels": data_mod.labels_for(split, labels),
                    "label": f"{split}: {len(ids)} validation images (used to choose the "
                             f"checkpoint), no untouched test set ({name} not found)"}
    raise ProtocolError(f"no untouched test split ({name} with its ground truth not found) "
                        f"and no validation images recorded beside {model_path} (split.csv): "
                        f"nothing can be scored honestly")
