"""Issue #7, reliability: bad inputs get a clear error (or are handled on purpose), nothing is
lost when a run is interrupted, and the same profile and seed give the same results.

Every file these tests read they write themselves, small. The TensorFlow tests share one smoke
run trained per session (``smoke_run`` in conftest.py) and work on copies of it. The command
line's side of the same cases is in test_cli.py; test_data.py and test_metrics.py hold the
bad-input cases of the data layer and the submission CSV that are not repeated here.
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from nucseg_utils import data, evaluation, model, training
from nucseg_utils.core import profiles, runs
from nucseg_utils.data import DataError, outputs
from nucseg_utils.evaluation import metrics, scoring
from nucseg_utils.evaluation.metrics import ScoreError
from nucseg_utils.inference import forward
from nucseg_utils.model import ModelError
from nucseg_utils.training import augmentation


# --------------------------------------------------------------------------- helpers
def png_bytes(arr) -> bytes:
    return iio.imwrite("<bytes>", np.asarray(arr), extension=".png")


def tiff_bytes(arr, **kw) -> bytes:
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(arr), **kw)
    return buf.getvalue()


def add_image(split_dir: Path, sid: str, image, masks=None, suffix=".png") -> Path:
    """``<sid>/images/<sid><suffix>`` and, if given, ``<sid>/masks/m<k>.png`` (0/255)."""
    path = split_dir / sid / "images" / f"{sid}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiff_bytes(image) if suffix.startswith(".tif") else png_bytes(image))
    if masks is not None:
        (split_dir / sid / "masks").mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(masks):
            (split_dir / sid / "masks" / f"m{k}.png").write_bytes(
                png_bytes(np.asarray(m, np.uint8) * 255))
    return path


def temp_files(folder: Path) -> list[Path]:
    """Files left behind by an interrupted atomic write (``.<stem>.<random>.tmp<suffix>``)."""
    return [p for p in Path(folder).rglob("*") if ".tmp" in p.name]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def history_without_time(path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["seconds"])


IMAGE = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)


# =========================================================================== 1. bad inputs
# ---- corrupt and truncated image files
def _truncated_zlib_tiff():
    blob = tiff_bytes(np.random.default_rng(1).integers(0, 65535, (40, 48), dtype=np.uint16),
                      compression="zlib")
    return blob[: len(blob) // 2]


BROKEN_FILES = {
    "png_cut_in_half": (".png", lambda: png_bytes(IMAGE)[: len(png_bytes(IMAGE)) // 2],
                        "truncated"),
    "png_empty_file": (".png", lambda: b"", "empty"),
    "tiff_random_bytes": (".tif", lambda: b"II*\x00" + bytes(range(256)) * 2, "cannot decode"),
    "tiff_cut_in_half": (".tif", lambda: tiff_bytes(IMAGE[..., 0].astype(np.uint16) * 257)[
        : len(tiff_bytes(IMAGE[..., 0].astype(np.uint16) * 257)) // 2], "cannot decode"),
    "tiff_compressed_cut": (".tiff", _truncated_zlib_tiff, "cannot decode"),
    "tiff_empty_file": (".tif", lambda: b"", "empty"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_corrupt_or_truncated_image_names_the_file_and_the_problem(tmp_path, case):
    suffix, make, why = BROKEN_FILES[case]
    # as a user's image (nucseg predict) ...
    user = tmp_path / "user" / f"broken{suffix}"
    user.parent.mkdir()
    user.write_bytes(make())
    with pytest.raises(DataError) as err:
        data.open_images(user.parent).image("broken")
    assert str(user) in str(err.value) and why in str(err.value)
    # ... and inside a DSB split folder
    split_dir = tmp_path / "stage1_test"
    path = add_image(split_dir, "x", IMAGE, suffix=suffix)
    path.write_bytes(make())
    with pytest.raises(DataError) as err:
        data.Split("stage1_test", split_dir).image("x")
    assert str(path) in str(err.value) and why in str(err.value)


def test_tiff_stack_is_refused_instead_of_read_as_a_strange_image(tmp_path):
    path = tmp_path / "stack.tif"
    path.write_bytes(tiff_bytes(np.zeros((6, 40, 48), np.uint16)))
    with pytest.raises(DataError) as err:
        data.read_rgb(path)
    assert str(path) in str(err.value) and "stack of 6 images" in str(err.value)


@pytest.mark.parametrize("kind", ["grey16", "rgba8", "rgb_channels_first", "float_any_range",
                                  "one_pixel_wide16"])
def test_tiff_kinds_read_as_rgb_float_in_unit_range(tmp_path, kind):
    rng = np.random.default_rng(2)
    raw, expected = {
        "grey16": (g := rng.integers(0, 65536, (9, 7), dtype=np.uint16),
                   np.repeat(g[..., None], 3, -1) / 65535.0),
        "rgba8": (c := rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), c[..., :3] / 255.0),
        "rgb_channels_first": (f := rng.integers(0, 256, (3, 9, 7), dtype=np.uint8),
                               np.moveaxis(f, 0, -1) / 255.0),
        "float_any_range": (x := rng.uniform(-5, 1000, (9, 7)).astype(np.float32),
                            np.repeat(((x - x.min()) / (x.max() - x.min()))[..., None], 3, -1)),
        "one_pixel_wide16": (w := rng.integers(0, 65536, (9, 1), dtype=np.uint16),
                             np.repeat(w[..., None], 3, -1) / 65535.0),
    }[kind]
    path = tmp_path / "img.tif"
    path.write_bytes(tiff_bytes(raw))
    img = data.read_rgb(path)
    assert img.dtype == np.float32 and img.shape == expected.shape
    np.testing.assert_allclose(img, expected, atol=1e-5)


def test_hidden_files_are_skipped_and_duplicate_ids_are_refused(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(IMAGE))
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork, not an image")
    assert data.open_images(folder).ids == ["a"]
    (folder / "a.tif").write_bytes(tiff_bytes(IMAGE))
    with pytest.raises(DataError) as err:
        data.open_images(folder)
    assert "a.png" in str(err.value) and "a.tif" in str(err.value)


# ---- images with no nuclei, empty mask files, empty masks folders
def test_empty_mask_file_is_skipped_on_purpose(tmp_path):
    split_dir = tmp_path / "stage1_train"
    m = np.zeros((8, 10), bool)
    m[2:5, 3:7] = True
    add_image(split_dir, "a", IMAGE[:8, :10], [np.zeros((8, 10), bool), m])
    labels = data.Split("stage1_train", split_dir).labels("a")
    assert labels.max() == 1 and np.array_equal(labels > 0, m)


def test_empty_masks_folder_is_an_image_with_no_nuclei(tmp_path):
    split_dir = tmp_path / "stage1_train"
    add_image(split_dir, "a", IMAGE[:8, :10], [])
    add_image(split_dir, "b", IMAGE[:6, :6], [np.zeros((6, 6), bool)])
    split = data.Split("stage1_train", split_dir)
    assert split.has_labels(), "data.py: a split whose masks folders are empty has ground truth"
    for sid, shape in (("a", (8, 10)), ("b", (6, 6))):
        sample = split.sample(sid)
        assert sample.labels is not None and sample.labels.shape == shape
        assert not sample.labels.any()


def test_image_without_nuclei_gives_finite_training_batches_with_empty_targets():
    prof = profiles.get_profile("smoke", batch_size=3)
    img = np.random.default_rng(3).random((70, 90, 3)).astype(np.float32)
    sampler = augmentation.PatchSampler([img], [np.zeros((70, 90), np.int32)], prof)
    x, y = sampler.batch(0)
    assert x.shape == (3, 64, 64, 3) and np.isfinite(x).all()
    assert y.shape == (3, 64, 64, 2) and not y.any()


# ---- solution CSVs: malformed runs, pixels out of range, overlaps, ids without an image
def solution_root(tmp_path, bad_rows=(), ignored=()):
    """A stage1_test folder with images a (6x5) and b (4x4) and a stage1_solution.csv that
    holds correct rows for both plus ``bad_rows``; returns the data root."""
    root = tmp_path / "root"
    add_image(root / "stage1_test", "a", IMAGE[:6, :5])
    add_image(root / "stage1_test", "b", IMAGE[:4, :4])
    rows = [("a", "1 3", 6, 5), ("a", "13 2", 6, 5), ("b", "5 4", 4, 4), *bad_rows]
    text = "ImageId,EncodedPixels,Height,Width,Usage\n" + "".join(
        f"{i},{r},{h},{w},Public\n" for i, r, h, w in rows) + "".join(
        f"{i},{r},{h},{w},Ignored\n" for i, r, h, w in ignored)
    (root / "stage1_solution.csv").write_text(text)
    return root


@pytest.mark.parametrize("run, why", [("7 2 9", "odd number"), ("7 x", "non-integer"),
                                      ("29 5", "outside the image"), ("2 2", "overlap")])
def test_bad_solution_row_names_the_csv_the_image_and_the_problem(tmp_path, run, why):
    root = solution_root(tmp_path, bad_rows=[("a", run, 6, 5)])
    sol = root / "stage1_solution.csv"
    with pytest.raises(DataError) as err:  # reading ground truth for training or evaluation
        data.open_split("stage1_test", root=root).labels("a")
    assert f"{sol.name}: a mask 3" in str(err.value) and why in str(err.value)
    with pytest.raises(ScoreError) as err:  # nucseg score
        metrics.score_csv(sol, sol)
    assert f"{sol}: a mask 3" in str(err.value) and why in str(err.value)
    if why == "overlap":  # both masks that claim the pixel are named
        assert "a mask 1" in str(err.value)


def test_solution_id_without_an_image_is_named(tmp_path):
    root = solution_root(tmp_path, bad_rows=[("ghost", "1 2", 4, 4)])
    split = data.open_split("stage1_test", root=root)
    with pytest.raises(DataError) as err:
        scoring.scored_ids(split)
    assert str(root / "stage1_solution.csv") in str(err.value) and "'ghost'" in str(err.value)
    # evaluate refuses before any model is loaded (this model file does not even exist)
    with pytest.raises(DataError, match="ghost"):
        evaluation.evaluate(tmp_path / "no_model.npz", "stage1_test", root=root,
                            out_dir=tmp_path / "out", progress=False)


def test_image_with_only_ignored_rows_is_left_out_of_scoring(tmp_path):
    root = solution_root(tmp_path)
    add_image(root / "stage1_test", "c", IMAGE[:5, :5])
    (root / "stage1_solution.csv").write_text(
        (root / "stage1_solution.csv").read_text() + "c,1 3,5,5,Ignored\n")
    split = data.open_split("stage1_test", root=root)
    assert split.ids == ["a", "b", "c"] and scoring.scored_ids(split) == ["a", "b"]


# ---- zips
def test_truncated_outer_kaggle_zip_is_named_not_reported_as_missing(tmp_path):
    root = tmp_path / "kaggle"
    root.mkdir()
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("a/images/a.png", png_bytes(IMAGE))
    outer = root / data.OUTER_ZIP
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as z:  # deflated, as Kaggle's
        z.writestr("stage1_test.zip", inner.getvalue())
        z.writestr("padding.bin", np.random.default_rng(0).bytes(20000))
    assert data.open_split("stage1_test", root=root).ids == ["a"]
    outer.write_bytes(outer.read_bytes()[:15000])  # an interrupted download
    with pytest.raises(DataError) as err:
        data.open_split("stage1_test", root=root)
    assert str(outer) in str(err.value) and "truncated" in str(err.value)


def test_truncated_zipped_solution_csv_is_named(tmp_path):
    root = solution_root(tmp_path)
    csv = root / "stage1_solution.csv"
    zipped = root / "stage1_solution.csv.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(csv.name, csv.read_text())
    csv.unlink()
    zipped.write_bytes(zipped.read_bytes()[:40])
    with pytest.raises(DataError) as err:
        data.open_split("stage1_test", root=root).labels("a")
    assert str(zipped) in str(err.value)


# ---- model files
@pytest.mark.slow
def test_unreadable_model_files_name_the_file(tmp_path, smoke_run):
    good = (smoke_run / "model.npz").read_bytes()
    cases = {
        "random.npz": np.random.default_rng(0).bytes(5000),
        "truncated.npz": good[: len(good) // 2],
        "empty.npz": b"",
        "keras.h5": b"\x89HDF\r\n\x1a\n" + bytes(100),
    }
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(ModelError) as err:
            model.NucleusModel.load(path)
        assert str(path) in str(err.value) and "not a readable nucseg model file" in str(err.value)
    with pytest.raises(ModelError, match="no such model file"):
        model.NucleusModel.load(tmp_path / "missing.npz")
    arrays_only = tmp_path / "arrays_only.npz"
    np.savez(arrays_only, w000=np.zeros(3))  # an npz, but no nucseg config in it
    with pytest.raises(ModelError, match="arrays_only.npz"):
        model.NucleusModel.load(arrays_only)


@pytest.mark.heavy
def test_a_model_file_with_a_setting_this_nucseg_does_not_know_names_it(tmp_path, smoke_run):
    newer = _with_config(smoke_run / "model.npz", tmp_path / "newer.npz", colour_space="lab")
    with pytest.raises(ModelError) as err:
        model.NucleusModel.load(newer)
    assert "newer.npz" in str(err.value) and "'colour_space'" in str(err.value)
    assert "config" in str(err.value) and "threshold" in str(err.value)  # what is known
    # a calibration may hold post-processing settings only
    model.save_calibration(_with_config(smoke_run / "model.npz", tmp_path / "cal.npz"),
                           {"threshold": 0.4, "epochs": 3})
    with pytest.raises(ModelError, match="'epochs' in the model file's calibration"):
        model.read_model_file(tmp_path / "cal.npz")
    # the committed models, and the session's smoke model, read as they are
    for path in (model.CPU_MODEL, model.RELEASE_MODEL, smoke_run / "model.npz"):
        assert model.read_model_file(path)[0]["backbone"]


def _with_config(src: Path, dst: Path, **changes) -> Path:
    config, weights = model.read_model_file(src)
    config = {k: v for k, v in {**config, **changes}.items() if v is not None}
    np.savez(dst, config=np.array(json.dumps(config)),
             **{f"w{i:03d}": w for i, w in enumerate(weights)})
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("change, why", [
    ({"targets": ["mask"]}, "1 output(s)"),           # a file of another number of outputs
    ({"backbone": "resnet34"}, "resnet34 U-Net"),     # weights of another backbone
    ({"backbone": "no_such_net"}, "cannot build"),
    ({"backbone": None}, "lacks backbone"),
])
def test_model_file_of_another_shape_names_the_file(tmp_path, smoke_run, change, why):
    path = _with_config(smoke_run / "model.npz", tmp_path / "other.npz", **change)
    with pytest.raises(ModelError) as err:
        model.NucleusModel.load(path)
    assert str(path) in str(err.value) and why in str(err.value)


# ---- images of 2048 x 2048 and more: tiled, so memory stays bounded
class _Array:
    def __init__(self, a):
        self.a = a

    def numpy(self):
        return self.a


class PointwiseNet:
    """Stands in for a network: a per-pixel function of the input, so tiling must reproduce
    the untiled output exactly. Records the shape of every forward pass."""

    def __init__(self):
        self.shapes = []

    def __call__(self, batch, training=False):
        x = np.asarray(batch)
        self.shapes.append(x.shape)
        return _Array(np.stack([x.mean(-1), x[..., 0] * x[..., 2]], -1).astype(np.float32))


class Counting:
    """Wraps a Keras model; records the shape of every forward pass."""

    def __init__(self, net):
        self.net, self.shapes = net, []

    def __call__(self, batch, training=False):
        self.shapes.append(tuple(batch.shape))
        return self.net(batch, training=training)


@pytest.mark.parametrize("shape, tile, overlap", [((2048, 2048), 1024, 64),
                                                   ((2100, 1500), 512, 32),
                                                   ((7, 1), 1024, 64)])
def test_large_image_is_predicted_in_tiles_no_larger_than_tile(shape, tile, overlap):
    img = np.random.default_rng(4).random(shape + (3,), dtype=np.float32)
    net = PointwiseNet()
    config = {"input_mode": "crop"}
    prob = forward.forward_pass(net, img, config, tile=tile, overlap=overlap)
    assert prob.shape == shape + (2,)
    assert max(s[1] for s in net.shapes) <= tile and max(s[2] for s in net.shapes) <= tile
    if max(shape) > tile:
        assert len(net.shapes) > 1
    expected = net(img[None]).numpy()[0]
    np.testing.assert_allclose(prob, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_smoke_model_predicts_a_2048_pixel_image_in_tiles_like_untiled(smoke_run, smoke_data):
    loaded = model.NucleusModel.load(smoke_run / "model.npz", engine="tensorflow")
    net, config = loaded.keras, loaded.config
    from nucseg_utils.inference.preprocessing import normalize
    split = data.open_split("stage1_train", root=smoke_data)
    strips = [normalize(split.image(s), "percentile")[:, :96] for s in split.ids]
    img = np.concatenate(strips * 3, axis=0)[:2048]  # 2048 x 96, real-looking content
    assert img.shape == (2048, 96, 3)
    counting = Counting(net)
    tiled = forward.forward_pass(counting, img, config)  # default tile 1024
    assert len(counting.shapes) == 3 and all(s[1] <= 1024 for s in counting.shapes)
    whole = forward.forward_pass(net, img, config, tile=4096)  # one pass, the reference
    assert tiled.shape == whole.shape == (2048, 96, 2) and np.isfinite(tiled).all()
    # Tiles see less context at their edges; the blended result must still agree closely.
    assert np.abs(tiled - whole).mean() < 0.02
    assert ((tiled[..., 0] > 0.5) == (whole[..., 0] > 0.5)).mean() > 0.99


# =========================================================================== 2. nothing lost
def test_atomic_path_keeps_the_previous_file_when_the_block_fails(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("good\n")
    with pytest.raises(RuntimeError):
        with runs.atomic_path(path) as tmp:
            Path(tmp).write_text("half a ta")
            raise RuntimeError("interrupted")
    assert path.read_text() == "good\n" and temp_files(tmp_path) == []
    with runs.atomic_path(path) as tmp:
        Path(tmp).write_text("new\n")
    assert path.read_text() == "new\n" and temp_files(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with runs.atomic_path(tmp_path / "new.png") as tmp:
            Path(tmp).write_bytes(b"\x89PNG")
            raise KeyboardInterrupt
    assert not (tmp_path / "new.png").exists() and temp_files(tmp_path) == []


def test_failed_table_write_keeps_the_previous_table(tmp_path, monkeypatch):
    path = tmp_path / "per_image.csv"
    runs.write_table(pd.DataFrame({"id": ["a"], "dsb": [0.5]}), path)
    before = snapshot(tmp_path)

    def dies_half_way(self, target, *a, **k):
        Path(target).write_text("id,dsb\na,0.")
        raise OSError("No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", dies_half_way)
    with pytest.raises(OSError):
        runs.write_table(pd.DataFrame({"id": ["b"], "dsb": [1.0]}), path)
    assert snapshot(tmp_path) == before and temp_files(tmp_path) == []


def test_a_table_leaves_what_a_row_does_not_have_blank_in_its_markdown(tmp_path):
    table = pd.DataFrame({"method": ["touching", "paper"], "threshold": [0.6, float("nan")],
                          "distance_seed": [None, None]})
    runs.write_table(table, tmp_path / "candidates.csv")
    md = (tmp_path / "candidates.md").read_text().splitlines()
    assert md[2:] == ["| touching | 0.6000 |  |", "| paper |  |  |"]
    back = pd.read_csv(tmp_path / "candidates.csv")
    assert back["threshold"].isna().tolist() == [False, True]


def test_failed_model_save_keeps_the_previous_model(tmp_path, monkeypatch):
    class Net:
        def __init__(self, v):
            self.v = v

        def get_weights(self):
            return [np.full((3, 3), self.v, np.float32)]

    path = tmp_path / "model.npz"
    model.save_model(Net(1.0), path, {"backbone": "resnet18", "targets": ["mask"]})
    before = path.read_bytes()

    def dies_half_way(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez_compressed", dies_half_way)
    with pytest.raises(OSError):
        model.save_model(Net(2.0), path, {"backbone": "resnet18", "targets": ["mask"]})
    assert path.read_bytes() == before and temp_files(tmp_path) == []
    config, weights = model.read_model_file(path)
    assert config["backbone"] == "resnet18" and weights[0][0, 0] == 1.0


@pytest.mark.heavy
@pytest.mark.slow
def test_interrupted_training_resumes_from_its_checkpoint_with_a_continuous_history(
        tmp_path, smoke_run, smoke_data, smoke_profile, monkeypatch):
    run = tmp_path / "run"
    original = augmentation.PatchSampler.batch

    def interrupted_in_epoch_2(self, step, seed=None):  # 2 steps per epoch: step 3 is epoch 2
        if step == 3:
            raise KeyboardInterrupt
        return original(self, step, seed)

    with monkeypatch.context() as m:
        m.setattr(augmentation.PatchSampler, "batch", interrupted_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            training.train(smoke_profile, run, root=smoke_data, progress=False)
    # what the interrupted run left: epoch 1, complete, and no half-written file
    assert temp_files(run) == []
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1]
    assert model.read_model_file(run / "model.npz")[0]["epoch"] == 1
    with np.load(run / "checkpoint.npz") as z:
        assert int(z["epoch"]) == 1
    assert runs.read_json(run / "run.json").get("completed") is None

    hist = training.train(smoke_profile, run, root=smoke_data, resume=True, progress=False)
    assert "resumed from epoch 1" in (run / "train.log").read_text()
    saved = pd.read_csv(run / "history.csv")
    assert saved["epoch"].tolist() == [1, 2] and saved["step"].tolist() == [2, 4]
    assert hist["epoch"].tolist() == [1, 2]
    assert saved["seconds"].is_monotonic_increasing
    assert runs.read_json(run / "run.json")["completed"] is True
    # the resumed run is the run that was never interrupted
    pd.testing.assert_frame_equal(history_without_time(run / "history.csv"),
                                  history_without_time(smoke_run / "history.csv"))
    _, resumed = model.read_model_file(run / "model.npz")
    _, straight = model.read_model_file(smoke_run / "model.npz")
    assert all(np.array_equal(a, b) for a, b in zip(resumed, straight))


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_and_changes_nothing(tmp_path, smoke_run,
                                                                   smoke_data, smoke_profile):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    before = snapshot(run)
    other = profiles.get_profile(smoke_profile, seed=7, batch_size=4)
    with pytest.raises(ModelError) as err:
        training.train(other, run, root=smoke_data, resume=True, progress=False)
    assert str(run / "checkpoint.npz") in str(err.value)
    assert "seed: 42 -> 7" in str(err.value) and "batch_size: 2 -> 4" in str(err.value)
    assert snapshot(run) == before
    # the same settings on other data (one training image fewer) are refused too
    other_data = tmp_path / "other_data"
    shutil.copytree(smoke_data, other_data)
    shutil.rmtree(next((other_data / "stage1_train").iterdir()))
    with pytest.raises(ModelError) as err:
        training.train(smoke_profile, run, root=other_data, resume=True, progress=False)
    assert str(run / "checkpoint.npz") in str(err.value) and "data:" in str(err.value)
    assert snapshot(run) == before


@pytest.mark.slow
def test_corrupt_checkpoint_is_named_on_resume_and_the_model_is_kept(tmp_path, smoke_run,
                                                                     smoke_data, smoke_profile):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    (run / "checkpoint.npz").write_bytes(b"PK\x03\x04 not a checkpoint any more")
    kept = {f: (run / f).read_bytes() for f in ("model.npz", "history.csv")}
    with pytest.raises(ModelError) as err:
        training.train(smoke_profile, run, root=smoke_data, resume=True, progress=False)
    assert str(run / "checkpoint.npz") in str(err.value)
    assert {f: (run / f).read_bytes() for f in kept} == kept


@pytest.mark.slow
def test_failed_evaluation_keeps_the_previous_tables(tmp_path, smoke_run, smoke_data,
                                                     smoke_eval, monkeypatch):
    out = tmp_path / "eval"
    shutil.copytree(smoke_eval, out)
    tables = {f: (out / f).read_bytes() for f in ("per_image.csv", "per_image.md",
                                                   "summary.json")}

    def scoring_fails(*a, **k):
        raise MemoryError("out of memory while scoring")

    monkeypatch.setattr(metrics, "image_scores", scoring_fails)
    with pytest.raises(MemoryError):
        evaluation.evaluate(smoke_run / "model.npz", "stage1_test", root=smoke_data,
                            out_dir=out, tta=False, progress=False)
    assert {f: (out / f).read_bytes() for f in tables} == tables and temp_files(out) == []


# =========================================================================== 3. reproducible
def test_split_depends_only_on_the_ids_and_the_seed():
    ids = [f"img{i:02d}" for i in range(40)]
    train, val = training.split_ids(ids, 0.25, seed=42)
    assert (train, val) == training.split_ids(list(reversed(ids)), 0.25, seed=42)
    assert len(val) == 10 and sorted(train + val) == ids and not set(train) & set(val)
    assert training.split_ids(ids, 0.25, seed=43)[1] != val


def test_augmentation_stream_depends_only_on_the_seed_and_the_step():
    rng = np.random.default_rng(5)
    images = [rng.random((80, 96, 3)).astype(np.float32) for _ in range(3)]
    labels = [(rng.random((80, 96)) > 0.7).astype(np.int32) * (k + 1) for k in range(3)]
    prof = profiles.get_profile("smoke", batch_size=2)
    a = augmentation.PatchSampler(images, labels, prof)
    b = augmentation.PatchSampler(images, labels, prof)
    full = list(augmentation.prefetch(a, 0, 5))
    resumed = list(augmentation.prefetch(b, 3, 5))  # as after a resume at step 3
    assert len(full) == 5 and len(resumed) == 2
    for (x1, y1), (x2, y2) in zip(full[3:], resumed, strict=True):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert all(np.array_equal(full[s][0], a.batch(s)[0]) for s in range(5))  # order kept
    other = augmentation.PatchSampler(images, labels, profiles.get_profile(prof, seed=1))
    assert not np.array_equal(other.batch(0)[0], full[0][0])


@pytest.mark.heavy
@pytest.mark.slow
def test_two_smoke_runs_with_the_same_seed_give_identical_tables(tmp_path, smoke_run,
                                                                 smoke_data, smoke_profile,
                                                                 smoke_eval):
    run = tmp_path / "run"
    training.train(smoke_profile, run, root=smoke_data, progress=False)
    assert (run / "split.csv").read_bytes() == (smoke_run / "split.csv").read_bytes()
    pd.testing.assert_frame_equal(history_without_time(run / "history.csv"),
                                  history_without_time(smoke_run / "history.csv"))
    _, w1 = model.read_model_file(run / "model.npz")
    _, w2 = model.read_model_file(smoke_run / "model.npz")
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    out = tmp_path / "eval"
    evaluation.evaluate(run / "model.npz", "stage1_test", root=smoke_data, out_dir=out,
                        tta=False, progress=False)
    assert (out / "per_image.csv").read_bytes() == (smoke_eval / "per_image.csv").read_bytes()
    assert (out / "submission.csv").read_bytes() == (smoke_eval / "submission.csv").read_bytes()
    for p in sorted((smoke_eval / "probs").glob("*.npz")):
        assert np.array_equal(outputs.load_probs(p), outputs.load_probs(out / "probs" /
                                                                              p.name))


@pytest.mark.slow
def test_run_json_records_profile_seed_versions_and_data_fingerprint(smoke_run, smoke_data,
                                                                     smoke_profile):
    info = runs.read_json(smoke_run / "run.json")
    assert info["profile"] == json.loads(json.dumps(smoke_profile))
    assert info["seed"] == smoke_profile["seed"] == 42
    for lib in ("python", "numpy", "tensorflow", "tf-keras", "segmentation-models"):
        assert info["versions"].get(lib), lib
    assert info["data_fingerprint"] == {
        "stage1_train": runs.file_fingerprint(smoke_data / "stage1_train")}
    assert info["dataset"] == "synthetic" and info["completed"] is True
    assert info["n_train"] + info["n_val"] == 8


@pytest.mark.slow
def test_evaluation_summary_records_model_data_and_versions(smoke_eval, smoke_run, smoke_data):
    s = runs.read_json(smoke_eval / "summary.json")
    assert s["model_fingerprint"] == runs.file_fingerprint(smoke_run / "model.npz")
    assert s["data_fingerprint"] == runs.file_fingerprint(smoke_data / "stage1_test")
    assert s["versions"]["tensorflow"] and s["tta"] is False and s["images"] == 4
    assert s["unscored_images"] == 0


def test_data_fingerprint_changes_with_the_data(tmp_path):
    split_dir = tmp_path / "stage1_train"
    add_image(split_dir, "a", IMAGE)
    first = runs.file_fingerprint(split_dir)
    assert runs.file_fingerprint(split_dir) == first
    add_image(split_dir, "b", IMAGE)
    assert runs.file_fingerprint(split_dir) != first
    z = tmp_path / "x.zip"
    z.write_bytes(b"one")
    one = runs.file_fingerprint(z)
    z.write_bytes(b"two")
    assert runs.file_fingerprint(z) != one


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    from nucseg_utils.core import runs
    old = os.umask(0o022)
    try:
        path = runs.write_text(tmp_path / "t.txt", "x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
