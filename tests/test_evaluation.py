"""The evaluation protocol (which images are scored and what the tables call them), the
object-level error classes and the criteria that choose example images. Smoke: the built-in
synthetic set, no model needed (the protocol reads a model's provenance, not its weights)."""
import numpy as np
import pandas as pd
import pytest

from nucseg_utils import (
    evaluation, examples, metrics, profiles, protocol, publishing, runs, scoring, synthetic)


@pytest.fixture(scope="module")
def syn_root():
    return synthetic.ensure_synthetic()


def _run_folder(tmp_path, root, train_splits):
    """A run folder as training leaves it (run.json with the profile, split.csv), without
    weights: the protocol reads only what the model was trained and selected on."""
    from nucseg_utils import data
    prof = profiles.get_profile("smoke", train_splits=train_splits)
    runs.update_run_json(tmp_path, profile=prof)
    rows = []
    for s in train_splits:
        ids = data.open_split(s, root).ids
        rows += [{"id": i, "split": s, "subset": "val" if k % 3 == 0 else "train"}
                 for k, i in enumerate(ids)]
    runs.write_table(pd.DataFrame(rows), tmp_path / "split.csv")
    return tmp_path / "model.npz", prof


def test_a_split_the_model_trained_on_is_refused_as_a_test_set():
    with pytest.raises(protocol.ProtocolError, match="refusing to score stage1_test"):
        protocol.check_untouched("stage1_test", ["stage1_train", "stage1_test"])
    protocol.check_untouched("stage1_test", ["stage1_train"])  # no error


def test_stage1_test_is_the_test_set_of_a_model_trained_on_stage1_train(tmp_path, syn_root):
    model, prof = _run_folder(tmp_path, syn_root, ["stage1_train"])
    ev = protocol.evaluation_set(model, syn_root, prof)
    assert ev["split"] == "stage1_test" and ev["is_test"]
    assert "test (untouched" in ev["label"]


def test_training_on_stage1_test_without_stage2_scores_validation_labelled_as_such(
        tmp_path, syn_root):
    # the paper's protocol (stage1_train + stage1_test) in smoke, on data without stage 2
    model, prof = _run_folder(tmp_path, syn_root, ["stage1_train", "stage1_test"])
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


def test_the_training_splits_of_the_run_json_beside_the_model_count_too(tmp_path, syn_root):
    model, _ = _run_folder(tmp_path, syn_root, ["stage1_train", "stage1_test"])
    seen = protocol.training_splits(model, profiles.get_profile("smoke"))
    assert set(seen) == {"stage1_train", "stage1_test"}


def _model_file(path, **config):
    """A model file as far as the protocol reads it: its config (no weights)."""
    import json
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, config=np.array(json.dumps({"backbone": "resnet18", "targets": ["mask"],
                                               **config})))
    return path


def test_evaluate_refuses_a_split_the_run_trained_on_before_writing_anything(tmp_path,
                                                                             syn_root):
    # the paper's protocol in smoke: the run trained (and chose its checkpoint) on stage1_test
    model, _ = _run_folder(tmp_path / "run", syn_root, ["stage1_train", "stage1_test"])
    with pytest.raises(protocol.ProtocolError) as err:
        evaluation.evaluate(model, "stage1_test", root=syn_root, out_dir=tmp_path / "out",
                            progress=False)
    assert "refusing to score stage1_test" in str(err.value)
    assert "its test split is stage2_test_final" in str(err.value)
    assert not (tmp_path / "out").exists()
    # by default the model's own test split, which this data set does not have
    with pytest.raises(evaluation.data_mod.DataError, match="stage2_test_final"):
        evaluation.evaluate(model, root=syn_root, out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_training_splits_recorded_in_the_model_file_are_enough(tmp_path, syn_root):
    # a model copied without its run folder still carries what it trained on
    model = _model_file(tmp_path / "alone" / "model.npz",
                        train_splits=["stage1_train", "stage1_test"])
    assert protocol.training_splits(model) == ["stage1_train", "stage1_test"]
    with pytest.raises(protocol.ProtocolError, match="refusing to score stage1_test"):
        evaluation.evaluate(model, "stage1_test", root=syn_root, out_dir=tmp_path / "out",
                            progress=False)
    seen = protocol.training_splits(_model_file(tmp_path / "cpu" / "model.npz",
                                                  train_splits=["stage1_train"]))
    assert protocol.test_split_name(seen) == "stage1_test"


def test_publish_refuses_a_split_the_run_trained_on_before_copying(tmp_path, syn_root):
    run = tmp_path / "run"
    _run_folder(run, syn_root, ["stage1_train", "stage1_test"])
    runs.update_run_json(run, completed=True)
    _model_file(run / "model.npz")
    with pytest.raises(protocol.ProtocolError, match="refusing to score stage1_test"):
        publishing.publish_model(run, tmp_path / "published", "stage1_test", syn_root,
                                 progress=False)
    assert not (tmp_path / "published").exists()


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


def test_publish_writes_every_number_from_the_one_model_it_copies(tmp_path, monkeypatch,
                                                                  smoke_run, smoke_data):
    """``nucseg publish`` end to end on the session's smoke run: the calibrated choice goes
    into the copied model, results.json records the engine the report will predict with, and
    the lever table's chosen row names the network and the length of its training."""
    import json
    import shutil

    from nucseg_utils import engines as engine_registry
    from nucseg_utils import model as model_mod
    from nucseg_utils import report
    monkeypatch.chdir(tmp_path)  # publish keeps its evaluation outputs under runs/publish
    run, dest = tmp_path / "run", tmp_path / "models" / "cpu"
    shutil.copytree(smoke_run, run)
    res = publishing.publish_model(run, dest, None, smoke_data, progress=False)
    assert {p.name for p in dest.iterdir()} >= {"model.npz", "results.json", "results.md",
                                                "ablation.md", "ablation.csv", "history.csv",
                                                "run.json"}
    config, _ = model_mod.read_model_file(dest / "model.npz")
    chosen = res["postprocessing_choice"]["chosen"]
    assert {k: config[k] for k in chosen} == chosen
    fingerprint = runs.file_fingerprint(dest / "model.npz")
    engines = {e["engine"] for e in res["evaluations"].values()}
    assert len(engines) == 1 and engines <= set(engine_registry.ENGINES)
    assert report.results_engine(dest) == engines.pop()
    saved = json.loads((dest / "results.json").read_text())
    assert saved["evaluations"]["tta"]["model_fingerprint"] == fingerprint
    md = (dest / "results.md").read_text()
    assert f"{res['evaluations']['tta']['native']['dsb']:.4f}" in md
    # the Kaggle-scorer check names this model: without --model, predict takes the default
    check = next(line for line in md.splitlines() if "Kaggle scorer" in line)
    assert f"nucseg predict --model {res['evaluations']['tta']['model']} " in check
    assert "stage1_solution.csv" in check
    first = (dest / "ablation.md").read_text().splitlines()[6]
    decoder = "-".join(map(str, profiles.get_profile("smoke")["decoder_filters"]))
    assert first.startswith(f"| `{fingerprint}` | chosen recipe: resnet18 U-Net, decoder "
                            f"{decoder}, 2 epochs x 2 steps, nuclei rescaled to 20 px")


def test_a_candidate_is_judged_on_validation_without_the_test_split_or_the_model(
        tmp_path, monkeypatch, smoke_run, smoke_data):
    """``nucseg publish --validation-only``: the candidate's rows join the lever table, the
    published model and results stay as they were, the test split is not predicted; publishing
    the same run for real replaces the candidate's rows."""
    import shutil
    monkeypatch.chdir(tmp_path)
    run, dest = tmp_path / "run", tmp_path / "models" / "cpu"
    shutil.copytree(smoke_run, run)
    dest.mkdir(parents=True)
    (dest / "results.md").write_text("the published model's results\n")
    res = publishing.publish_model(run, dest, None, smoke_data, progress=False,
                                   validation_only=True)
    assert sorted(p.name for p in dest.iterdir()) == ["ablation.csv", "ablation.md",
                                                      "results.md"]
    assert (dest / "results.md").read_text() == "the published model's results\n"
    assert not list((tmp_path / "runs" / "publish").glob("stage1_test*"))
    table = pd.read_csv(dest / "ablation.csv")
    assert len(table) == len(res["levers"]) and table["test_dsb"].isna().all()
    assert table["lever"].str.startswith(publishing.CANDIDATE).all()
    assert table["command"].str.endswith("--validation-only").all()
    chosen_row = table["lever"].str.startswith(publishing.CANDIDATE + "chosen recipe")
    assert table.loc[chosen_row, "validation_dsb"].item() == pytest.approx(
        max(c["dsb"] for c in res["postprocessing_choice"]["candidates"]), abs=1e-9)
    publishing.publish_model(run, dest, None, smoke_data, progress=False)
    table = pd.read_csv(dest / "ablation.csv")
    assert not table["lever"].str.startswith(publishing.CANDIDATE).any()
    assert len(table) == len(res["levers"]) and table["test_dsb"].notna().any()


def test_a_model_trained_on_stage1_test_is_published_with_validation_scores_only(
        tmp_path, monkeypatch, smoke_data, smoke_profile):
    """The release recipe's publishing: a model that learnt from stage1_train + stage1_test
    has no untouched test set here (stage 2 is absent), so its results say so first and give
    its validation scores per image type and on which types to trust it, never a test score;
    ``nucseg publish`` puts it under models/<its profile>."""
    import json

    from nucseg_utils import cli, modelzoo, scoring, training
    monkeypatch.chdir(tmp_path)
    prof = profiles.get_profile(smoke_profile, train_splits=["stage1_train", "stage1_test"],
                                split_by="type")
    run = tmp_path / "runs" / "union"
    training.train(prof, run, root=smoke_data, progress=False)
    monkeypatch.setattr(cli, "REPO", tmp_path)
    assert cli.main(["publish", "--run", str(run), "--data", str(smoke_data)]) == 0
    dest = tmp_path / "models" / "smoke"
    md = (dest / "results.md").read_text()
    assert md.splitlines()[2].startswith("**No untouched DSB2018 test set.**")
    assert "stage2_test_final" in md and "stage1_test" in md
    saved = json.loads((dest / "results.json").read_text())
    assert saved["evaluations"] == {} and saved["test_split"] is None
    val = saved["validation"]
    split = pd.read_csv(run / "split.csv")
    assert val["images"] == (split["subset"] == "val").sum()
    assert {"stage1_train", "stage1_test"} == set(split.loc[split["subset"] == "val", "split"])
    assert val["by_type"][-1]["image type"] == "all"
    assert val["by_type"][-1]["images"] == val["images"]
    assert val["by_type"][-1]["DSB"] == pytest.approx(val["dsb"], abs=1e-12)
    assert "| image type | images | nuclei | DSB |" in md
    for line in scoring.trust_statement(val["by_type"]):
        assert line in md
    assert not list((tmp_path / "runs" / "publish").glob("stage*"))  # no test split scored
    assert publishing.published_results(dest / "model.npz") == saved
    info = modelzoo._package_info(dest / "model.npz", {"backbone": "resnet18",
                                                       "targets": ["mask", "touching"]})
    doc = "\n".join(modelzoo._doc_validation(info))
    assert "no untouched DSB2018 test set" in doc and f"DSB {val['dsb']:.4f}" in doc


def test_the_trust_statement_sorts_the_types_by_their_f1():
    rows = [{"image type": "a", "images": 40, "F1 (IoU > 0.7)": 0.71},
            {"image type": "b", "images": 12, "F1 (IoU > 0.7)": 0.45},
            {"image type": "c", "images": 4, "F1 (IoU > 0.7)": 0.1},
            {"image type": "all", "images": 56, "F1 (IoU > 0.7)": 0.6}]
    said = publishing.scoring.trust_statement(rows)
    assert said[0] == "Reliable on: a (F1 0.71)."
    assert said[1].startswith("Usable with care") and said[1].endswith("on: b (F1 0.45).")
    assert said[2] == "Not reliable on: c (F1 0.10, only 4 images: a rough guide)."
    assert len(said) == 4 and "never seen" in said[3]


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


def test_the_post_processing_tried_follows_the_models_outputs():
    from nucseg_utils.calibration import candidates
    from nucseg_utils.postprocessing import DISTANCE_SEEDS
    methods = [{c["postprocess"] for c in candidates(t)}
               for t in (["mask"], ["mask", "touching"], ["mask", "touching", "distance"])]
    assert methods == [{"paper", "cc"}, {"paper", "cc", "touching"},
                       {"paper", "cc", "touching", "distance"}]
    seeds = {c["distance_seed"] for c in candidates(["mask", "touching", "distance"])
             if c["postprocess"] == "distance"}
    assert seeds == set(DISTANCE_SEEDS)


def test_the_lever_table_names_the_other_seeded_watershed_of_a_three_output_model():
    from nucseg_utils.calibration import other_seeded_watershed
    table = pd.DataFrame([
        {"postprocess": "touching", "threshold": 0.6, "distance_seed": None, "dilation": 0,
         "dsb": 0.55},
        {"postprocess": "distance", "threshold": 0.5, "distance_seed": 0.7, "dilation": 1,
         "dsb": 0.53},
        {"postprocess": "distance", "threshold": 0.6, "distance_seed": 0.4, "dilation": 0,
         "dsb": 0.54},
        {"postprocess": "paper", "threshold": None, "distance_seed": None, "dilation": 0,
         "dsb": 0.50}])
    assert other_seeded_watershed(table, "touching") == (
        "the distance-map watershed instead (its best: threshold 0.6, seeds above 0.4, "
        "dilation 0)", 0.54)
    assert other_seeded_watershed(table, "distance") == (
        "the touching-zone watershed instead (its best: threshold 0.6, dilation 0)", 0.55)
    assert other_seeded_watershed(table[table["postprocess"] != "distance"], "touching") is None
    assert other_seeded_watershed(table, "paper") is None


def test_the_recipe_name_says_what_the_training_did():
    from nucseg_utils.calibration import recipe_name
    cfg = {"target_diameter": 20, "tta": True, "postprocess": "touching", "threshold": 0.6}
    cpu = profiles.get_profile("cpu", epochs=18, augmentation={"stain": 0.3})
    name = recipe_name(cfg, cpu)
    assert name.startswith("chosen recipe: resnet18 U-Net, decoder 64-32-16-16-16, "
                           "18 epochs x 100 steps, stain augmentation 0.3, "
                           "nuclei rescaled to 20 px")
    assert "stain" not in recipe_name(cfg, profiles.get_profile("cpu"))
    dist = profiles.get_profile("cpu", targets=["mask", "touching", "distance"])
    name = recipe_name({**cfg, "postprocess": "distance", "distance_seed": 0.4}, dist)
    assert "a third output: the distance to the nucleus' edge" in name
    assert name.endswith("distance watershed at threshold 0.6, seeds above 0.4, dilation 0 px")
    assert "seed" not in recipe_name(cfg, profiles.get_profile("cpu"))
    assert ", 15 epochs x 100 steps, seed 43, nuclei" in recipe_name(
        cfg, profiles.get_profile("cpu", seed=43))
    hed = profiles.get_profile("cpu", normalization="haematoxylin")
    assert "stained tissue unmixed to its haematoxylin channel" in recipe_name(cfg, hed)
    assert recipe_name(cfg) == ("chosen recipe: nuclei rescaled to 20 px (training and test), "
                                "8-fold TTA, touching at threshold 0.6, dilation 0 px")


def test_rescore_rewrites_the_results_of_a_published_model_with_its_table_per_type(
        tmp_path, monkeypatch, smoke_run, smoke_data):
    """``nucseg publish --rescore``: a results file written before the per-type table gains it
    from the published model alone (no run folder), with the same scores; a model file the
    results were not written for is refused."""
    import json
    import shutil

    from nucseg_utils.data import DataError
    monkeypatch.chdir(tmp_path)
    run, dest = tmp_path / "run", tmp_path / "models" / "cpu"
    shutil.copytree(smoke_run, run)
    first = publishing.publish_model(run, dest, None, smoke_data, progress=False)
    by_type = first["evaluations"]["tta"]["native"]["by_type"]
    assert by_type[-1]["image type"] == "all"
    assert by_type[-1]["images"] == first["evaluations"]["tta"]["images"]
    assert "Per image type" in (dest / "results.md").read_text()
    # as written before the table existed
    old = json.loads((dest / "results.json").read_text())
    for ev in old["evaluations"].values():
        del ev["native"]["by_type"]
    (dest / "results.json").write_text(json.dumps(old))
    (dest / "results.md").write_text("old\n")
    shutil.rmtree(run)
    again = publishing.rescore_model(dest, smoke_data, progress=False)
    md = (dest / "results.md").read_text()
    assert "Per image type" in md and "| all |" in md
    # the results file stores the rows with sorted keys; the table reads in its own order
    header = next(line for line in md.splitlines() if line.startswith("| image type |"))
    assert header.split(" | ")[:4] == ["| image type", "images", "nuclei", "DSB"]
    for key in ("tta", "no_tta"):
        assert again["evaluations"][key]["native"]["dsb"] == pytest.approx(
            first["evaluations"][key]["native"]["dsb"], abs=1e-12)
    assert again["dsb_before"]["tta"] == first["evaluations"]["tta"]["native"]["dsb"]
    assert json.loads((dest / "results.json").read_text())["levers"] == old["levers"]
    (dest / "model.npz").write_bytes(b"another model")
    with pytest.raises(DataError, match="results.json"):
        publishing.rescore_model(dest, smoke_data, progress=False)


class _Truth:
    """A stand-in source: ``sample(id).labels`` is the ground truth."""
    def __init__(self, labels):
        self._labels = labels

    def sample(self, sid):
        from types import SimpleNamespace
        return SimpleNamespace(labels=self._labels[sid])


def _disc_image(centres, shape=(96, 96), radius=8):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = i
    return lab


def test_calibration_adds_the_object_filter_that_removes_faint_false_nuclei(smoke_run):
    """Nuclei predicted at 0.99 and false ones at 0.8 (above every threshold tried): only a
    minimum mean probability removes them, and calibration chooses it, reports its row and
    the lever without it; without false nuclei no filter is chosen (a tie keeps none)."""
    from nucseg_utils import calibration
    truth, probs = {}, {}
    for k in range(3):
        lab = _disc_image([(20, 20), (20, 70), (70, 45)])
        false = _disc_image([(75, 12), (10, 45)], radius=5)
        nucleus = np.where(lab > 0, 0.99, np.where(false > 0, 0.8, 0.0)).astype(np.float32)
        truth[f"im{k}"] = lab
        probs[f"im{k}"] = np.stack([nucleus, np.zeros_like(nucleus)], axis=-1)
    predicted = [(_Truth(truth), probs)]
    model = smoke_run / "model.npz"
    chosen, table, _ = calibration.select_postprocessing(model, smoke_run, predicted=predicted)
    assert chosen["min_mean_prob"] >= 0.85 and chosen["min_size_factor"] == 0.0
    filtered = table[table["min_mean_prob"] == chosen["min_mean_prob"]]
    assert filtered["dsb"].max() == pytest.approx(1.0)
    assert calibration.unfiltered(table)["dsb"].max() < 0.7  # 3 of 5 objects right
    clean = [(_Truth(truth), {k: np.where(v > 0.9, v, 0.0) for k, v in probs.items()})]
    chosen, _, _ = calibration.select_postprocessing(model, smoke_run, predicted=clean)
    assert chosen["min_mean_prob"] == 0.0 and chosen["min_size_factor"] == 0.0
