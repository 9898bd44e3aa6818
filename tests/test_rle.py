"""Kaggle run-length encoding: the convention, round trips and decode errors."""
from __future__ import annotations

import numpy as np
import pytest

from nucseg_utils.data import rle
from nucseg_utils.data.rle import RLEError


def ranks(labels: np.ndarray) -> np.ndarray:
    """The label image with its objects renumbered 1..n in order of label value."""
    values = np.unique(labels[labels > 0])
    out = np.zeros(labels.shape, np.int64)
    for i, v in enumerate(values, start=1):
        out[labels == v] = i
    return out


# --------------------------------------------------------------------------- convention
def test_pixels_are_numbered_down_columns_first():
    # a 3 x 2 image: pixel numbers are 1 2 3 down the first column, 4 5 6 down the second
    #   [1 4]      mask [1 0]
    #   [2 5]           [1 1]
    #   [3 6]           [0 1]   -> pixels 1, 2, 5, 6 -> runs "1 2 5 2"
    mask = np.array([[1, 0], [1, 1], [0, 1]], np.uint8)
    assert rle.encode_mask(mask) == "1 2 5 2"
    assert rle.decode_labels(["1 2 5 2"], (3, 2)).tolist() == mask.tolist()


def test_two_objects_encode_separately_in_label_order():
    lab = np.array([[0, 7, 7],
                    [3, 7, 0]])  # H=2, W=3: column-major numbers [[1 3 5], [2 4 6]]
    assert rle.encode_labels(lab) == {3: "2 1", 7: "3 3"}  # pixels 3, 4, 5: one run
    assert rle.decode_labels(["2 1", "3 3"], (2, 3)).tolist() == [[0, 2, 2], [1, 2, 0]]


def test_empty_inputs():
    assert rle.encode_labels(np.zeros((4, 5), np.uint8)) == {}
    assert rle.encode_mask(np.zeros((4, 5), bool)) == ""
    out = rle.decode_labels([], (4, 5))
    assert out.shape == (4, 5) and not out.any()
    assert rle.decode_labels([""], (2, 2)).tolist() == [[0, 0], [0, 0]]


def test_a_run_may_wrap_into_the_next_column():
    # 3 x 2 image; run "2 3" covers pixels 2, 3 (column 0) and 4 (top of column 1)
    assert rle.decode_labels(["2 3"], (3, 2)).tolist() == [[0, 1], [1, 0], [1, 0]]
    assert rle.encode_mask(np.array([[0, 1], [1, 0], [1, 0]])) == "2 3"


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("seed", range(12))
def test_random_label_images_round_trip(seed, make_labels):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
    values = rng.choice(np.arange(1, 60000), size=10, replace=False) if seed % 2 else None
    lab = make_labels(rng, shape, 10, values)
    runs = rle.encode_labels(lab)
    assert list(runs) == sorted(runs)  # sorted by label
    decoded = rle.decode_labels(list(runs.values()), shape)
    assert decoded.shape == shape
    assert np.array_equal(decoded, ranks(lab))


def test_every_pixel_its_own_object_round_trips():
    lab = np.arange(1, 13).reshape(3, 4)
    runs = rle.encode_labels(lab)
    assert runs[1] == "1 1" and runs[2] == "4 1" and runs[5] == "2 1"  # column-major
    assert np.array_equal(rle.decode_labels(list(runs.values()), (3, 4)), lab)


def test_real_training_masks_round_trip(real_train):
    rng = np.random.default_rng(2018)
    for sid in rng.choice(real_train.ids, size=3, replace=False):
        lab = real_train.labels(sid)
        assert lab.max() > 0
        runs = rle.encode_labels(lab)
        assert np.array_equal(rle.decode_labels(list(runs.values()), lab.shape), ranks(lab))
        # and the CSV strings themselves come back unchanged
        csv_runs = real_train.solution()[sid][0]
        again = rle.encode_labels(rle.decode_labels(csv_runs, lab.shape))
        assert list(again.values()) == csv_runs


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("runs, why", [
    ("1 2 3", "odd number"),
    ("0 2", "< 1"),
    ("-3 2", "< 1"),
    ("1 0", "length 0"),
    ("5 3", "outside the image"),
    ("4 2 1 2", "not sorted"),
    ("1 3 2 2", "overlapping"),
    ("1 a", "non-integer"),
])
def test_bad_runs_raise_naming_the_object(runs, why):
    with pytest.raises(RLEError) as err:
        rle.decode_labels(["1 1", runs], (3, 2), names=["first", "second cell"])
    msg = str(err.value)
    assert "second cell" in msg and why in msg


def test_default_name_is_the_object_index():
    with pytest.raises(RLEError, match="object 1"):
        rle.decode_labels(["1 1", "9 9"], (3, 2))


def test_overlapping_objects_raise_naming_both():
    with pytest.raises(RLEError) as err:
        rle.decode_labels(["1 3", "5 1", "3 2"], (3, 2), names=["A", "B", "C"])
    msg = str(err.value)
    assert "overlap" in msg and "pixel 3" in msg
    assert "A" in msg and "C" in msg and "B" not in msg.split(":", 1)[1]


def test_parse_runs_returns_starts_and_lengths():
    starts, lengths = rle.parse_runs(" 3 4  10 2 ")
    assert starts.tolist() == [3, 10] and lengths.tolist() == [4, 2]
    for empty in ("", None, "nan", float("nan")):
        s, l = rle.parse_runs(empty)
        assert s.size == 0 and l.size == 0


def test_check_runs_accepts_a_run_ending_on_the_last_pixel():
    rle.check_runs(np.array([1, 5]), np.array([2, 2]), 6)  # pixels 1-2 and 5-6: fine
    with pytest.raises(RLEError):
        rle.check_runs(np.array([1, 5]), np.array([2, 3]), 6)
    with pytest.raises(RLEError):  # touching runs are fine, but overlapping are not
        rle.check_runs(np.array([1, 2]), np.array([2, 2]), 6)
    rle.check_runs(np.array([1, 3]), np.array([2, 2]), 6)
