"""The ``nucseg`` command: exit codes and one-line errors naming the file (issue #7), and that no
command overwrites the user's files. Commands run in-process through ``cli.main``; one test
runs ``python -m nucseg_utils`` as a real subprocess."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from nucseg_utils import __version__, cli, rle


def nucseg(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (to show a command left it alone)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_python_m_prints_the_version():
    done = subprocess.run([sys.executable, "-m", "nucseg_utils", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"nucseg {__version__}"


# --------------------------------------------------------------------------- nucseg score
@pytest.fixture
def solution(tmp_path) -> Path:
    """Two images: 'a' (5x4) with two nuclei, 'b' (3x3) with none."""
    lab = np.zeros((5, 4), np.int32)
    lab[0:2, 0], lab[1:4, 2:4] = 1, 2
    rows = [f"a,{r},5,4,Public" for r in rle.encode_labels(lab).values()] + ["b,,3,3,Public"]
    path = tmp_path / "solution.csv"
    path.write_text("ImageId,EncodedPixels,Height,Width,Usage\n" + "\n".join(rows) + "\n")
    return path


def submission(tmp_path, *rows) -> Path:
    path = tmp_path / "submission.csv"
    path.write_text("ImageId,EncodedPixels\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_score_of_the_solution_against_itself_is_one(capsys, tmp_path, solution):
    code, out, err = nucseg(capsys, "score", solution, solution, "--json")
    assert code == 0 and json.loads(out)["dsb"] == 1.0 and err == ""


@pytest.mark.parametrize("rows, line, why", [
    ([("a", "1 2"), ("a", "11 2 1")], 3, "odd number"),
    ([("a", "1 2"), ("a", "x 2")], 3, "non-integer"),
    ([("b", "8 5")], 2, "outside the image"),
    ([("a", "1 2"), ("b", ""), ("a", "2 3")], 4, "overlap"),
    ([("a", "1 2"), ("zzz", "1 1")], 3, "not in the solution"),
])
def test_score_of_a_malformed_submission_exits_2_naming_the_line(capsys, tmp_path, solution,
                                                                 rows, line, why):
    sub = submission(tmp_path, *rows)
    code, out, err = nucseg(capsys, "score", solution, sub)
    assert code == 2 and out == ""
    assert err.startswith("nucseg score: error: ") and len(err.strip().splitlines()) == 1
    assert f"{sub}:{line}" in err and why in err


def test_score_of_a_missing_file_exits_2(capsys, tmp_path, solution):
    code, _, err = nucseg(capsys, "score", solution, tmp_path / "nope.csv")
    assert code == 2 and "nope.csv" in err


def test_score_never_writes_its_table_over_the_submission(capsys, tmp_path, solution):
    sub = submission(tmp_path, ("a", "1 2"))
    before = sub.read_bytes()
    code, _, err = nucseg(capsys, "score", solution, sub, "--per-image", sub)
    assert code == 2 and str(sub) in err and sub.read_bytes() == before
    code, _, _ = nucseg(capsys, "score", solution, sub, "--per-image", tmp_path / "scores.csv")
    assert code == 0 and (tmp_path / "scores.csv").read_text().startswith("id,dsb")


def test_keyboard_interrupt_exits_130(capsys, monkeypatch, solution):
    def interrupted(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_score", interrupted)
    code, _, err = nucseg(capsys, "score", solution, solution)
    assert code == 130 and "interrupted" in err


# --------------------------------------------------------------------------- nucseg predict
def test_predict_on_a_folder_with_a_corrupt_png_exits_2_and_writes_nothing(capsys, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    iio.imwrite(images / "good.png", np.zeros((20, 20, 3), np.uint8))
    (images / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR broken")
    out = tmp_path / "out"
    # the images are checked before the model is loaded: this model file is never opened
    code, _, err = nucseg(capsys, "predict", "--model", tmp_path / "no_model.npz",
                          "--images", images, "--out", out, "--quiet")
    assert code == 2 and str(images / "bad.png") in err and "cannot decode" in err
    assert not out.exists()


def test_predict_with_a_corrupt_model_exits_2_naming_the_model(capsys, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    iio.imwrite(images / "x.png", np.zeros((20, 20), np.uint8))
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"\x00" * 64)
    code, _, err = nucseg(capsys, "predict", "--model", bad, "--images", images,
                          "--out", tmp_path / "out", "--quiet")
    assert code == 2 and str(bad) in err and "not a readable nucseg model file" in err
    code, _, err = nucseg(capsys, "predict", "--model", bad, "--images", tmp_path / "none",
                          "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "none: no such file or folder" in err


@pytest.mark.slow
def test_predict_handles_grey_rgba_16bit_one_pixel_wide_and_blank_images(capsys, tmp_path,
                                                                          smoke_run):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    kinds = {
        "grey": rng.integers(0, 256, (40, 52), dtype=np.uint8),
        "rgba": rng.integers(0, 256, (36, 40, 4), dtype=np.uint8),
        "grey16": rng.integers(0, 4096, (33, 47), dtype=np.uint16),  # 12-bit camera
        "one_pixel_wide": rng.integers(0, 256, (30, 1), dtype=np.uint8),
        "blank": np.zeros((32, 32, 3), np.uint8),
    }
    for name, arr in kinds.items():
        iio.imwrite(images / f"{name}.png", arr)
    before = tree_digest(images)
    out = tmp_path / "out"
    code, stdout, err = nucseg(capsys, "predict", "--model", smoke_run / "model.npz",
                               "--images", images, "--out", out, "--tta", "--quiet")
    assert code == 0, err
    assert "5 image(s)" in stdout
    for name, arr in kinds.items():
        labels = iio.imread(out / "labels" / f"{name}.png")
        assert labels.shape == arr.shape[:2], name
    ids = {line.split(",")[0] for line in (out / "submission.csv").read_text().splitlines()[1:]}
    assert ids == set(kinds)
    assert tree_digest(images) == before  # the user's images are untouched


# --------------------------------------------------------------------------- nucseg evaluate
def test_evaluate_on_a_split_without_ground_truth_exits_2(capsys, tmp_path, smoke_data):
    root = tmp_path / "root"
    shutil.copytree(smoke_data / "stage1_test", root / "stage1_test")  # no stage1_solution.csv
    # the data is checked before the model is loaded: this model file is never opened
    code, _, err = nucseg(capsys, "evaluate", "--model", tmp_path / "no_model.npz", "--data", root,
                          "--split", "stage1_test", "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "no ground truth" in err and "stage1_solution.csv" in err
    assert not (tmp_path / "out").exists()


def test_evaluate_on_a_folder_that_is_not_dsb_exits_2(capsys, tmp_path):
    junk = tmp_path / "junk"
    (junk / "stage1_test" / "photos").mkdir(parents=True)
    iio.imwrite(junk / "stage1_test" / "photos" / "cat.png", np.zeros((8, 8), np.uint8))
    code, _, err = nucseg(capsys, "evaluate", "--model", tmp_path / "no_model.npz", "--data", junk,
                          "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "not a DSB split folder" in err and str(junk / "stage1_test") in err


@pytest.mark.slow
def test_evaluate_matches_the_api_and_leaves_the_data_alone(capsys, tmp_path, smoke_run,
                                                            smoke_data, smoke_eval):
    before = tree_digest(smoke_data)
    out = tmp_path / "out"
    code, stdout, err = nucseg(capsys, "evaluate", "--model", smoke_run / "model.npz",
                               "--data", smoke_data, "--out", out, "--no-tta", "--json",
                               "--quiet")
    assert code == 0, err
    assert json.loads(stdout)["images"] == 4
    assert (out / "per_image.csv").read_bytes() == (smoke_eval / "per_image.csv").read_bytes()
    assert tree_digest(smoke_data) == before


@pytest.mark.slow
def test_evaluate_with_a_model_of_another_shape_exits_2(capsys, tmp_path, smoke_run, smoke_data):
    from nucseg_utils import model
    config, weights = model.read_model_file(smoke_run / "model.npz")
    other = tmp_path / "other.npz"
    np.savez(other, config=np.array(json.dumps({**config, "targets": ["mask"]})),
             **{f"w{i:03d}": w for i, w in enumerate(weights)})
    code, _, err = nucseg(capsys, "evaluate", "--model", other, "--data", smoke_data,
                          "--out", tmp_path / "out", "--quiet")
    assert code == 2 and str(other) in err and "do not fit" in err


# --------------------------------------------------------------------------- nucseg train
@pytest.mark.parametrize("profile", ["cpu", "smoke"])
def test_train_on_a_folder_that_is_not_dsb_exits_2_without_switching_data(capsys, tmp_path,
                                                                          profile):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not the data")
    code, out, err = nucseg(capsys, "train", "--profile", profile, "--data", junk,
                            "--out", tmp_path / "run", "--quiet")
    assert code == 2 and "No DSB2018 'stage1_train' found" in err and str(junk.resolve()) in err
    assert "SYNTHETIC" not in out and not (tmp_path / "run").exists()


def test_train_does_not_overwrite_a_trained_run_unless_asked(capsys, tmp_path, smoke_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.npz").write_bytes(b"a model that took an hour")
    (run / "history.csv").write_text("epoch,loss\n1,0.5\n")
    before = tree_digest(run)
    code, _, err = nucseg(capsys, "train", "--profile", "smoke", "--data", smoke_data,
                          "--out", run, "--quiet")
    assert code == 2 and str(run) in err and "--resume" in err and "--overwrite" in err
    assert tree_digest(run) == before


# --------------------------------------------------------------------------- nucseg synthetic
def test_synthetic_refuses_to_write_over_a_users_folder(capsys, tmp_path):
    folder = tmp_path / "my_data"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    code, _, err = nucseg(capsys, "synthetic", "--out", folder, "--train", "1", "--test", "1")
    assert code == 2 and str(folder) in err and "not overwriting" in err
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]
