"""The method end to end in the smoke profile: train, TTA, post-process, predict, evaluate,
submission, and the Kaggle scorer agreeing with the evaluation."""
import json

import numpy as np
import pytest

from nucseg_utils import cli, data, evaluation, inference, postprocessing
from nucseg_utils.data import outputs, rle
from nucseg_utils.evaluation import metrics, scoring

pytestmark = pytest.mark.slow


def test_predict_writes_labels_and_a_submission_that_decodes_to_them(smoke_run, smoke_data, tmp_path):
    out = tmp_path / "pred"
    code = cli.main(["predict", "--model", str(smoke_run / "model.npz"), "--images",
                     str(smoke_data / "stage1_test"), "--out", str(out), "--tta", "--quiet"])
    assert code == 0
    split = data.open_split("stage1_test", smoke_data)
    sub = metrics._read_submission(out / "submission.csv")
    assert sorted(sub) == split.ids
    for sid in split.ids:
        labels = outputs.read_labels_png(out / "labels" / f"{sid}.png")
        assert labels.shape == split.image(sid).shape[:2]  # native size
        runs_ = [r for _, r in sub[sid] if r]
        decoded = rle.decode_labels(runs_, labels.shape)
        assert np.array_equal(decoded > 0, labels > 0)
        assert len(np.unique(decoded)) == len(np.unique(labels))


def test_kaggle_scorer_reproduces_the_evaluation(smoke_run, smoke_data, tmp_path, capsys):
    ev = tmp_path / "eval"
    s = evaluation.evaluate(smoke_run / "model.npz", "stage1_test", root=smoke_data,
                            out_dir=ev, tta=True, progress=False)
    assert s["tta"] and s["images"] == 4 and s["dataset"] == "synthetic"
    assert "resized_256" in s
    assert cli.main(["score", str(smoke_data / "stage1_solution.csv"),
                     str(ev / "submission.csv"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["dsb"] == pytest.approx(s["native"]["dsb"], abs=1e-12)
    assert scored["images"] == 4


def test_smoke_model_predicts_real_images_at_native_size(smoke_run, real_data, tmp_path):
    from nucseg_utils.model import NucleusModel
    split = data.open_split("stage1_test", real_data)
    model = NucleusModel.load(smoke_run / "model.npz")
    config = model.config
    ids = split.ids[:2]
    probs = inference.predict_split(model, split, tmp_path, tta=False, ids=ids,
                                     progress=False)
    labels = postprocessing.postprocess_all(probs, config)
    summary, table = scoring.score_labels(labels, split)
    for sid in ids:
        assert labels[sid].shape == split.image(sid).shape[:2]
    assert summary["images"] == 2 and len(table) == 2
