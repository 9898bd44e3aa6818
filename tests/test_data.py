"""The data layer: real DSB2018 files (skipped without them) and small bad inputs."""
from __future__ import annotations

import shutil
import zipfile

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from nucseg_utils import data
from nucseg_utils.data import DataError, rle


def object_sets(labels: np.ndarray) -> set[frozenset]:
    """The objects of a label image as a set of pixel sets (label values do not matter)."""
    flat = labels.ravel()
    return {frozenset(np.flatnonzero(flat == v).tolist()) for v in np.unique(flat[flat > 0])}


# --------------------------------------------------------------------------- real data
def test_stage1_test_labels_agree_with_solution_sizes_and_rows(real_test_split):
    split = real_test_split
    table = pd.read_csv(split.solution_path, dtype={"ImageId": str})
    table = table[table["Usage"] != "Ignored"]
    rows = table.groupby("ImageId").size()
    sizes = table.groupby("ImageId")[["Height", "Width"]].first()
    assert sorted(split.ids) == sorted(rows.index)
    assert len(split.ids) == 65
    total = 0
    for sid in split.ids:
        lab = split.labels(sid)
        h, w = sizes.loc[sid]
        assert lab.shape == (h, w), sid
        n = len(np.unique(lab[lab > 0]))
        assert n == rows[sid], f"{sid}: {n} objects decoded, {rows[sid]} rows in the CSV"
        total += n
    assert total == 4152


def test_stage1_test_image_sizes_equal_solution_sizes(real_test_split):
    rng = np.random.default_rng(0)
    for sid in rng.choice(real_test_split.ids, size=8, replace=False):
        _, h, w = real_test_split.solution()[sid]
        img = real_test_split.image(sid)
        assert img.shape == (h, w, 3), sid


def test_stage1_train_csv_and_mask_pngs_hold_same_objects(real_train):
    assert len(real_train.ids) == 670
    rng = np.random.default_rng(42)
    for sid in rng.choice(real_train.ids, size=5, replace=False):
        from_csv = real_train.labels(sid)
        from_masks = real_train._labels_from_masks(sid)
        assert from_csv.shape == from_masks.shape
        a, b = object_sets(from_csv), object_sets(from_masks)
        assert len(a) == len(real_train.solution()[sid][0])
        assert a == b, f"{sid}: CSV and mask PNGs differ"


def test_split_image_is_rgb_float_in_unit_range(real_train, real_test_split):
    for split in (real_train, real_test_split):
        for sid in split.ids[:2]:
            img = split.image(sid)
            assert img.ndim == 3 and img.shape[2] == 3
            assert img.dtype == np.float32
            assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0


def test_sample_holds_image_and_labels_of_one_size(real_train):
    s = real_train.sample(real_train.ids[0])
    assert s.id == real_train.ids[0] and s.split == "stage1_train"
    assert s.labels.shape == s.image.shape[:2] and s.labels.max() > 0


# --------------------------------------------------------------------------- tiny DSB layout
def write_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.asarray(arr), extension=".png")
    return path


def add_image(split_dir, sid, image, masks=None):
    """Write ``<sid>/images/<sid>.png`` and, if given, ``<sid>/masks/m<k>.png`` (0/255)."""
    write_png(split_dir / sid / "images" / f"{sid}.png", image)
    if masks is not None:
        (split_dir / sid / "masks").mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(masks):
            write_png(split_dir / sid / "masks" / f"m{k}.png", np.asarray(m, np.uint8) * 255)


def zip_folder(folder, zip_path):
    """Zip the content of ``folder`` with paths relative to it (Kaggle's layout)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return zip_path


@pytest.fixture
def tiny(tmp_path):
    """A data root with a two-image ``stage1_train`` folder; returns (root, split dir, truth)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    split_dir = root / "stage1_train"
    m1 = np.zeros((8, 10), bool)
    m1[1:4, 1:5] = True
    m2 = np.zeros((8, 10), bool)
    m2[5:8, 3:9] = True
    add_image(split_dir, "aaa", rng.integers(0, 256, (8, 10, 3), dtype=np.uint8), [m1, m2])
    m3 = np.zeros((6, 5), bool)
    m3[2:5, 1:3] = True
    add_image(split_dir, "bbb", rng.integers(0, 256, (6, 5), dtype=np.uint8), [m3])
    truth = {"aaa": m1 * 1 + m2 * 2, "bbb": m3 * 1}
    return root, split_dir, truth


def test_tiny_folder_split_reads_ids_and_masks(tiny):
    root, split_dir, truth = tiny
    split = data.open_split("stage1_train", root=root)
    assert split.ids == ["aaa", "bbb"]
    for sid, lab in truth.items():
        assert object_sets(split.labels(sid)) == object_sets(lab)
    assert split.image("bbb").shape == (6, 5, 3)


def test_tiny_zip_split_reads_like_the_folder(tiny):
    root, split_dir, truth = tiny
    folder = data.Split("stage1_train", split_dir)
    zipped = data.Split("stage1_train", zip_folder(split_dir, root / "stage1_train.zip"))
    assert zipped.ids == folder.ids
    for sid in folder.ids:
        assert np.array_equal(zipped.image(sid), folder.image(sid))
        assert object_sets(zipped.labels(sid)) == object_sets(truth[sid])


def test_corrupt_png_names_the_file(tiny):
    _, split_dir, _ = tiny
    bad = split_dir / "aaa" / "images" / "aaa.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    split = data.Split("stage1_train", split_dir)
    with pytest.raises(DataError, match="aaa.png"):
        split.image("aaa")


def test_corrupt_mask_png_names_the_file(tiny):
    _, split_dir, _ = tiny
    (split_dir / "aaa" / "masks" / "m1.png").write_bytes(b"garbage")
    split = data.Split("stage1_train", split_dir)
    with pytest.raises(DataError, match="m1.png"):
        split.labels("aaa")


def test_missing_masks_folder_is_reported(tiny):
    _, split_dir, _ = tiny
    shutil.rmtree(split_dir / "bbb" / "masks")
    split = data.Split("stage1_train", split_dir)
    with pytest.raises(DataError, match="masks"):
        split.labels("bbb")


def test_unknown_id_is_named(tiny):
    _, split_dir, _ = tiny
    split = data.Split("stage1_train", split_dir)
    for read in (split.image, split.labels, split.sample):
        with pytest.raises(DataError, match="no_such_id"):
            read("no_such_id")


def test_truncated_zip_names_the_zip(tiny):
    root, split_dir, _ = tiny
    path = zip_folder(split_dir, root / "stage1_train.zip")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    shutil.rmtree(split_dir)  # so that only the broken zip is left
    with pytest.raises(DataError) as err:
        data.open_split("stage1_train", root=root)
    assert str(path) in str(err.value)


def test_damaged_member_in_zip_names_the_zip(tiny):
    root, split_dir, _ = tiny
    path = root / "damaged.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.write(split_dir / "aaa" / "images" / "aaa.png", "aaa/images/aaa.png")
    blob = bytearray(path.read_bytes())
    start = blob.find(b"IHDR")  # inside the stored PNG: break its bytes (and the CRC)
    blob[start + 40:start + 60] = b"\x00" * 20
    path.write_bytes(bytes(blob))
    split = data.Split("stage1_train", path)
    with pytest.raises(DataError) as err:
        split.image("aaa")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("kind", ["grey", "rgba", "grey16", "one_pixel_wide_grey",
                                  "one_pixel_wide_rgb", "one_pixel_tall_rgb"])
def test_image_kinds_read_as_rgb_float(tmp_path, kind):
    rng = np.random.default_rng(1)
    raw = {
        "grey": rng.integers(0, 256, (5, 7), dtype=np.uint8),
        "rgba": rng.integers(0, 256, (5, 7, 4), dtype=np.uint8),
        "grey16": rng.integers(0, 65536, (5, 7), dtype=np.uint16),
        "one_pixel_wide_grey": rng.integers(0, 256, (6, 1), dtype=np.uint8),
        "one_pixel_wide_rgb": rng.integers(0, 256, (3, 1, 3), dtype=np.uint8),
        "one_pixel_tall_rgb": rng.integers(0, 256, (1, 4, 3), dtype=np.uint8),
    }[kind]
    split_dir = tmp_path / "stage1_test"
    add_image(split_dir, "x", raw)
    img = data.Split("stage1_test", split_dir).image("x")
    h, w = raw.shape[:2]
    assert img.shape == (h, w, 3) and img.dtype == np.float32
    top = 65535.0 if raw.dtype == np.uint16 else 255.0
    rgb = np.repeat(raw[..., None], 3, axis=-1) if raw.ndim == 2 else raw[..., :3]
    np.testing.assert_allclose(img, rgb / top, rtol=0, atol=1e-6)
    assert 0.0 <= img.min() and img.max() <= 1.0


def test_overlapping_masks_name_a_mask_file(tiny):
    _, split_dir, _ = tiny
    m = np.zeros((8, 10), bool)
    m[2:6, 2:6] = True  # overlaps m0 (rows 1-3, cols 1-4)
    write_png(split_dir / "aaa" / "masks" / "zz_overlap.png", m.astype(np.uint8) * 255)
    split = data.Split("stage1_train", split_dir)
    with pytest.raises(DataError) as err:
        split.labels("aaa")
    assert "zz_overlap.png" in str(err.value) or "m0.png" in str(err.value)
    assert "overlap" in str(err.value)


def test_rgba_mask_png_is_read_by_its_colour_not_its_alpha(tiny):
    _, split_dir, truth = tiny
    m = truth["bbb"] > 0
    rgba = np.zeros(m.shape + (4,), np.uint8)
    rgba[m, :3] = 255
    rgba[..., 3] = 255  # fully opaque, as image editors save it
    write_png(split_dir / "bbb" / "masks" / "m0.png", rgba)
    got = data.Split("stage1_train", split_dir).labels("bbb")
    assert object_sets(got) == object_sets(truth["bbb"]), (
        "data.py bug: _labels_from_masks takes the max over all channels, alpha included, so "
        f"an opaque RGBA mask covers the whole image ({int((got > 0).sum())} of {got.size} px "
        f"instead of {int(m.sum())})")


def test_mask_of_wrong_size_names_the_mask(tiny):
    _, split_dir, _ = tiny
    write_png(split_dir / "bbb" / "masks" / "small.png", np.full((3, 3), 255, np.uint8))
    with pytest.raises(DataError, match="small.png"):
        data.Split("stage1_train", split_dir).labels("bbb")


def test_folder_not_in_dsb_layout_is_refused(tmp_path):
    junk = tmp_path / "stage1_train"
    (junk / "some").mkdir(parents=True)
    write_png(junk / "some" / "picture.png", np.zeros((4, 4), np.uint8))
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(DataError):
        data.Split("stage1_train", junk)
    with pytest.raises(DataError):
        data.open_split("stage1_train", root=tmp_path)


def test_zip_not_in_dsb_layout_is_refused(tmp_path):
    path = tmp_path / "stage1_train.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not images")
    with pytest.raises(DataError, match="stage1_train.zip"):
        data.Split("stage1_train", path)


def test_find_data_root_without_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        data.find_data_root(tmp_path)
    assert "kaggle" in str(err.value).lower()


def build_stage1_test(tmp_path):
    """A two-image ``stage1_test.zip`` (images only, like Kaggle's) and the text of its
    ``stage1_solution.csv``; returns (inner zip path, csv text, {id: labels})."""
    rng = np.random.default_rng(3)
    test_dir = tmp_path / "build" / "stage1_test"
    truth, rows = {}, []
    for sid, shape in (("t1", (9, 12)), ("t2", (7, 5))):
        add_image(test_dir, sid, rng.integers(0, 256, shape + (3,), dtype=np.uint8))
        lab = np.zeros(shape, np.int32)
        lab[1:4, 1:4], lab[5:7, 2:5] = 1, 2
        truth[sid] = lab
        rows += [(sid, r, shape[0], shape[1], "Public")
                 for r in rle.encode_labels(lab).values()]
    rows.append(("t2", "1 1", 7, 5, "Ignored"))  # not part of the ground truth
    inner = zip_folder(test_dir, tmp_path / "build" / "stage1_test.zip")
    csv_text = "ImageId,EncodedPixels,Height,Width,Usage\n" + "".join(
        ",".join(map(str, r)) + "\n" for r in rows)
    return inner, csv_text, truth


def test_outer_kaggle_zip_with_inner_zip_and_solution_csv(tmp_path):
    inner, csv_text, truth = build_stage1_test(tmp_path)
    root = tmp_path / "kaggle"
    root.mkdir()
    with zipfile.ZipFile(root / data.OUTER_ZIP, "w") as z:
        z.write(inner, "stage1_test.zip")
        z.writestr("stage1_solution.csv", csv_text)
    split = data.open_split("stage1_test", root=root)
    assert split.ids == ["t1", "t2"]
    for sid, lab in truth.items():
        got = split.labels(sid)
        assert np.array_equal(got, lab), sid
        assert split.image(sid).shape == lab.shape + (3,)


@pytest.mark.parametrize("layout", ["outer zip", "extracted outer zip"])
def test_kaggle_zipped_solution_csv_is_read(tmp_path, layout):
    # Kaggle's data-science-bowl-2018.zip holds the tables zipped one by one:
    # stage1_solution.csv.zip, stage1_train_labels.csv.zip, ... next to stage1_test.zip.
    inner, csv_text, truth = build_stage1_test(tmp_path)
    buf = tmp_path / "build" / "stage1_solution.csv.zip"
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("stage1_solution.csv", csv_text)
    root = tmp_path / "kaggle"
    root.mkdir()
    if layout == "outer zip":
        with zipfile.ZipFile(root / data.OUTER_ZIP, "w") as z:
            z.write(inner, "stage1_test.zip")
            z.write(buf, "stage1_solution.csv.zip")
    else:
        shutil.copy(inner, root / "stage1_test.zip")
        shutil.copy(buf, root / "stage1_solution.csv.zip")
    split = data.open_split("stage1_test", root=root)
    assert split.ids == ["t1", "t2"]
    assert split.has_labels(), (
        "data.py bug: the ground truth in Kaggle's own packaging (stage1_solution.csv.zip, "
        f"{layout}) is not found; only a plain stage1_solution.csv is looked for")
    for sid, lab in truth.items():
        assert np.array_equal(split.labels(sid), lab), sid


def test_read_solution_skips_ignored_rows(tmp_path):
    path = tmp_path / "sol.csv"
    path.write_text("ImageId,EncodedPixels,Height,Width,Usage\n"
                    "a,1 2,4,4,Public\na,9 2,4,4,Ignored\nb,3 1,4,4,Ignored\n")
    sol = data.read_solution(path)
    assert sol == {"a": (["1 2"], 4, 4)}


def test_read_solution_without_columns_names_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Id,Pixels\na,1 2\n")
    with pytest.raises(DataError, match="bad.csv"):
        data.read_solution(path)


# --------------------------------------------------------------------------- examples
def _index():
    """A small index with known answers: the median of ``nuclei`` per modality and the
    images closest to it are fixed by hand."""
    rows = [  # id, modality, nuclei, mean_area, height, width
        ("f1", "fluorescence", 5, 100.0, 256, 256),
        ("f2", "fluorescence", 20, 400.0, 256, 256),
        ("f3", "fluorescence", 21, 150.0, 256, 256),   # 21: the median of 5, 20, 21, 90, 300
        ("f4", "fluorescence", 90, 50.0, 256, 256),
        ("f5", "fluorescence", 300, 30.0, 256, 256),
        ("b1", "brightfield", 10, 250.0, 1024, 1024),  # median count 25: b2 and b3 tie at 5
        ("b2", "brightfield", 20, 100.0, 1024, 1024),  # away; b3's mean area is closer to
        ("b3", "brightfield", 30, 300.0, 1024, 1024),  # the median area (275)
        ("b4", "brightfield", 100, 600.0, 1024, 1024),
        ("s2", "stained", 40, 500.0, 256, 320),        # median 40; s1 and s2 tie exactly,
        ("s1", "stained", 40, 500.0, 256, 320),        # the smaller id wins
        ("s3", "stained", 40, 500.0, 256, 320),
        ("x1", "phase", 7, 80.0, 100, 100),            # a modality named otherwise
    ]
    return pd.DataFrame(rows, columns=["id", "modality", "nuclei", "mean_area", "height",
                                       "width"])


def test_examples_by_modality_picks_the_image_nearest_the_median_count():
    ex = data.examples_by_modality(_index())
    assert ex["modality"].tolist() == ["fluorescence", "brightfield", "stained", "phase"]
    assert ex["id"].tolist() == ["f3", "b3", "s1", "x1"]
    assert ex["median"].tolist() == [21.0, 25.0, 40.0, 7.0]
    assert ex["images"].tolist() == [5, 4, 3, 1]


def test_examples_by_modality_handles_whatever_modalities_exist_and_no_labels():
    idx = _index()
    only = data.examples_by_modality(idx[idx["modality"] == "stained"])
    assert only["modality"].tolist() == ["stained"] and only["id"].tolist() == ["s1"]
    no_truth = idx.drop(columns=["nuclei", "mean_area"])  # a test split: image size instead
    ex = data.examples_by_modality(no_truth)
    assert "pixels" in ex and ex.set_index("modality").loc["brightfield", "id"] == "b1"


def test_examples_by_size_picks_the_images_nearest_the_area_quantiles():
    idx = _index()
    assert data.examples_by_size(idx, (0.0, 1.0)) == ["f5", "b4"]   # smallest, largest area
    assert data.examples_by_size(idx, (0.5,)) == ["b1"]             # the median area, 250
    assert data.examples_by_size(idx, (0.45,)) == ["f3"]            # 190: 150 (f3) is closest
    # an image is used once: the next closest stands in for it
    assert data.examples_by_size(idx, (0.0, 0.0)) == ["f5", "f4"]


def test_most_colourful_picks_the_stained_image():
    grey = np.full((8, 8, 3), 0.5, np.float32)
    purple = np.tile(np.array([0.5, 0.2, 0.6], np.float32), (8, 8, 1))
    assert data.colourfulness(grey) == 0.0
    assert data.modality_of(purple) == "stained" and data.colourfulness(purple) > 0.04
    assert data.most_colourful({"a": grey, "b": purple, "c": grey}) == "b"
    assert data.most_colourful({"b": grey, "a": grey}) == "a"


# --------------------------------------------------------------------------- fixed labels
FIXED_CHANGED = "0a7d30b252359a10fd298b638b90cb9ada3acced4e0c0e5a3692013f432ee4e9"  # 1 of 109


@pytest.fixture(scope="module")
def real_fixed(real_data):
    """stage1_train with the community-fixed labels; skipped without stage1_train_fixed.zip."""
    try:
        split = data.open_split("stage1_train", root=real_data, labels="fixed")
    except DataError:
        pytest.skip("stage1_train_fixed.zip not found beside the data")
    yield split
    split.close()


def test_fixed_labels_hold_664_images_without_the_6_removed(real_fixed, real_train):
    assert real_fixed.name == "stage1_train" and real_fixed.labels_variant == "fixed"
    assert real_fixed.source.name == "stage1_train_fixed.zip"
    assert real_fixed.solution_path is None  # Kaggle's CSV describes the original masks
    assert len(real_fixed.ids) == 664
    removed = data.FIXED_REMOVED["stage1_train"]
    assert len(removed) == 6 and not set(removed) & set(real_fixed.ids)
    assert set(real_fixed.ids) | set(removed) == set(real_train.ids)
    assert "fixed labels" in repr(real_fixed)


def test_a_changed_image_has_other_masks_and_the_same_pixels(real_fixed, real_train):
    fixed, original = real_fixed.sample(FIXED_CHANGED), real_train.sample(FIXED_CHANGED)
    assert np.array_equal(fixed.image, original.image)
    assert fixed.labels.shape == original.labels.shape
    assert object_sets(fixed.labels) != object_sets(original.labels)
    assert (int(fixed.labels.max()), int(original.labels.max())) == (28, 27)
    # two of its masks overlap by 2 pixels: they stay with the first mask, none is lost
    assert real_fixed.resolved_overlaps == {FIXED_CHANGED: 2}
    assert len(np.unique(fixed.labels[fixed.labels > 0])) == 28


def test_an_unchanged_image_reads_the_same_from_both_labels_a_changed_one_does_not(
        real_fixed, real_train):
    sid = "003cee89357d9fe13516167fd67b609a164651b21934585648c740d2c3d86dc1"  # unchanged
    assert object_sets(real_fixed.labels(sid)) == object_sets(real_train.labels(sid))
    sid = "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552"  # changed
    assert object_sets(real_fixed.labels(sid)) != object_sets(real_train.labels(sid))


def test_missing_fixed_labels_name_the_zip(tiny):
    root, _, _ = tiny
    with pytest.raises(DataError) as err:
        data.open_split("stage1_train", root=root, labels="fixed")
    assert str(root / "stage1_train_fixed.zip") in str(err.value)
    assert "train_labels" in str(err.value)
    with pytest.raises(DataError, match="stage1_test has no fixed labels"):
        data.open_split("stage1_test", root=root, labels="fixed")
    with pytest.raises(DataError, match="unknown labels 'clean'"):
        data.open_split("stage1_train", root=root, labels="clean")
    with pytest.raises(DataError, match="labels='fixed'"):
        data.open_split("stage1_train_fixed", root=root)


def test_fixed_folder_or_zip_is_read_and_overlaps_stay_with_the_first_mask(tiny):
    root, split_dir, truth = tiny
    fixed_dir = root / "stage1_train_fixed"
    shutil.copytree(split_dir, fixed_dir)
    shutil.rmtree(fixed_dir / "bbb")  # a removed image
    # a corrected nucleus that overlaps the first one by one pixel
    m = np.zeros((8, 10), bool)
    m[3:5, 4:7] = True
    write_png(fixed_dir / "aaa" / "masks" / "m2.png", m.astype(np.uint8) * 255)
    for form in ("folder", "zip"):
        if form == "zip":
            zip_folder(fixed_dir, root / "stage1_train_fixed.zip")
            shutil.rmtree(fixed_dir)
        split = data.open_split("stage1_train", root=root, labels="fixed")
        assert split.ids == ["aaa"] and split.labels_variant == "fixed", form
        lab = split.labels("aaa")
        assert lab.max() == 3 and lab[3, 4] == 1  # the shared pixel stays with mask m0
        assert int((lab == 3).sum()) == 5 and split.resolved_overlaps == {"aaa": 1}
    # the original labels still refuse an overlap
    write_png(split_dir / "aaa" / "masks" / "m2.png", m.astype(np.uint8) * 255)
    with pytest.raises(DataError, match="overlaps"):
        data.open_split("stage1_train", root=root).labels("aaa")


def test_labels_for_gives_the_fixed_labels_to_stage1_train_only():
    assert data.labels_for("stage1_train", "fixed") == "fixed"
    assert data.labels_for("stage1_test", "fixed") == "original"
    assert data.labels_for("stage1_train", "original") == "original"
    assert data.base_split("stage1_train_fixed") == "stage1_train"
    assert data.base_split("stage1_test") == "stage1_test"
