"""The built-in synthetic nuclei set: deterministic, exact, readable by the data layer."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucseg_utils import data
from nucseg_utils.data import synthetic

N_TRAIN, N_TEST, SEED = 6, 4, 3


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory):
    """A small synthetic set, made once for the module."""
    return synthetic.make_dataset(tmp_path_factory.mktemp("syn") / "set", n_train=N_TRAIN,
                                  n_test=N_TEST, seed=SEED)


def _expected(split, n):
    return [synthetic.make_sample(SEED, split, i, n) for i in range(n)]


def canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel objects 1..N in order of their first pixel (row-major), so two label images
    holding the same objects under different numbers compare equal."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    nz = np.flatnonzero(flat)
    out = np.zeros(flat.shape, np.int64)
    if nz.size:
        vals, first = np.unique(flat[nz], return_index=True)
        order = np.argsort(nz[first])
        mapping = np.zeros(int(vals.max()) + 1, np.int64)
        mapping[vals[order]] = np.arange(1, vals.size + 1)
        out = mapping[flat]
    return out.reshape(labels.shape)


def touching_pairs(labels: np.ndarray) -> set:
    """Unordered pairs of different nuclei with 4-adjacent pixels."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    m = (a > 0) & (b > 0) & (a != b)
    return {(min(x, y), max(x, y)) for x, y in zip(a[m].tolist(), b[m].tolist())}


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("look", synthetic.LOOKS)
def test_same_seed_gives_byte_identical_image_and_labels(look):
    a = synthetic.make_image(np.random.default_rng(11), (96, 128), look)
    b = synthetic.make_image(np.random.default_rng(11), (96, 128), look)
    assert a[0].tobytes() == b[0].tobytes() and a[0].shape == b[0].shape
    assert a[1].tobytes() == b[1].tobytes()


@pytest.mark.parametrize("look", synthetic.LOOKS)
def test_different_seed_gives_different_image_and_labels(look):
    a = synthetic.make_image(np.random.default_rng(11), (96, 128), look)
    b = synthetic.make_image(np.random.default_rng(12), (96, 128), look)
    assert not np.array_equal(a[1], b[1])
    assert a[0].shape != b[0].shape or not np.array_equal(a[0], b[0])


def test_same_seed_writes_byte_identical_files_and_other_seed_does_not(tmp_path):
    kw = dict(n_train=2, n_test=1, shapes=[(64, 80)])
    one = synthetic.make_dataset(tmp_path / "one", seed=5, **kw)
    two = synthetic.make_dataset(tmp_path / "two", seed=5, **kw)
    other = synthetic.make_dataset(tmp_path / "other", seed=6, **kw)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert len(files) > 5
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    assert (one / "stage1_train_labels.csv").read_bytes() != \
        (other / "stage1_train_labels.csv").read_bytes()


# --------------------------------------------------------------------------- read back
def test_ids_are_64_hex_and_derived_from_seed_split_and_index(syn_root):
    ids = [synthetic.image_id(SEED, "stage1_train", i) for i in range(N_TRAIN)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", s) for s in ids)
    assert len(set(ids)) == N_TRAIN
    assert synthetic.image_id(SEED, "stage1_train", 0) != synthetic.image_id(SEED, "stage1_test", 0)
    assert synthetic.image_id(SEED, "stage1_train", 0) != synthetic.image_id(SEED + 1, "stage1_train", 0)
    assert sorted(p.name for p in (syn_root / "stage1_train").iterdir()) == sorted(ids)


def test_train_split_reads_back_with_the_drawn_images_and_labels(syn_root):
    expected = {s.id: s for s in _expected("stage1_train", N_TRAIN)}
    split = data.open_split("stage1_train", root=syn_root)
    assert split.ids == sorted(expected)
    assert split.solution_path is not None and split.solution_path.name == "stage1_train_labels.csv"
    for sid in split.ids:
        exp = expected[sid]
        img = split.image(sid)
        assert img.shape == exp.image.shape[:2] + (3,)
        np.testing.assert_allclose(img, exp.image[..., :3] / 255.0, atol=1e-6)
        assert np.array_equal(split.labels(sid), exp.labels)  # CSV rows are in label order
    split.close()


def test_labels_from_masks_hold_the_same_objects_as_labels_from_csv(syn_root):
    by_csv = data.open_split("stage1_train", root=syn_root, labels_from="csv")
    by_masks = data.open_split("stage1_train", root=syn_root, labels_from="masks")
    n_objects = 0
    for sid in by_csv.ids:
        a, b = by_csv.labels(sid), by_masks.labels(sid)
        assert a.shape == b.shape
        assert a.max() == b.max() == len(list((syn_root / "stage1_train" / sid / "masks").iterdir()))
        assert np.array_equal(canonical(a), canonical(b)), sid
        n_objects += int(a.max())
    assert n_objects > 0


def test_mask_pngs_are_single_channel_0_or_255(syn_root):
    import imageio.v3 as iio
    masks = sorted((syn_root / "stage1_train").glob("*/masks/*.png"))[:20]
    assert masks
    for m in masks:
        arr = iio.imread(m)
        assert arr.ndim == 2 and arr.dtype == np.uint8
        assert set(np.unique(arr).tolist()) == {0, 255}


def test_test_split_solution_matches_the_drawn_labels(syn_root):
    expected = {s.id: s for s in _expected("stage1_test", N_TEST)}
    split = data.open_split("stage1_test", root=syn_root)
    assert split.ids == sorted(expected)
    assert split.has_labels()
    assert not any((syn_root / "stage1_test").glob("*/masks"))  # like Kaggle: no masks
    sol = split.solution()
    assert set(sol) == set(expected)
    for sid in split.ids:
        exp = expected[sid]
        runs, h, w = sol[sid]
        assert (h, w) == exp.labels.shape
        assert split.image(sid).shape == exp.image.shape[:2] + (3,)
        assert np.array_equal(canonical(split.labels(sid)), canonical(exp.labels)), sid
    split.close()


def test_solution_csv_has_kaggle_columns_public_usage_and_rows_sorted_by_image(syn_root):
    import pandas as pd
    sol = pd.read_csv(syn_root / "stage1_solution.csv", dtype={"EncodedPixels": str})
    assert list(sol.columns) == ["ImageId", "EncodedPixels", "Height", "Width", "Usage"]
    assert (sol["Usage"] == "Public").all()
    assert list(sol["ImageId"]) == sorted(sol["ImageId"])
    train = pd.read_csv(syn_root / "stage1_train_labels.csv")
    assert list(train.columns) == ["ImageId", "EncodedPixels"]
    assert list(train["ImageId"]) == sorted(train["ImageId"])
    assert train["EncodedPixels"].notna().all()


def test_test_split_holds_an_empty_image_that_reads_back_as_all_zero(syn_root):
    import pandas as pd
    split = data.open_split("stage1_test", root=syn_root)
    empty = [sid for sid in split.ids if not split.labels(sid).any()]
    assert len(empty) >= 1
    sol = pd.read_csv(syn_root / "stage1_solution.csv", dtype={"EncodedPixels": str})
    rows = sol[sol["ImageId"] == empty[0]]
    assert len(rows) == 1 and rows["EncodedPixels"].isna().all()  # one row, empty runs
    assert split.labels(empty[0]).shape == split.image(empty[0]).shape[:2]
    split.close()


def test_set_is_marked_synthetic_in_plain_words(syn_root):
    assert data.is_synthetic(syn_root)
    assert data.dataset_name(syn_root) == "synthetic"
    text = (syn_root / data.SYNTHETIC_MARKER).read_text()
    assert "synthetic" in text.lower() and "nucseg" in text
    assert f"seed {SEED}" in text and "nothing about" in text
    meta = json.loads((syn_root / "synthetic.json").read_text())
    assert meta["params"]["seed"] == SEED and meta["params"]["n_train"] == N_TRAIN


def test_default_set_mixes_looks_channels_and_image_sizes():
    samples = [synthetic.make_sample(0, "stage1_train", i, 24) for i in range(24)]
    looks = [s.look for s in samples]
    assert looks.count("fluorescence") > len(looks) / 2
    assert "brightfield" in looks and "stained" in looks
    assert {s.image.shape[2] for s in samples} == {3, 4}
    shapes = {s.image.shape[:2] for s in samples}
    assert any(h != w for h, w in shapes) and len(shapes) >= 2
    assert all((s.image[..., 3] == 255).all() for s in samples if s.image.shape[2] == 4)


# --------------------------------------------------------------------------- the objects
def _images(n=12):
    shapes = [(256, 256), (200, 300), (256, 320)]
    for k in range(n):
        rng = np.random.default_rng(100 + k)
        look = synthetic.LOOKS[k % 3]
        yield look, synthetic.make_image(rng, shapes[k % 3], look)


def test_image_and_labels_have_the_promised_types_and_shapes():
    for shape in [(256, 256), (200, 300), (256, 320)]:
        img, lab = synthetic.make_image(np.random.default_rng(0), shape, "fluorescence")
        assert img.dtype == np.uint8 and img.shape[:2] == shape and img.shape[2] in (3, 4)
        assert lab.dtype == np.uint16 and lab.shape == shape
    assert synthetic.make_image(np.random.default_rng(0), channels=4)[0].shape[2] == 4
    assert synthetic.make_image(np.random.default_rng(0), channels=3)[0].shape[2] == 3


def test_every_nucleus_is_one_4_connected_region_of_at_least_min_area():
    n_total = 0
    for look, (img, lab) in _images():
        n = int(lab.max())
        assert set(np.unique(lab).tolist()) == set(range(n + 1)), "labels not 0..N"
        for k, box in enumerate(ndi.find_objects(lab), start=1):
            own = lab[box] == k
            _, pieces = ndi.label(own)  # default structure: 4-connectivity
            assert pieces == 1, f"{look}: nucleus {k} in {pieces} pieces"
            assert own.sum() >= synthetic.MIN_AREA
        n_total += n
    assert n_total > 50


def test_nuclei_sizes_vary_within_and_between_images():
    means = []
    for _, (_, lab) in _images():
        areas = np.bincount(lab.ravel())[1:]
        if areas.size >= 5:
            assert areas.std() > 0.1 * areas.mean()
            means.append(np.median(areas))
    assert max(means) > 4 * min(means)


def test_some_nuclei_touch_in_a_typical_image():
    touching = [len(touching_pairs(lab)) > 0 for _, (_, lab) in _images() if lab.max() >= 10]
    assert len(touching) >= 6
    assert np.mean(touching) >= 0.75
    # ...but not everything is one big clump
    for _, (_, lab) in _images(6):
        n = int(lab.max())
        if n >= 10:
            in_pairs = {k for p in touching_pairs(lab) for k in p}
            assert len(in_pairs) < n


def test_no_nuclei_gives_all_zero_labels_but_a_real_image():
    for look in synthetic.LOOKS:
        img, lab = synthetic.make_image(np.random.default_rng(1), (200, 300), look, n_nuclei=0)
        assert lab.shape == (200, 300) and not lab.any()
        assert img.shape[:2] == (200, 300) and img[..., :3].std() > 0


def test_explicit_nucleus_count_is_an_upper_bound_close_to_reached():
    img, lab = synthetic.make_image(np.random.default_rng(2), (256, 256), "fluorescence",
                                    n_nuclei=20)
    assert 12 <= lab.max() <= 20


@pytest.mark.parametrize("look", synthetic.LOOKS)
def test_each_look_has_its_expected_polarity(look):
    for seed in range(3):
        img, lab = synthetic.make_image(np.random.default_rng(seed), (256, 256), look)
        rgb = img[..., :3].astype(float) / 255
        grey = rgb.mean(-1)
        nuc = lab > 0
        far = ~ndi.binary_dilation(nuc, iterations=3)
        colour = float(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean())
        if look == "fluorescence":
            assert grey[nuc].mean() > grey[far].mean() + 0.15
            assert np.median(grey) < 0.3 and colour < 0.01
        elif look == "brightfield":
            assert grey[nuc].mean() < grey[far].mean() - 0.1
            assert np.median(grey) > 0.5 and colour < 0.01
        else:
            assert colour > 0.1
            assert grey[nuc].mean() < grey[far].mean() - 0.15  # dark nuclei
            r, g, b = rgb[nuc].mean(0)
            assert b > g and r > g  # purple nuclei
            r, g, b = np.median(rgb[far], axis=0)
            assert r > g and b > g and r > 0.8  # pink/white around them
        assert data.modality_of(rgb) == look


# --------------------------------------------------------------------------- caching, safety
def test_second_call_with_same_parameters_rewrites_nothing(syn_root, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in syn_root.rglob("*")}

    def refuse(*a, **k):
        raise AssertionError("fast path wrote a file")
    monkeypatch.setattr(synthetic, "_write_png", refuse)
    monkeypatch.setattr(synthetic, "_write_text", refuse)
    assert synthetic.make_dataset(syn_root, n_train=N_TRAIN, n_test=N_TEST, seed=SEED) == syn_root
    assert {p: p.stat().st_mtime_ns for p in syn_root.rglob("*")} == before


def test_changed_parameters_rebuild_the_set(tmp_path):
    out = synthetic.make_dataset(tmp_path / "s", n_train=2, n_test=1, seed=0, shapes=[(64, 64)])
    synthetic.make_dataset(out, n_train=3, n_test=1, seed=0, shapes=[(64, 64)])
    assert len(list((out / "stage1_train").iterdir())) == 3
    assert json.loads((out / "synthetic.json").read_text())["params"]["n_train"] == 3
    assert not (tmp_path / ".s.tmp").exists() and not (tmp_path / ".s.old").exists()


def test_interrupted_build_leaves_no_out_dir_behind(tmp_path, monkeypatch):
    real = synthetic._write_png
    calls = []

    def flaky(path, arr):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt("simulated interruption")
        real(path, arr)
    monkeypatch.setattr(synthetic, "_write_png", flaky)
    out = tmp_path / "set"
    with pytest.raises(KeyboardInterrupt):
        synthetic.make_dataset(out, n_train=3, n_test=1, shapes=[(64, 64)])
    assert len(calls) == 5
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder either
    monkeypatch.setattr(synthetic, "_write_png", real)
    synthetic.make_dataset(out, n_train=3, n_test=1, shapes=[(64, 64)])  # and it can recover
    assert data.is_synthetic(out)


def test_interrupted_rebuild_keeps_the_previous_complete_set(tmp_path, monkeypatch):
    out = synthetic.make_dataset(tmp_path / "set", n_train=2, n_test=1, shapes=[(64, 64)])
    before = sorted(p.name for p in (out / "stage1_train").iterdir())

    def broken(path, text):
        raise OSError("disk full")
    monkeypatch.setattr(synthetic, "_write_text", broken)
    with pytest.raises(OSError):
        synthetic.make_dataset(out, n_train=2, n_test=1, seed=9, shapes=[(64, 64)])
    assert sorted(p.name for p in (out / "stage1_train").iterdir()) == before
    assert json.loads((out / "synthetic.json").read_text())["params"]["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_refuses_to_overwrite_a_folder_that_is_not_a_synthetic_set(tmp_path):
    out = tmp_path / "real"
    (out / "stage1_train").mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        synthetic.make_dataset(out, n_train=1, n_test=1, shapes=[(64, 64)])
    assert (out / "keep.txt").read_text() == "mine"


def test_ensure_synthetic_builds_in_the_cache_named_by_nucseg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCSEG_CACHE", str(tmp_path / "cache"))
    assert synthetic.default_synthetic_root() == tmp_path / "cache" / "synthetic"
    root = synthetic.ensure_synthetic(n_train=1, n_test=1, shapes=[(64, 64)])
    assert root == tmp_path / "cache" / "synthetic" and data.is_synthetic(root)
    monkeypatch.delenv("NUCSEG_CACHE")
    assert synthetic.default_synthetic_root().parts[-3:] == (".cache", "nucseg", "synthetic")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        synthetic.make_image(np.random.default_rng(0), look="phase-contrast")
    with pytest.raises(ValueError):
        synthetic.make_dataset("/nonexistent/never", n_train=0, n_test=0)
    with pytest.raises(ValueError):
        synthetic.make_dataset("/nonexistent/never", looks=["xray"])
