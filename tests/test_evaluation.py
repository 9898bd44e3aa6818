"""The evaluation protocol (which images are scored and what the tables call them), the
object-level error classes and the criteria that choose example images. Smoke: the built-in
synthetic set, no model needed (the protocol reads a model's provenance, not its weights)."""
import numpy as np
import pandas as pd
import pytest

from conftest import stub_model, stub_run
from nucseg_utils import data, evaluation
from nucseg_utils.core import profiles
from nucseg_utils.evaluation import metrics, protocol, scoring
from nucseg_utils.report import examples


def test_a_split_the_model_trained_on_is_refused_as_a_test_set():
    with pytest.raises(protocol.ProtocolError, match="refusing to score stage1_test"):
        protocol.check_untouched("stage1_test", ["stage1_train", "stage1_test"])
    protocol.check_untouched("stage1_test", ["stage1_train"])  # no error


def test_stage1_test_is_the_test_set_of_a_model_trained_on_stage1_train(tmp_path, syn_root):
    model, prof = stub_run(tmp_path, syn_root, ["stage1_train"])
    ev = protocol.evaluation_set(model, syn_root, prof)
    assert ev["split"] == "stage1_test" and ev["is_test"]
    assert "test (untouched" in ev["label"]


def test_training_on_stage1_test_without_stage2_scores_validation_labelled_as_such(
        tmp_path, syn_root):
    # the paper's protocol (stage1_train + stage1_test) in smoke, on data without stage 2
    model, prof = stub_run(tmp_path, syn_root, ["stage1_train", "stage1_test"])
    ev = protocol.evaluation_set(model, syn_root, prof)
    assert not ev["is_test"] and ev["split"] == "stage1_test"
    val = pd.read_csv(tmp_path / "split.csv")
    assert ev["ids"] == sorted(val[(val["split"] == "stage1_test") &
                                   (val["subset"] == "val")]["id"])
    assert "validation" in ev["label"] and "no untouched test set" in ev["label"]
    summary = {"tta": True, "postprocess": "touching", "images": len(ev["ids"]),
               **{k: {"dsb": 0.1, "precision": 0.1, "recall": 0.1, "f1": 0.1,
                      "pixel_accuracy": 0.9} for k in ("native", "resized_256")}}
    table = scoring.results_table(summary, ev["label"], "synthetic", "smoke")
    ours = table[table["method"].str.startswith("nucseg")]
    assert ours["data"].str.contains("no untouched test set").all()
    assert not ours["data"].str.contains("test \\(untouched").any()
    # every row says where it comes from; the paper's training metrics are not a test score
    assert (ours["source"] == "this run").all()
    paper = table[table["method"].str.startswith("paper")].set_index("source")
    test_row = paper.loc["the paper's Table II"]
    assert test_row["dsb"] == 0.5187 and np.isnan(test_row["pixel_f1"])
    train_row = paper.loc["the paper's Fig. 7 (training metrics)"]
    assert np.isnan(train_row["dsb"]) and train_row["pixel_f1"] == 0.8961
    assert "test" not in train_row["data"]


def test_the_training_splits_of_the_run_json_beside_the_model_count_too(tmp_path, syn_root):
    model, _ = stub_run(tmp_path, syn_root, ["stage1_train", "stage1_test"])
    seen = protocol.training_splits(model, profiles.get_profile("smoke"))
    assert set(seen) == {"stage1_train", "stage1_test"}


def test_evaluate_refuses_a_split_the_run_trained_on_before_writing_anything(tmp_path,
                                                                             syn_root):
    # the paper's protocol in smoke: the run trained (and chose its checkpoint) on stage1_test
    model, _ = stub_run(tmp_path / "run", syn_root, ["stage1_train", "stage1_test"])
    with pytest.raises(protocol.ProtocolError) as err:
        evaluation.evaluate(model, "stage1_test", root=syn_root, out_dir=tmp_path / "out",
                            progress=False)
    assert "refusing to score stage1_test" in str(err.value)
    assert "its test split is stage2_test_final" in str(err.value)
    assert not (tmp_path / "out").exists()
    # by default the model's own test split, which this data set does not have
    with pytest.raises(data.DataError, match="stage2_test_final"):
        evaluation.evaluate(model, root=syn_root, out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_training_splits_recorded_in_the_model_file_are_enough(tmp_path, syn_root):
    # a model copied without its run folder still carries what it trained on
    model = stub_model(tmp_path / "alone" / "model.npz",
                        train_splits=["stage1_train", "stage1_test"])
    assert protocol.training_splits(model) == ["stage1_train", "stage1_test"]
    with pytest.raises(protocol.ProtocolError, match="refusing to score stage1_test"):
        evaluation.evaluate(model, "stage1_test", root=syn_root, out_dir=tmp_path / "out",
                            progress=False)
    seen = protocol.training_splits(stub_model(tmp_path / "cpu" / "model.npz",
                                                  train_splits=["stage1_train"]))
    assert protocol.test_split_name(seen) == "stage1_test"


def test_object_errors_classify_matched_missed_false_merged_and_split():
    t = np.zeros((30, 60), np.int32)
    t[2:8, 2:8], t[2:8, 8:14] = 1, 2            # two touching nuclei ...
    t[12:20, 20:36] = 3                          # ... one long nucleus ...
    t[22:28, 2:8], t[22:28, 40:46] = 4, 5        # ... one found, one missed
    p = np.zeros_like(t)
    p[2:8, 2:14] = 10                            # merged: one label over 1 and 2
    p[12:20, 20:28], p[12:20, 28:36] = 11, 12    # split: 3 in two pieces
    p[22:28, 2:8] = 13                           # matched
    p[0:2, 50:54] = 14                           # false
    e = metrics.object_errors(t, p)
    assert e["true"] == {1: "merged", 2: "merged", 3: "split", 4: "matched", 5: "missed"}
    assert e["pred"] == {10: "merged", 11: "split", 12: "split", 13: "matched", 14: "false"}
    assert e["counts"]["true_matched"] == metrics.image_scores(t, p)["tp50"] == 1


def test_touching_nuclei_counts_nuclei_next_to_another():
    t = np.zeros((20, 40), np.int32)
    t[2:8, 2:8], t[2:8, 8:14] = 1, 2             # touching
    t[12:16, 2:6], t[12:16, 7:9] = 3, 4          # one pixel apart
    t[12:16, 30:34] = 5                          # alone
    assert examples.touching_nuclei(t, gap=0) == 2
    assert examples.touching_nuclei(t, gap=1) == 4


def test_crowded_window_centres_on_the_touching_cluster():
    t = np.zeros((200, 400), np.int32)
    t[100:118, 200:236], t[100:118, 236:250] = 1, 2
    rows, cols = examples.crowded_window(t, 64)
    assert rows.start <= 105 < rows.stop and cols.start <= 236 < cols.stop
    assert rows.stop - rows.start == 64


def test_worst_images_are_the_lowest_scores():
    table = pd.DataFrame({"id": list("abcd"), "dsb": [0.5, 0.1, 0.9, 0.1]})
    assert examples.worst_images(table, 2) == ["b", "d"]


def test_the_densest_window_stays_inside_the_image_and_holds_the_most_mask():
    mask = np.zeros((100, 120), bool)
    mask[5:25, 90:118] = True          # a dense block near the top-right corner
    mask[60:64, 10:14] = True
    r, c = examples.densest_centre(mask, 40)
    rows, cols = examples.window_around(mask.shape, (r, c), 40)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (40, 40)
    assert 0 <= rows.start and rows.stop <= 100 and 0 <= cols.start and cols.stop <= 120
    assert mask[rows, cols].sum() == mask[5:25, 90:118].sum()
    # an empty mask: the image's centre; a window larger than the image: the whole image
    assert examples.densest_centre(np.zeros((30, 50), bool), 16) == (15, 25)
    assert examples.window_around((30, 50), (15, 25), 64) == (slice(0, 64), slice(0, 64))


