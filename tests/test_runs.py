"""The run folder as a contract (issue 10, section 5): one declared layout, a default run
folder per profile and data set, predictions kept under the fingerprint of the model that made
them, ``run.json`` left to training, and the test-suite overrides announced. Smoke: small
synthetic data, fake model files (only their bytes matter here), no TensorFlow."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from nucseg_utils import data, report, training
from nucseg_utils.core import profiles, runs
from nucseg_utils.data import outputs
from nucseg_utils.model import ModelError


@pytest.fixture
def as_opened(monkeypatch):
    """A notebook opened by a person: none of the test suite's overrides set."""
    for name in report.OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def real_like(tmp_path, smoke_data):
    """The smoke data without its synthetic marker: a data set the notebooks call DSB2018."""
    root = tmp_path / "dsb"
    shutil.copytree(smoke_data, root)
    (root / data.SYNTHETIC_MARKER).unlink()
    assert data.dataset_name(root) == "DSB2018"
    return root


# --------------------------------------------------------------------------- the layout
def test_the_layout_is_declared_once_in_the_module_docstring():
    layout = runs.RunLayout("r")
    named = [layout.model, layout.checkpoint, layout.history, layout.split, layout.train_log,
             layout.run_json, layout.context_json, layout.cache, layout.figures,
             layout.executed, layout.segmented, layout.tta_gain, layout.ablation,
             layout.per_image, layout.submission, layout.summary]
    for path in named:
        assert path.parent == layout.root and path.name in runs.__doc__, path
    assert layout.probs("f00d", True).as_posix() == "r/predictions/f00d/tta/probs"
    assert layout.probs("f00d", False).as_posix() == "r/predictions/f00d/no_tta/probs"
    assert layout.labels("f00d", "cc").as_posix() == "r/labels/f00d/cc"
    for text in ("predictions/<model fingerprint>/tta/probs/<id>.npz",
                 "labels/<model fingerprint>/<method>/<id>.png"):
        assert text in runs.__doc__
    # what training writes is what the Colab runner copies to Drive, the checkpoint last
    from nucseg_utils import colab
    assert colab.TRAINING_FILES == runs.RunLayout.TRAINING_FILES
    assert runs.RunLayout.TRAINING_FILES[-1] == "checkpoint.npz"


def test_default_run_folders_are_one_per_profile_and_data_set(tmp_path):
    folders = {(kind, p, d): runs.default_run_dir(kind, p, d, tmp_path)
               for kind in ("notebooks", "report") for p in ("smoke", "cpu", "paper")
               for d in ("DSB2018", "synthetic")}
    real = [f for (_, _, d), f in folders.items() if d == "DSB2018"]
    assert len(set(real)) == len(real)  # paper and cpu never share a folder
    assert folders[("report", "cpu", "DSB2018")] == tmp_path / "report-cpu"  # as before
    assert folders[("report", "paper", "synthetic")] == tmp_path / "report-synthetic"
    assert folders[("notebooks", "paper", "DSB2018")] == tmp_path / "notebooks-paper"


def test_the_notebooks_default_run_folder_depends_on_the_profile_and_the_data(
        tmp_path, as_opened, real_like, smoke_data):
    as_opened.setattr(runs, "RUNS", tmp_path / "runs")
    cpu = report.Context("cpu", str(real_like))
    paper = report.Context("paper", str(real_like))
    syn = report.Context("cpu", str(smoke_data))  # runs as smoke on the synthetic set
    assert cpu.run == tmp_path / "runs" / "notebooks-cpu"
    assert paper.run == tmp_path / "runs" / "notebooks-paper"
    assert syn.run == tmp_path / "runs" / "notebooks-synthetic"
    assert cpu.figures == cpu.layout.figures == cpu.run / "figures"


# --------------------------------------------------------------------------- run.json
def _trained(run, seed=42, fingerprint=None):
    """A run folder as training leaves it: its run.json and a checkpoint."""
    prof = profiles.get_profile("smoke", seed=seed)
    runs.update_run_json(run, profile=prof, seed=seed, data_fingerprint=fingerprint or {"x": 1},
                         completed=True)
    (run / "checkpoint.npz").write_bytes(b"a checkpoint")
    return prof


def test_the_notebook_context_never_writes_run_json_so_resume_still_checks(tmp_path,
                                                                           as_opened,
                                                                           smoke_data):
    run = tmp_path / "run"
    _trained(run, seed=42)
    before = (run / "run.json").read_bytes()
    ctx = report.Context("smoke", str(smoke_data), str(run), seed=7)
    assert (run / "run.json").read_bytes() == before  # training's record, untouched
    assert runs.read_json(ctx.layout.context_json)["seed"] == 7
    with pytest.raises(ModelError, match="seed: 42 -> 7"):  # the bug: this used to pass
        training.check_resume(ctx.profile, {"x": 1}, run)


def test_the_report_records_its_timings_in_context_json(tmp_path, as_opened):
    def runner(nb, out, params, cwd):
        pass

    run = tmp_path / "run"
    assert report.run_all("smoke", run_dir=run, synthetic=True, figures_dir=tmp_path / "figs",
                          notebooks=["01_eda.ipynb"], runner=runner) == 0
    assert not (run / "run.json").exists()
    assert "01_eda.ipynb" in runs.read_json(run / "context.json")["notebook_seconds"]


def test_a_committed_model_comes_with_its_training_record_never_over_a_training(tmp_path):
    committed = tmp_path / "models" / "cpu"
    committed.mkdir(parents=True)
    (committed / "model.npz").write_bytes(b"committed weights")
    (committed / "history.csv").write_text("epoch,loss\n1,0.5\n")
    runs.update_run_json(committed, profile=profiles.get_profile("cpu"), completed=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.csv").write_text("id,split,subset\n")  # left by an earlier training
    path, hist, how = training.obtain_model(profiles.get_profile("cpu"), run, None,
                                            committed=committed)
    assert path.read_bytes() == b"committed weights" and list(hist["epoch"]) == [1]
    assert (run / "run.json").read_bytes() == (committed / "run.json").read_bytes()
    assert not (run / "split.csv").exists() and "committed model" in how
    # a folder that holds a training of its own is not overwritten with the committed model
    (run / "checkpoint.npz").write_bytes(b"an hour of training")
    (run / "model.npz").write_bytes(b"its best epoch")
    with pytest.raises(ModelError, match="holds a training of its own"):
        training.obtain_model(profiles.get_profile("cpu"), run, None, committed=committed)
    assert (run / "model.npz").read_bytes() == b"its best epoch"


# --------------------------------------------------------------------------- overrides
def test_the_test_suites_overrides_are_announced_when_they_change_a_parameter(
        tmp_path, as_opened, smoke_data, capsys):
    as_opened.setenv("NUCSEG_PROFILE", "smoke")
    as_opened.setenv("NUCSEG_RUN_DIR", str(tmp_path / "suite"))
    ctx = report.Context("cpu", str(smoke_data), str(tmp_path / "mine"))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "overridden" in ln]
    assert len(lines) == 1
    assert "profile = 'cpu' -> 'smoke' (NUCSEG_PROFILE)" in lines[0]
    assert f"-> '{tmp_path / 'suite'}' (NUCSEG_RUN_DIR)" in lines[0]
    assert ctx.run == tmp_path / "suite" and ctx.profile_name == "smoke"
    assert runs.read_json(ctx.layout.context_json)["overrides"]["profile"] == ["cpu", "smoke"]
    # overrides equal to the parameters change nothing and say nothing
    report.Context("smoke", str(smoke_data), str(tmp_path / "suite"))
    assert "overridden" not in capsys.readouterr().out


# --------------------------------------------------------------------------- no leaks
def test_the_maps_of_another_model_are_never_read(tmp_path, as_opened, smoke_data):
    ctx = report.Context("smoke", str(smoke_data), str(tmp_path / "run"))
    ctx.layout.model.write_bytes(b"model A")
    first = ctx.model_fingerprint
    assert first == runs.file_fingerprint(ctx.layout.model)
    assert first in ctx.probs(tta=True).parts and first in ctx.labels("cc").parts
    ids = ["a", "b"]
    for sid in ids:
        outputs.save_probs(ctx.probs(tta=True) / f"{sid}.npz", np.full((4, 4, 2), 0.5))
    assert sorted(outputs.load_prob_dir(ctx.probs(tta=True), ids=ids)) == ids
    # a new model (retrained, re-published) has no maps yet: nothing of model A is read
    ctx.layout.model.write_bytes(b"model B, retrained")
    assert ctx.model_fingerprint != first
    with pytest.raises(FileNotFoundError, match="no probability maps"):
        outputs.load_prob_dir(ctx.probs(tta=True), ids=ids)


def test_only_the_scored_images_are_read_and_all_must_be_there(tmp_path):
    for sid in ("a", "b", "stale"):
        outputs.save_probs(tmp_path / "probs" / f"{sid}.npz", np.zeros((4, 4, 1)))
        outputs.save_labels_png(tmp_path / "labels" / f"{sid}.png", np.zeros((4, 4), int))
    assert sorted(outputs.load_prob_dir(tmp_path / "probs", ids=["a", "b"])) == ["a", "b"]
    assert sorted(outputs.load_label_dir(tmp_path / "labels", ids=["b"])) == ["b"]
    with pytest.raises(FileNotFoundError, match="no probability map for 'c'"):
        outputs.load_prob_dir(tmp_path / "probs", ids=["a", "c"])
    with pytest.raises(FileNotFoundError, match="no label image for 'c'"):
        outputs.load_label_dir(tmp_path / "labels", ids=["c"])


def test_an_evaluation_folder_of_another_model_is_cleared_before_writing(tmp_path, capsys):
    out = tmp_path / "eval"
    made_by = {"model_fingerprint": "aaaa", "split": "stage1_test", "data_fingerprint": "d",
               "tta": True, "postprocess": "touching"}
    outputs.save_probs(out / "probs" / "old.npz", np.zeros((4, 4, 1)))
    outputs.save_labels_png(out / "labels" / "old.png", np.zeros((4, 4), int))
    (out / "per_image.csv").write_text("id,dsb\nold,0.5\n")
    runs.write_json(out / "summary.json", {**made_by, "images": 1})
    (out / "notes.txt").write_text("the user's")
    assert outputs.clear_other_outputs(out, made_by) == []  # the same model: kept
    assert (out / "probs" / "old.npz").exists()
    removed = outputs.clear_other_outputs(out, {**made_by, "model_fingerprint": "bbbb"})
    assert sorted(removed) == ["labels/old.png", "per_image.csv", "probs/old.npz",
                               "summary.json"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert re.search(r"another model.*removed 4 file", capsys.readouterr().err)
