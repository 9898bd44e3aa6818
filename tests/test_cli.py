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

from nucseg_utils import __version__, cli
from nucseg_utils.data import outputs, rle


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
# A stand-in network keeps these tests to seconds: its "probability" is the image's brightness,
# post-processed with connected components, so bright discs on a dark ground are the nuclei.
# The real network runs in the slow test further down.
@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> dict:
    """A model file for ``--model`` and the calls made to the stand-in network."""
    from nucseg_utils import model
    calls = {"predict": 0}
    config = {"backbone": "stand-in", "targets": ["mask"], "tta": True, "postprocess": "cc",
              "min_size": 10, "threshold": 0.5}

    class StandIn(model.NucleusModel):
        def predict_probabilities(self, image, tta=None, spread=False):
            calls["predict"] += 1
            prob = image.mean(axis=-1, keepdims=True)
            return (prob, np.zeros(prob.shape[:2], np.float32)) if spread else prob

    def load(cls, path=None, engine=None):
        if not Path(path).is_file():
            raise model.ModelError(f"{path}: no such model file")
        return StandIn("stand-in network", dict(config), path=path,
                       _forward=(None, "tensorflow"))

    monkeypatch.setattr(model.NucleusModel, "load", classmethod(load))
    path = tmp_path / "fake_model.npz"
    path.write_bytes(b"stand-in")
    return {"path": path, "calls": calls}


def disc_image(shape=(48, 64), centres=((14, 14), (30, 44)), radius=7, dtype=np.uint8):
    """Bright discs on a dark ground; returns (image, the discs' pixel counts)."""
    from skimage.draw import disk
    hi = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    img = np.full(shape, hi * 0.1, dtype)
    areas = []
    for c in centres:
        rr, cc = disk(c, radius, shape=shape)
        img[rr, cc] = hi * 0.9
        areas.append(len(rr))
    return img, areas


@pytest.fixture
def disc_folder(tmp_path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        img, _ = disc_image(centres=((14, 14 + 4 * k), (30, 44)))
        iio.imwrite(images / f"cells{k}.png", img)
    return images


ALL_OUTPUTS = ("labels/{}.png", "labels/{}.tif", "rois/{}.zip", "overlays/{}.png",
               "measurements/{}.csv", "done/{}.json")


def test_predict_writes_every_format_for_every_image(capsys, tmp_path, fake_model, disc_folder):
    import pandas as pd
    import roifile
    import tifffile
    out = tmp_path / "out"
    code, stdout, err = nucseg(capsys, "predict", "--model", fake_model["path"], "--images",
                               disc_folder, "--out", out, "--quiet")
    assert code == 0 and err == "" and "3 image(s), 6 nuclei" in stdout
    _, areas = disc_image()
    labels = {}
    for sid in ("cells0", "cells1", "cells2"):
        assert all((out / f.format(sid)).is_file() for f in ALL_OUTPUTS)
        labels[sid] = outputs.read_labels_png(out / "labels" / f"{sid}.png")
        assert np.array_equal(tifffile.imread(out / "labels" / f"{sid}.tif"), labels[sid])
        assert len(roifile.roiread(out / "rois" / f"{sid}.zip")) == 2
        table = pd.read_csv(out / "measurements" / f"{sid}.csv")
        assert table["image"].eq(sid).all() and sorted(table["area"]) == sorted(areas)
    summary = pd.read_csv(out / "summary.csv")
    assert summary["id"].tolist() == ["cells0", "cells1", "cells2"]
    assert summary["nuclei"].tolist() == [2, 2, 2] and summary["error"].isna().all()
    outputs.write_submission(labels, tmp_path / "expected.csv")
    assert (out / "submission.csv").read_text() == (tmp_path / "expected.csv").read_text()


def test_predict_writes_only_the_formats_asked_for(capsys, tmp_path, fake_model, disc_folder):
    out = tmp_path / "out"
    code, _, err = nucseg(capsys, "predict", "--model", fake_model["path"], "--images",
                          disc_folder, "--out", out, "--formats", "rois,measurements",
                          "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["done", "measurements", "predict.json",
                                                      "rois", "summary.csv", "summary.md"]


def test_predict_on_a_folder_with_bad_files_writes_the_good_ones_and_exits_1(
        capsys, tmp_path, fake_model):
    import pandas as pd
    import tifffile
    images = tmp_path / "images"
    images.mkdir()
    good, _ = disc_image()
    iio.imwrite(images / "good.png", good)
    iio.imwrite(images / "thin.png", good[:, :1])
    grey16, _ = disc_image(dtype=np.uint16)
    tifffile.imwrite(images / "good16.tif", grey16)
    (images / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR broken")
    (images / "truncated.png").write_bytes((images / "good.png").read_bytes()[:60])
    tifffile.imwrite(images / "zstack.tif", np.stack([good] * 6), imagej=True,
                     metadata={"axes": "ZYX"})
    tifffile.imwrite(images / "seven.tif", np.stack([good] * 7), imagej=True,
                     metadata={"axes": "CYX"})
    nan = good.astype(np.float32)
    nan[3, 3] = np.nan
    tifffile.imwrite(images / "nan.tif", nan)
    out = tmp_path / "out"
    code, stdout, err = nucseg(capsys, "predict", "--model", fake_model["path"], "--images",
                               images, "--out", out, "--quiet")
    assert code == 1 and "4 image(s), 6 nuclei" in stdout and "4 image(s) could not" in stdout
    lines = err.strip().splitlines()
    # seven unnamed channels: channel 0 is segmented, and that is said
    assert any(f"{images / 'seven'}.tif: 7 channels, none named as a nuclear stain; "
               f"segmenting channel 0" in line for line in lines), lines
    why = {"bad": "cannot read the image header", "truncated": "cannot decode",
           "zstack": "z-stack", "nan": "NaN"}
    for name, words in why.items():
        line = [l for l in lines if f"{images / name}." in l]
        assert len(line) == 1 and words in line[0], (name, lines)
        assert not (out / "done" / f"{name}.json").exists()
    assert any("thin.png" in l and "too thin" in l for l in lines)
    assert len(lines) == 6
    for sid in ("good", "good16", "thin"):
        assert all((out / f.format(sid)).is_file() for f in ALL_OUTPUTS)
    summary = pd.read_csv(out / "summary.csv").set_index("id")
    assert summary.loc["good", "nuclei"] == 2 and summary.loc["good16", "nuclei"] == 2
    assert "z-stack" in summary.loc["zstack", "error"]
    # counts are whole numbers in the file, even beside the failed images' empty cells
    rows = {l.split(",")[0]: l for l in (out / "summary.csv").read_text().splitlines()}
    assert rows["id"].startswith("id,file,height,width,nuclei,")
    assert f"{images / 'good.png'},48,64,2," in rows["good"]
    assert f"{images / 'zstack.tif'},,,," in rows["zstack"]
    ids = {line.split(",")[0] for line in (out / "submission.csv").read_text().splitlines()[1:]}
    assert ids == {"good", "good16", "thin", "seven"}


def test_predict_segments_the_chosen_channel_of_a_multichannel_tiff(capsys, tmp_path,
                                                                    fake_model):
    import tifffile
    images = tmp_path / "images"
    images.mkdir()
    nuclei, _ = disc_image()
    channels = np.zeros((6,) + nuclei.shape, np.uint8)
    channels[2] = nuclei
    tifffile.imwrite(images / "six.tif", channels, imagej=True, metadata={"axes": "CYX"})
    code, stdout, err = nucseg(capsys, "predict", "--model", fake_model["path"], "--images",
                               images, "--out", tmp_path / "out", "--channel", "2", "--quiet")
    assert code == 0 and "1 image(s), 2 nuclei" in stdout, err
    code, _, err = nucseg(capsys, "predict", "--model", fake_model["path"], "--images",
                          images, "--out", tmp_path / "out6", "--channel", "6", "--quiet")
    assert code == 1 and "six.tif: has 6 channels; --channel 6 does not exist" in err


def test_predict_with_no_usable_image_exits_1_without_opening_the_model(capsys, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR broken")
    out = tmp_path / "out"
    # the images are checked before the model is loaded: this model file is never opened
    code, _, err = nucseg(capsys, "predict", "--model", tmp_path / "no_model.npz",
                          "--images", images, "--out", out, "--quiet")
    assert code == 1 and str(images / "bad.png") in err and "nothing written" in err
    assert not out.exists()


def test_predict_on_a_folder_without_images_exits_2(capsys, tmp_path, fake_model):
    (tmp_path / "empty").mkdir()
    code, _, err = nucseg(capsys, "predict", "--model", fake_model["path"], "--images",
                          tmp_path / "empty", "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "no PNG/TIFF/JPEG images found" in err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_post_processing_that_needs_outputs_the_model_lacks_exits_2(capsys, tmp_path,
                                                                       disc_folder, command):
    from nucseg_utils.cli import DEFAULT_MODEL  # two outputs: mask, touching
    where = (["--images", disc_folder] if command == "predict"
             else ["--split", "stage1_test", "--data", tmp_path]) + ["--out", tmp_path / "out"]
    code, _, err = nucseg(capsys, command, "--model", DEFAULT_MODEL, "--postprocess",
                          "distance", *where, "--quiet")
    assert code == 2
    assert "the 'distance' post-processing needs a model of 3 outputs; this one has 2" in err
    assert not (tmp_path / "out").exists()


def test_train_names_the_targets_it_takes(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--targets", "mask,distance"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--targets: targets 'mask,distance': one of mask, mask,touching, " \
           "mask,touching,distance" in err


@pytest.mark.parametrize("value", ["0", "-0.3", "nan", "abc"])
def test_predict_refuses_a_pixel_size_that_is_not_positive(capsys, tmp_path, disc_folder,
                                                           value):
    with pytest.raises(SystemExit) as stop:
        cli.main(["predict", "--images", str(disc_folder), "--out", str(tmp_path / "out"),
                  f"--pixel-size={value}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--pixel-size" in err
    assert not (tmp_path / "out").exists()


def test_predict_records_the_pixel_size_in_the_tiff_and_the_measurements(capsys, tmp_path,
                                                                         fake_model):
    import pandas as pd
    import tifffile

    from nucseg_utils.exports import files as export
    images = tmp_path / "images"
    images.mkdir()
    img, areas = disc_image()
    tifffile.imwrite(images / "calibrated.tif", img, imagej=True, resolution=(4, 4),
                     metadata={"unit": "micron"})
    iio.imwrite(images / "plain.png", img)
    out = tmp_path / "out"
    code, _, err = nucseg(capsys, "predict", "--model", fake_model["path"], "--images", images,
                          "--out", out, "--quiet")
    assert code == 0, err
    assert export.read_pixel_size(out / "labels" / "calibrated.tif") == pytest.approx(0.25)
    table = pd.read_csv(out / "measurements" / "calibrated.csv")
    assert sorted(table["area_um2"]) == pytest.approx(sorted(a / 16 for a in areas))
    assert "area_um2" not in pd.read_csv(out / "measurements" / "plain.csv")
    code, _, err = nucseg(capsys, "predict", "--model", fake_model["path"], "--images", images,
                          "--out", tmp_path / "out2", "--pixel-size", "0.5", "--quiet")
    for sid in ("calibrated", "plain"):  # --pixel-size wins over the file's
        assert export.read_pixel_size(tmp_path / "out2" / "labels" / f"{sid}.tif") == 0.5


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_predict_rerun_skips_done_images_and_overwrite_redoes_them(capsys, tmp_path,
                                                                   fake_model, disc_folder):
    out = tmp_path / "out"
    argv = ["predict", "--model", fake_model["path"], "--images", disc_folder, "--out", out,
            "--quiet"]
    assert nucseg(capsys, *argv)[0] == 0 and fake_model["calls"]["predict"] == 3
    per_image = {k: v for k, v in mtimes(out).items() if "/" in k}
    code, stdout, _ = nucseg(capsys, *argv)
    assert code == 0 and "0 segmented now, 3 done before" in stdout
    assert fake_model["calls"]["predict"] == 3
    assert {k: v for k, v in mtimes(out).items() if "/" in k} == per_image
    code, stdout, _ = nucseg(capsys, *argv, "--overwrite")
    assert code == 0 and "3 segmented now" in stdout and fake_model["calls"]["predict"] == 6
    after = mtimes(out)
    assert all(after[k] > v for k, v in per_image.items())


def test_predict_resumes_an_interrupted_run_to_identical_outputs(capsys, tmp_path, fake_model,
                                                                 disc_folder):
    out = tmp_path / "out"
    argv = ["predict", "--model", fake_model["path"], "--images", disc_folder, "--out", out,
            "--quiet"]
    assert nucseg(capsys, *argv)[0] == 0
    complete = tree_digest(out)
    # interrupted in the middle of cells1 (some files written, no done-marker) and before
    # cells2 was started; the folder-wide tables not yet rewritten
    (out / "done" / "cells1.json").unlink()
    (out / "rois" / "cells1.zip").unlink()
    for f in ALL_OUTPUTS:
        (out / f.format("cells2")).unlink()
    (out / "submission.csv").unlink()
    (out / "summary.csv").write_text("half-written table")
    calls = fake_model["calls"]["predict"]
    code, stdout, _ = nucseg(capsys, *argv)
    assert code == 0 and "2 segmented now, 1 done before" in stdout
    assert fake_model["calls"]["predict"] == calls + 2
    assert tree_digest(out) == complete


def test_predict_into_a_folder_made_with_other_settings_exits_2(capsys, tmp_path, fake_model,
                                                                disc_folder):
    out = tmp_path / "out"
    argv = ["predict", "--model", fake_model["path"], "--images", disc_folder, "--out", out,
            "--quiet"]
    assert nucseg(capsys, *argv)[0] == 0
    before = tree_digest(out)
    code, _, err = nucseg(capsys, *argv, "--no-tta")
    assert code == 2 and str(out) in err and "tta" in err and "--overwrite" in err
    assert tree_digest(out) == before
    assert nucseg(capsys, *argv, "--no-tta", "--overwrite")[0] == 0


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
    for name in kinds:
        assert all((out / f.format(name)).is_file() for f in ALL_OUTPUTS), name
    assert "one_pixel_wide.png: is 30x1 pixels, too thin" in err
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


def test_evaluate_refuses_a_split_the_model_trained_on_exits_2(capsys, tmp_path, smoke_data):
    from nucseg_utils.core import profiles, runs
    run = tmp_path / "run"  # a run that trained (and chose its checkpoint) on stage1_test
    runs.update_run_json(run, profile=profiles.get_profile(
        "smoke", train_splits=["stage1_train", "stage1_test"]))
    code, _, err = nucseg(capsys, "evaluate", "--model", run / "model.npz", "--data", smoke_data,
                          "--split", "stage1_test", "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "refusing to score stage1_test as a test set" in err
    assert "stage2_test_final" in err and not (tmp_path / "out").exists()
    # without --split: the model's test split, which the synthetic set does not have
    code, _, err = nucseg(capsys, "evaluate", "--model", run / "model.npz", "--data", smoke_data,
                          "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "stage2_test_final" in err and not (tmp_path / "out").exists()


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


@pytest.mark.heavy
def test_train_with_stain_augmentation_records_it_in_the_run(capsys, tmp_path, smoke_data):
    import json
    run = tmp_path / "run"
    code, _, err = nucseg(capsys, "train", "--profile", "smoke", "--data", smoke_data,
                          "--out", run, "--epochs", "1", "--steps-per-epoch", "1",
                          "--stain", "0.3", "--quiet")
    assert code == 0, err
    aug = json.loads((run / "run.json").read_text())["profile"]["augmentation"]
    assert aug["stain"] == 0.3 and aug["colour"] is True  # merged into the profile's


# --------------------------------------------------------------------------- nucseg synthetic
def test_synthetic_refuses_to_write_over_a_users_folder(capsys, tmp_path):
    folder = tmp_path / "my_data"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    code, _, err = nucseg(capsys, "synthetic", "--out", folder, "--train", "1", "--test", "1")
    assert code == 2 and str(folder) in err and "not overwriting" in err
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]


def test_quiet_holds_back_what_libraries_write_to_the_descriptor_unless_verbose(capfd):
    import os

    from nucseg_utils.core import quiet
    with quiet.tensorflow_logs():
        os.write(2, b"E0000 cuda_executor.cc failed call to cuInit: UNKNOWN ERROR (303)\n")
        print("Segmentation Models: using `tf.keras` framework.")
    with quiet.tensorflow_logs(verbose=True):
        os.write(2, b"shown when asked\n")
    out, err = capfd.readouterr()
    assert "cuInit" not in err and "Segmentation Models" not in out
    assert "shown when asked" in err
    with pytest.raises(RuntimeError):  # a failure shows what was held back, then raises
        with quiet.tensorflow_logs():
            os.write(2, b"the reason it failed\n")
            raise RuntimeError("boom")
    assert "the reason it failed" in capfd.readouterr().err


@pytest.mark.slow
def test_predict_prints_no_tensorflow_line_and_one_closing_line(tmp_path, smoke_run):
    images = tmp_path / "images"
    images.mkdir()
    iio.imwrite(images / "cells.png", disc_image()[0])
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "nucseg_utils", "predict", "--model",
                          str(smoke_run / "model.npz"), "--images", str(images), "--out",
                          str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    text = run.stdout + run.stderr
    for word in ("E0000", "W0000", "I0000", "cuInit", "absl", "oneDNN", "tensorflow/",
                 "Segmentation Models"):
        assert word not in text, text
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nucseg predict: 1 image(s)")
    assert str(out) in lines[0] and "summary.csv" in lines[0] and run.stderr == ""


def test_info_prints_a_models_settings_and_where_each_came_from(capsys, smoke_run):
    code = cli.main(["info", str(smoke_run / "model.npz")])
    out = capsys.readouterr().out
    assert code == 0 and "network: backbone resnet18" in out
    assert "threshold 0.5 (recipe)" in out and "(calibrated)" not in out
    assert cli.main(["info", str(smoke_run / "missing.npz")]) == 2
    assert "no such model file" in capsys.readouterr().err
    # a committed model by its name, wherever nucseg is installed (model.committed_model)
    assert cli.build_parser().parse_args(["info", "cpu"]).model.endswith("cpu/model.npz")
    args = cli.build_parser().parse_args(["predict", "--model", "release", "--images", "x",
                                          "--out", "y"])
    assert Path(args.model).is_file() and args.model.endswith("release/model.npz")
