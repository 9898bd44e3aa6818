"""Publishing: a run's model copied to models/<name>/, calibrated on validation, scored on its
test split, with its results file (nucseg_utils/exports/publishing.py)."""
import pandas as pd
import pytest

from conftest import stub_model, stub_run
from nucseg_utils.core import profiles, runs
from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.evaluation import protocol
from nucseg_utils.exports import publishing


def test_publish_refuses_a_split_the_run_trained_on_before_copying(tmp_path, syn_root):
    run = tmp_path / "run"
    stub_run(run, syn_root, ["stage1_train", "stage1_test"])
    runs.update_run_json(run, completed=True)
    stub_model(run / "model.npz")
    with pytest.raises(protocol.ProtocolError, match="refusing to score stage1_test"):
        publishing.publish_model(run, tmp_path / "published", "stage1_test", syn_root,
                                 progress=False)
    assert not (tmp_path / "published").exists()


@pytest.fixture(scope="module")
def published(tmp_path_factory, smoke_run, smoke_data):
    """The session's smoke run published once (``nucseg publish``): (its results, the
    folder). Tests that change the folder work on a copy."""
    import shutil
    root = tmp_path_factory.mktemp("published")
    run, dest = root / "run", root / "models" / "cpu"
    shutil.copytree(smoke_run, run)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # publish keeps its evaluation outputs under runs/publish
        res = publishing.publish_model(run, dest, None, smoke_data, progress=False)
    return res, dest


def test_publish_writes_every_number_from_the_one_model_it_copies(published, smoke_run):
    """``nucseg publish`` end to end on the session's smoke run: the calibrated choice goes
    into the copied model, results.json records the engine the report will predict with, and
    the lever table's chosen row names the network and the length of its training."""
    import json

    from nucseg_utils import model as model_mod
    from nucseg_utils import report
    from nucseg_utils.model import engines as engine_registry
    res, dest = published
    assert {p.name for p in dest.iterdir()} >= {"model.npz", "results.json", "results.md",
                                                "ablation.md", "ablation.csv", "history.csv",
                                                "run.json"}
    config, _ = model_mod.read_model_file(dest / "model.npz")
    chosen = res["postprocessing_choice"]["chosen"]
    assert {k: config[k] for k in chosen} == chosen
    # the choice is kept apart from what training wrote, which stays the run's own
    assert model_mod.read_calibration(dest / "model.npz") == chosen
    assert model_mod.read_training_config(dest / "model.npz") == \
        model_mod.read_training_config(smoke_run / "model.npz")
    assert model_mod.read_calibration(smoke_run / "model.npz") is None
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
    # `nucseg info`: the settings calibration chose are marked so, the others are the recipe's
    # (the run's own model file, never published, has none chosen)
    info = publishing.model_info(dest / "model.npz")
    marked = {k for k, v in info["postprocessing"].items() if v["from"] == "calibrated"}
    assert marked == set(chosen) and info["fingerprint"] == fingerprint
    assert info["postprocessing"]["postprocess"]["value"] == chosen["postprocess"]
    trained = model_mod.read_training_config(smoke_run / "model.npz")
    assert all(info["postprocessing"][k]["recipe"] == trained[k] for k in chosen)
    assert info["scores"]["tta"]["dsb"] == res["evaluations"]["tta"]["native"]["dsb"]
    unpublished = publishing.model_info(smoke_run / "model.npz")
    assert {v["from"] for v in unpublished["postprocessing"].values()} == {"recipe"}
    assert "scores" not in unpublished


@pytest.mark.heavy
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


@pytest.mark.heavy
def test_a_model_trained_on_stage1_test_is_published_with_validation_scores_only(
        tmp_path, monkeypatch, smoke_data, smoke_profile):
    """The release recipe's publishing: a model that learnt from stage1_train + stage1_test
    has no untouched test set here (stage 2 is absent), so its results say so first and give
    its validation scores per image type and on which types to trust it, never a test score;
    ``nucseg publish`` puts it under models/<its profile>."""
    import json

    from nucseg_utils import cli, training
    from nucseg_utils.evaluation import scoring
    from nucseg_utils.exports import modelzoo
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
    info = modelzoo._package_info(dest / "model.npz", ModelSettings(
        backbone="resnet18", targets=("mask", "touching")))
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


def test_rescore_rewrites_the_results_of_a_published_model_with_its_table_per_type(
        tmp_path, monkeypatch, published, smoke_data):
    """``nucseg publish --rescore``: a results file written before the per-type table gains it
    from the published model alone (no run folder), with the same scores; a model file the
    results were not written for is refused."""
    import json
    import shutil

    from nucseg_utils.data import DataError
    monkeypatch.chdir(tmp_path)
    first, dest = published[0], tmp_path / "models" / "cpu"
    shutil.copytree(published[1], dest)
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
