"""Image types (nucseg_utils.evaluation.image_types) on drawn images of known type and on the real stage-1
splits, the split by type (training.split_ids) and the per-type table (scoring.type_table)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nucseg_utils import data, training
from nucseg_utils.evaluation import image_types, metrics, scoring
from nucseg_utils.evaluation.image_types import TYPES


# --------------------------------------------------------------------------- drawn images
def discs(shape=(256, 256), diameter=12.0, spacing=None, seed=0):
    """A label image of non-touching discs of ``diameter`` px on a jittered grid."""
    rng = np.random.default_rng(seed)
    h, w = shape
    step = int(spacing or diameter * 2)
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros(shape, np.int32)
    k = 0
    for cy in range(step // 2, h - step // 2 + 1, step):
        for cx in range(step // 2, w - step // 2 + 1, step):
            jy, jx = rng.integers(-step // 8, step // 8 + 1, 2)
            k += 1
            labels[(yy - cy - jy) ** 2 + (xx - cx - jx) ** 2 <= (diameter / 2) ** 2] = k
    return labels


def paint(labels, background, nucleus, seed=0, noise=0.02):
    """An RGB image: ``background`` colour, ``nucleus`` colour inside the labels, noise (the
    same in the three channels: a grey image stays grey)."""
    rng = np.random.default_rng(seed)
    img = np.empty(labels.shape + (3,), np.float32)
    img[:] = background
    img[labels > 0] = nucleus
    img += rng.normal(0, noise, labels.shape + (1,)).astype(np.float32)
    return np.clip(img, 0, 1)


GREY_DARK, GREY_BRIGHT = (0.05,) * 3, (0.85,) * 3
WHITE, PALE_YELLOW = (0.95, 0.95, 0.95), (0.93, 0.92, 0.78)
PURPLE, PINK = (0.45, 0.30, 0.65), (0.92, 0.55, 0.75)


@pytest.mark.parametrize("diameter, expected", [(12, "fluorescence small nuclei"),
                                                (20, "fluorescence small nuclei"),
                                                (40, "fluorescence large nuclei")])
def test_fluorescence_is_split_by_the_nucleus_diameter_of_its_labels(diameter, expected):
    labels = discs(diameter=diameter)
    img = paint(labels, GREY_DARK, GREY_BRIGHT)
    feat = image_types.features(img, labels)
    assert feat["modality"] == "fluorescence" and feat["diameter_from"] == "labels"
    assert abs(feat["diameter"] - diameter) < 1.5
    assert image_types.image_type(img, labels) == expected
    # the same image without its labels: the estimate from the image finds the same type
    free = image_types.features(img)
    assert free["diameter_from"] == "estimate"
    assert abs(free["diameter"] - diameter) < 0.25 * diameter, free["diameter"]
    assert image_types.classify(free) == expected


def test_the_threshold_between_small_and_large_nuclei_is_30_px():
    base = {"modality": "fluorescence", "brightness": 0.05, "pink_fraction": 0.0}
    assert image_types.classify({**base, "diameter": 29.9}) == "fluorescence small nuclei"
    assert image_types.classify({**base, "diameter": 30.0}) == "fluorescence large nuclei"


def test_labels_without_nuclei_give_a_diameter_of_zero_not_an_estimate():
    img = paint(discs(diameter=40), GREY_DARK, GREY_BRIGHT)
    feat = image_types.features(img, np.zeros(img.shape[:2], np.int32))
    assert feat["diameter"] == 0.0 and feat["diameter_from"] == "labels"
    assert image_types.classify(feat) == "fluorescence small nuclei"


def test_grey_on_a_bright_background_is_grey_tissue():
    labels = discs(diameter=16)
    img = paint(labels, GREY_BRIGHT, (0.35,) * 3)
    assert data.modality_of(img) == "brightfield"
    assert image_types.image_type(img, labels) == "grey tissue (brightfield)"
    assert image_types.image_type(img) == "grey tissue (brightfield)"


@pytest.mark.parametrize("background", [WHITE, PALE_YELLOW])
def test_purple_nuclei_on_white_or_pale_yellow_are_purple_tissue(background):
    labels = discs(diameter=18, spacing=24)
    img = paint(labels, background, PURPLE)
    feat = image_types.features(img, labels)
    assert feat["modality"] == "stained" and feat["pink_fraction"] < 0.05
    assert image_types.classify(feat) == "purple tissue"


def test_purple_nuclei_in_pink_tissue_are_pink_and_purple():
    labels = discs(diameter=18, spacing=36)
    img = paint(labels, PINK, PURPLE)
    img[:, :40] = WHITE  # some empty glass
    feat = image_types.features(img, labels)
    assert feat["modality"] == "stained" and feat["pink_fraction"] > 0.7
    assert image_types.classify(feat) == "pink-and-purple H&E"
    # the share of pink decides, whatever else the image holds
    assert image_types.classify({**feat, "pink_fraction": 0.29}) == "purple tissue"


def test_a_colourful_image_with_a_dark_background_is_fluorescence_not_tissue():
    labels = discs(diameter=24, spacing=34)
    img = paint(labels, GREY_DARK, (0.05, 0.8, 0.1))  # green nuclei on black
    assert data.modality_of(img) == "stained"  # colourful, by the data layer's tag
    assert image_types.image_type(img, labels) == "fluorescence small nuclei"
    assert image_types.image_type(img) == "fluorescence small nuclei"


def test_the_type_is_deterministic_and_a_flat_image_has_no_estimated_size():
    labels = discs(diameter=14)
    img = paint(labels, GREY_DARK, GREY_BRIGHT, seed=3)
    assert image_types.features(img) == image_types.features(img.copy())
    assert image_types.estimate_diameter(np.full((64, 64, 3), 0.2, np.float32)) == 0.0


def test_type_table_counts_the_images_of_each_type_per_split():
    index = pd.DataFrame({
        "split": ["a", "a", "a", "b", "b"],
        "type": ["purple tissue", "fluorescence small nuclei", "purple tissue",
                 "fluorescence small nuclei", "fluorescence large nuclei"],
        "height": [256, 256, 256, 520, 360], "width": [320, 256, 320, 696, 360],
        "diameter": [20.0, 12.0, 22.0, 14.0, 45.0], "brightness": [0.7, 0.02, 0.7, 0.03, 0.02]})
    table = image_types.type_table(index).set_index("type")
    assert list(table.index) == ["fluorescence small nuclei", "fluorescence large nuclei",
                                 "purple tissue", "all"]  # TYPE_ORDER, only those present
    assert table.loc["purple tissue", ["a", "b"]].tolist() == [2, 0]
    assert table.loc["all", ["a", "b"]].tolist() == [3, 2]
    assert table.loc["purple tissue", "image sizes"] == "256x320: 2"
    assert table.loc["purple tissue", "median nucleus diameter (px)"] == 21.0
    assert table.loc["fluorescence large nuclei", "Caicedo et al. group"] == "Superbig"


# --------------------------------------------------------------------------- split by type
def test_split_by_type_gives_every_type_validation_images():
    types = {f"s{i:03d}": "fluorescence small nuclei" for i in range(400)}
    types.update({f"p{i:03d}": "purple tissue" for i in range(100)})
    types.update({f"g{i:02d}": "grey tissue (brightfield)" for i in range(16)})
    types.update({f"h{i}": "pink-and-purple H&E" for i in range(4)})
    types["one"] = "fluorescence large nuclei"
    train, val = training.split_ids(list(types), 0.1, 42, types=types)
    counts = pd.Series([types[i] for i in val]).value_counts().to_dict()
    # 10 % of a type, at least 12 (MIN_VAL_PER_TYPE), at most half; one image: none
    assert counts == {"fluorescence small nuclei": 40, "purple tissue": 12,
                      "grey tissue (brightfield)": 8, "pink-and-purple H&E": 2}
    assert sorted(train + val) == sorted(types) and not set(train) & set(val)
    assert "one" in train
    # deterministic, whatever the order of the ids; another seed draws other images
    assert training.split_ids(sorted(types, reverse=True), 0.1, 42, types=types) == (train, val)
    assert training.split_ids(list(types), 0.1, 43, types=types)[1] != val
    # one type's draw does not depend on the others
    fewer = {k: v for k, v in types.items() if not k.startswith("p")}
    assert [i for i in training.split_ids(list(fewer), 0.1, 42, types=fewer)[1]
            if i.startswith("s")] == [i for i in val if i.startswith("s")]
    with pytest.raises(ValueError, match="no image type"):
        training.split_ids(list(types) + ["x"], 0.1, 42, types=types)


def test_a_split_by_type_of_single_images_falls_back_to_random():
    types = {"a": "purple tissue", "b": "fluorescence small nuclei"}
    assert training.split_ids(list(types), 0.5, 1, types=types) == \
        training.split_ids(list(types), 0.5, 1)


# --------------------------------------------------------------------------- the table per type
def test_type_table_scores_each_type_at_iou_07_beside_the_published_recall():
    truth = np.zeros((20, 30), np.int32)
    truth[2:8, 2:8] = 1       # 36 px
    truth[10:18, 10:20] = 2   # 80 px
    pred = np.zeros_like(truth)
    pred[2:8, 2:8] = 1        # exact: IoU 1
    pred[10:18, 10:16] = 2    # 48 of 80 px: IoU 0.6, matched at 0.5, not at 0.7
    pred[0:2, 25:30] = 3      # a false object
    empty = np.zeros_like(truth)
    results = {"a": metrics.image_scores(truth, pred), "b": metrics.image_scores(truth, truth),
               "c": metrics.image_scores(empty, empty)}
    assert scoring.counts_at(results["a"]) == (1, 2, 1)
    assert scoring.counts_at(results["a"], 0.5) == (2, 1, 0)
    types = {"a": "purple tissue", "b": "purple tissue", "c": "fluorescence small nuclei"}
    table = scoring.type_table(results, pd.Series(types)).set_index("image type")
    assert list(table.index) == ["fluorescence small nuclei", "purple tissue", "all"]
    purple = table.loc["purple tissue"]
    assert purple["images"] == 2 and purple["nuclei"] == 4
    assert purple["recall (IoU > 0.7)"] == pytest.approx((0.5 + 1.0) / 2)
    assert purple["F1 (IoU > 0.7)"] == pytest.approx((2 / 5 + 1.0) / 2)  # 2TP/(2TP+FP+FN)
    assert purple["DSB"] == pytest.approx((results["a"]["dsb"] + 1.0) / 2)
    assert purple[scoring.WINNER_COLUMN] == 0.659 and purple[scoring.UNET_COLUMN] == 0.360
    assert table.loc["fluorescence small nuclei", "recall (IoU > 0.7)"] == 1.0  # empty, empty
    assert table.loc["all", "images"] == 3 and np.isnan(table.loc["all", scoring.WINNER_COLUMN])
    assert "context" in scoring.WINNER_COLUMN and "stage 2" in scoring.UNET_COLUMN
    with pytest.raises(ValueError, match="no image type"):
        scoring.type_table(results, {"a": "purple tissue"})
    with pytest.raises(ValueError, match="IoU 0.72 is not one of the thresholds"):
        scoring.counts_at(results["a"], 0.72)


def test_every_type_has_its_published_anchor():
    assert set(scoring.CAICEDO_RECALL_07) == set(TYPES)
    assert {t: scoring.CAICEDO_RECALL_07[t]["group"] for t in TYPES} == \
        {t: TYPES[t].caicedo for t in TYPES}


# --------------------------------------------------------------------------- real stage 1
STAGE1_TEST_COUNTS = {"fluorescence small nuclei": 42, "fluorescence large nuclei": 11,
                      "purple tissue": 8, "pink-and-purple H&E": 4}
STAGE1_TRAIN_COUNTS = {"fluorescence small nuclei": 415, "fluorescence large nuclei": 131,
                       "grey tissue (brightfield)": 16, "purple tissue": 104,
                       "pink-and-purple H&E": 4}


@pytest.fixture(scope="module")
def stage1_test_types(real_test_split):
    return image_types.split_types(real_test_split)


@pytest.fixture(scope="module")
def stage1_train_types(real_train):
    return image_types.split_types(real_train)


def test_stage1_test_types_and_their_counts(stage1_test_types):
    assert stage1_test_types["type"].value_counts().to_dict() == STAGE1_TEST_COUNTS
    stained = stage1_test_types[stage1_test_types["modality"] == "stained"]
    assert len(stained) == 12 and set(stained["type"]) == {"purple tissue",
                                                           "pink-and-purple H&E"}
    # the 524x348 sections are purple on pale yellow; half of the 512x680 ones are pink
    sizes = stained.groupby(["height", "width"])["type"].value_counts().to_dict()
    assert sizes == {(524, 348, "purple tissue"): 4, (512, 680, "purple tissue"): 4,
                     (512, 680, "pink-and-purple H&E"): 4}


@pytest.mark.heavy
def test_stage1_train_types_and_their_counts(stage1_train_types):
    assert stage1_train_types["type"].value_counts().to_dict() == STAGE1_TRAIN_COUNTS
    grey = stage1_train_types[stage1_train_types["type"] == "grey tissue (brightfield)"]
    assert set(zip(grey["height"], grey["width"])) == {(1024, 1024)}
    large = stage1_train_types[stage1_train_types["type"] == "fluorescence large nuclei"]
    # the 89 images of 360x360 px: as many as Caicedo et al.'s Superbig group in stage1_train
    assert int(((large["height"] == 360) & (large["width"] == 360)).sum()) == 89


@pytest.mark.heavy
def test_the_table_of_groups_over_both_splits(stage1_train_types, stage1_test_types):
    both = pd.concat([stage1_train_types, stage1_test_types], ignore_index=True)
    table = image_types.type_table(both)
    table = table.set_index("type")
    assert table["stage1_train"].to_dict() == {**STAGE1_TRAIN_COUNTS, "all": 670}
    assert table["stage1_test"].to_dict() == {**{t: STAGE1_TEST_COUNTS.get(t, 0)
                                                 for t in STAGE1_TRAIN_COUNTS}, "all": 65}


@pytest.mark.heavy
def test_the_split_by_type_of_stage1_train(stage1_train_types):
    types = dict(zip(stage1_train_types["id"], stage1_train_types["type"]))
    _, val = training.split_ids(list(types), 0.1, 42, types=types)
    assert pd.Series([types[i] for i in val]).value_counts().to_dict() == {
        "fluorescence small nuclei": 42, "fluorescence large nuclei": 13,
        "purple tissue": 12, "grey tissue (brightfield)": 8, "pink-and-purple H&E": 2}


def test_the_types_of_the_removed_images_are_those_of_their_images(real_train):
    assert set(image_types.FIXED_REMOVED_TYPES) == set(data.FIXED_REMOVED["stage1_train"])
    for sid, expected in image_types.FIXED_REMOVED_TYPES.items():
        s = real_train.sample(sid)
        assert image_types.image_type(s.image, s.labels) == expected, sid


def test_a_perfect_prediction_scores_one_in_every_type(real_test_split, stage1_test_types):
    ids = real_test_split.ids[::4]
    results = scoring.image_results({i: real_test_split.labels(i) for i in ids},
                                    real_test_split)
    table = scoring.type_table(results, stage1_test_types.set_index("id")["type"])
    assert table["images"].iloc[-1] == len(ids)
    assert (table[["DSB", "recall (IoU > 0.7)", "F1 (IoU > 0.7)"]] == 1.0).all().all()


@pytest.mark.heavy
def test_the_fixed_masks_change_no_image_type(real_train):
    """The split by type draws the same validation images on either labels: no image of the
    109 whose masks the fixed labels change has another type with them."""
    try:
        fixed = data.open_split("stage1_train", labels="fixed")
    except data.DataError:
        pytest.skip("stage1_train_fixed.zip not found")
    original = real_train
    if original._zip is None or fixed._zip is None:
        pytest.skip("the changed images are found by the zips' CRCs")
    changed = [i for i in fixed.ids
               if sorted(original._zip.getinfo(m).CRC for m in original._members[i])
               != sorted(fixed._zip.getinfo(m).CRC for m in fixed._members[i])]
    assert len(changed) == 109
    for sid in changed:
        img = original.image(sid)
        assert image_types.image_type(img, original.labels(sid)) == \
            image_types.image_type(img, fixed.labels(sid)), sid
