"""The DSB metric: hand-derived cases, a plain-loop reference on random images, Kaggle CSVs."""
from __future__ import annotations

import numpy as np
import pytest

from nucseg_utils.data import rle
from nucseg_utils.evaluation import metrics
from nucseg_utils.evaluation.metrics import ScoreError

# Kaggle's thresholds, written out by hand (not computed like the module does).
KAGGLE_THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


# --------------------------------------------------------------------------- loop reference
def reference_scores(true, pred, thresholds=KAGGLE_THRESHOLDS):
    """The DSB metric written as plainly as possible: for each threshold, for each true object,
    for each predicted object, IoU from boolean masks; match when IoU > threshold."""
    true_ids = [v for v in np.unique(true) if v != 0]
    pred_ids = [v for v in np.unique(pred) if v != 0]
    rows = []
    for t in thresholds:
        matched_true, matched_pred = set(), set()
        for a in true_ids:
            for b in pred_ids:
                in_a, in_b = true == a, pred == b
                inter = np.logical_and(in_a, in_b).sum()
                union = np.logical_or(in_a, in_b).sum()
                if inter / union > t:
                    matched_true.add(a)
                    matched_pred.add(b)
        tp = len(matched_true)
        fp = len(pred_ids) - len(matched_pred)
        fn = len(true_ids) - len(matched_true)
        score = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
        rows.append((t, tp, fp, fn, score))
    return rows


def reference_dsb(true, pred):
    rows = reference_scores(true, pred)
    return sum(r[4] for r in rows) / len(rows)


def reference_iou(true, pred):
    true_ids = [v for v in np.unique(true) if v != 0]
    pred_ids = [v for v in np.unique(pred) if v != 0]
    out = np.zeros((len(true_ids), len(pred_ids)))
    for i, a in enumerate(true_ids):
        for j, b in enumerate(pred_ids):
            inter = np.logical_and(true == a, pred == b).sum()
            out[i, j] = inter / np.logical_or(true == a, pred == b).sum()
    return out


# --------------------------------------------------------------------------- hand cases
def square_image(shape=(16, 16)):
    lab = np.zeros(shape, np.int32)
    lab[2:12, 2:12] = 1  # one 10 x 10 nucleus, 100 pixels
    return lab


def test_thresholds_are_kaggles_ten():
    assert metrics.THRESHOLDS.tolist() == KAGGLE_THRESHOLDS


def test_perfect_prediction_scores_one():
    true = np.zeros((20, 20), np.int32)
    true[1:5, 1:5], true[8:12, 3:9], true[14:19, 10:18] = 1, 2, 3
    pred = true * 7  # same objects, other label values
    r = metrics.image_scores(true, pred)
    assert r["dsb"] == 1.0
    assert r["tp"].tolist() == [3] * 10
    assert r["fp"].tolist() == [0] * 10 and r["fn"].tolist() == [0] * 10
    assert (r["precision"], r["recall"], r["f1"]) == (1.0, 1.0, 1.0)
    assert r["pixel_accuracy"] == 1.0 and r["pixel_iou"] == 1.0


def test_all_missed_scores_zero():
    true = square_image()
    r = metrics.image_scores(true, np.zeros_like(true))
    assert r["dsb"] == 0.0
    assert r["tp"].tolist() == [0] * 10 and r["fn"].tolist() == [1] * 10
    assert r["fp"].tolist() == [0] * 10
    assert (r["precision"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0)
    elsewhere = np.zeros_like(true)
    elsewhere[13:16, 13:16] = 4  # a prediction that touches no nucleus
    r = metrics.image_scores(true, elsewhere)
    assert r["dsb"] == 0.0 and r["fp"].tolist() == [1] * 10 and r["fn"].tolist() == [1] * 10


def test_predictions_on_empty_truth_score_zero():
    pred = square_image()
    r = metrics.image_scores(np.zeros_like(pred), pred)
    assert r["dsb"] == 0.0
    assert r["fp"].tolist() == [1] * 10 and r["tp"].tolist() == [0] * 10
    assert r["n_true"] == 0 and r["n_pred"] == 1


def test_both_empty_score_one():
    empty = np.zeros((8, 9), np.uint16)
    r = metrics.image_scores(empty, empty)
    assert r["dsb"] == 1.0
    assert r["score"].tolist() == [1.0] * 10
    assert (r["precision"], r["recall"], r["f1"]) == (1.0, 1.0, 1.0)
    assert r["pixel_iou"] == 1.0 and r["pixel_accuracy"] == 1.0


def test_evenly_split_nucleus_matches_at_no_threshold():
    true = square_image()
    pred = np.zeros_like(true)
    pred[2:7, 2:12], pred[7:12, 2:12] = 1, 2  # two halves of 50 px: IoU 0.5, not > 0.5
    r = metrics.image_scores(true, pred)
    assert r["tp"].tolist() == [0] * 10
    assert r["fp"].tolist() == [2] * 10
    assert r["fn"].tolist() == [1] * 10
    assert r["dsb"] == 0.0
    assert (r["tp50"], r["fp50"], r["fn50"]) == (0, 2, 1)  # IoU 0.5 is not > 0.5
    assert r["precision"] == 0.0 and r["recall"] == 0.0


def test_split_nucleus_scores_below_one():
    true = square_image()
    pred = np.zeros_like(true)
    pred[2:9, 2:12], pred[9:12, 2:12] = 3, 8  # 70 px (IoU 0.7) and 30 px (IoU 0.3)
    r = metrics.image_scores(true, pred)
    # 0.7 > t for t = 0.5 .. 0.65 only: one TP, the small part an FP; above, nothing matches.
    assert r["tp"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert r["fp"].tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert r["fn"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert r["dsb"] == pytest.approx(4 * 0.5 / 10, abs=1e-15)
    assert r["dsb"] < 1


def test_merged_pair_scores_below_one():
    true = np.zeros((18, 18), np.int32)
    true[2:9, 2:12] = 1    # 70 px
    true[9:12, 2:12] = 2   # 30 px, touching the first
    true[13:16, 13:16] = 3  # 9 px, predicted perfectly
    pred = np.zeros_like(true)
    pred[2:12, 2:12] = 5   # both touching nuclei as one: IoU 0.7 with object 1, 0.3 with 2
    pred[13:16, 13:16] = 9
    r = metrics.image_scores(true, pred)
    assert r["tp"].tolist() == [2] * 4 + [1] * 6
    assert r["fp"].tolist() == [0] * 4 + [1] * 6
    assert r["fn"].tolist() == [1] * 4 + [2] * 6
    # 2/3 at four thresholds, 1/4 at the other six
    assert r["dsb"] == pytest.approx((4 * 2 / 3 + 6 * 1 / 4) / 10, abs=1e-15)


def test_iou_exactly_at_threshold_does_not_match():
    true = np.zeros((6, 8), np.int32)
    true[1:3, 1:6] = 1  # 10 px
    pred = np.zeros_like(true)
    pred[1:3, 1:4] = 4  # 6 px inside it: IoU = 6 / 10 = 0.6 exactly
    assert metrics.iou_matrix(true, pred).tolist() == [[0.6]]
    table = metrics.threshold_table(true, pred).set_index("threshold")
    assert table.loc[0.55, ["TP", "FP", "FN"]].tolist() == [1, 0, 0]
    assert table.loc[0.55, "score"] == 1.0
    assert table.loc[0.6, ["TP", "FP", "FN"]].tolist() == [0, 1, 1]  # StarDist (>=) would match
    assert table.loc[0.6, "score"] == 0.0
    assert metrics.image_scores(true, pred)["dsb"] == pytest.approx(0.2, abs=1e-15)


def test_threshold_table_has_one_row_per_threshold():
    true = square_image()
    pred = np.zeros_like(true)
    pred[2:9, 2:12] = 1
    table = metrics.threshold_table(true, pred)
    assert list(table.columns) == ["threshold", "TP", "FP", "FN", "score"]
    assert table["threshold"].tolist() == KAGGLE_THRESHOLDS
    expected = [(t, tp, fp, fn, s) for t, tp, fp, fn, s in reference_scores(true, pred)]
    got = [tuple(r) for r in table.itertuples(index=False)]
    assert got == expected


def test_object_precision_recall_f1_at_half():
    true = np.zeros((20, 20), np.int32)
    true[0:4, 0:4], true[6:10, 6:10], true[12:16, 12:16] = 1, 2, 3
    pred = np.zeros_like(true)
    pred[0:4, 0:4], pred[6:10, 6:10] = 1, 2   # two hits
    pred[17:19, 0:2], pred[0:2, 17:19] = 3, 4  # two spurious
    r = metrics.image_scores(true, pred)
    assert (r["tp50"], r["fp50"], r["fn50"]) == (2, 2, 1)
    assert r["precision"] == pytest.approx(2 / 4)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(4 / 7)


def test_pixel_accuracy_and_pixel_iou():
    true = np.zeros((4, 4), np.int32)
    true[0:2, 0:2] = 1  # 4 foreground px
    pred = np.zeros_like(true)
    pred[0:2, 0:2] = 2
    pred[3, 2:4] = 3  # 2 extra foreground px
    r = metrics.image_scores(true, pred)
    assert r["pixel_accuracy"] == pytest.approx(14 / 16)
    assert r["pixel_iou"] == pytest.approx(4 / 6)


def test_non_consecutive_labels_score_like_consecutive():
    true = np.zeros((16, 16), np.int64)
    true[1:5, 1:5], true[6:12, 6:9], true[13:15, 2:14] = 1, 5, 9
    pred = np.zeros_like(true)
    pred[1:5, 2:5], pred[6:11, 6:9], pred[13:15, 2:6] = 40, 2, 10 ** 12
    consecutive_true = np.searchsorted([0, 1, 5, 9], true)
    consecutive_pred = np.searchsorted([0, 2, 40, 10 ** 12], pred)
    a = metrics.image_scores(true, pred)
    b = metrics.image_scores(consecutive_true, consecutive_pred)
    assert a["dsb"] == b["dsb"] == pytest.approx(reference_dsb(true, pred), abs=1e-12)
    assert a["tp"].tolist() == b["tp"].tolist()
    assert metrics.iou_matrix(true, pred).tolist() == reference_iou(true, pred).tolist()


@pytest.mark.parametrize("offset", [1, 10 ** 12])
def test_images_without_background_score_like_reference(offset):
    true = np.zeros((6, 6), np.int64)
    true[:, :3], true[:, 3:] = offset, offset + 5  # every pixel belongs to an object
    pred = np.zeros_like(true)
    pred[:, :4], pred[:, 4:] = offset + 1, offset + 2
    r = metrics.image_scores(true, pred)
    assert r["n_true"] == 2 and r["n_pred"] == 2
    assert r["tp"].tolist() == [row[1] for row in reference_scores(true, pred)]
    assert metrics.iou_matrix(true, pred).tolist() == reference_iou(true, pred).tolist()


@pytest.mark.parametrize("seed", range(40))
def test_image_scores_equal_loop_reference(seed, make_labels, perturb):
    rng = np.random.default_rng(seed)
    values = None
    if seed % 2:  # non-consecutive label values; sometimes huge ones
        top = 10 ** 13 if seed % 4 == 1 else 1000
        values = rng.choice(np.arange(1, top, max(1, top // 10 ** 6)), size=8, replace=False)
    true = make_labels(rng, (24, 20), 8, values)
    pred = perturb(rng, true) if seed % 3 else make_labels(rng, (24, 20), 8)
    r = metrics.image_scores(true, pred)
    ref = reference_scores(true, pred)
    assert r["tp"].tolist() == [row[1] for row in ref]
    assert r["fp"].tolist() == [row[2] for row in ref]
    assert r["fn"].tolist() == [row[3] for row in ref]
    assert abs(r["dsb"] - reference_dsb(true, pred)) <= 1e-12
    np.testing.assert_allclose(metrics.iou_matrix(true, pred), reference_iou(true, pred),
                               rtol=0, atol=1e-15)
    assert r["n_true"] == len(np.unique(true[true > 0]))
    assert r["n_pred"] == len(np.unique(pred[pred > 0]))


@pytest.mark.parametrize("case", ["true empty", "pred empty", "both empty"])
def test_empty_images_equal_loop_reference(case, make_labels):
    rng = np.random.default_rng(7)
    full = make_labels(rng, (12, 10), 6)
    full[0:3, 0:3] = 99  # at least one object
    empty = np.zeros_like(full)
    true, pred = {"true empty": (empty, full), "pred empty": (full, empty),
                  "both empty": (empty, empty)}[case]
    assert metrics.image_scores(true, pred)["dsb"] == reference_dsb(true, pred)


def test_label_dtypes_give_same_scores(make_labels, perturb):
    rng = np.random.default_rng(3)
    true = make_labels(rng, (20, 20), 8)
    pred = perturb(rng, true)
    base = metrics.image_scores(true, pred)["dsb"]
    for dtype in (np.uint8, np.uint16, np.int32, np.uint64, np.float64):
        assert metrics.image_scores(true.astype(dtype), pred.astype(dtype))["dsb"] == base
    mask = true > 0  # a boolean image is one object
    assert metrics.image_scores(mask, mask)["n_true"] == (1 if mask.any() else 0)


def test_bad_inputs_are_refused():
    a = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="shape"):
        metrics.image_scores(a, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="negative"):
        metrics.image_scores(a - 1, a)
    with pytest.raises(ValueError, match="0.5"):
        metrics.image_scores(a, a, thresholds=[0.3, 0.5])
    with pytest.raises(ValueError, match="non-integer"):
        metrics.image_scores(a + 0.5, a)


def test_a_large_image_with_hundreds_of_nuclei_scores_as_a_dense_iou_matrix_says():
    """The metric pairs only overlapping objects; on a 1000 x 1400 image of 400 nuclei it
    gives what the full IoU matrix of every true against every predicted nucleus gives. (Its
    speed is measured by benchmarks/bench_metric_speed.py, not asserted here.)"""
    rng = np.random.default_rng(0)
    h, w = 1000, 1400
    true = np.zeros((h, w), np.uint16)
    for k in range(1, 401):  # 400 nuclei of 10..30 px side
        y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
        true[y:y + rng.integers(10, 30), x:x + rng.integers(10, 30)] = k
    pred = np.roll(true, 2, axis=1)
    r = metrics.image_scores(true, pred)
    t_ids, t_area = np.unique(true[true > 0], return_counts=True)
    p_ids, p_area = np.unique(pred[pred > 0], return_counts=True)
    both = (true > 0) & (pred > 0)
    pairs, inter = np.unique(np.stack([true[both], pred[both]]), axis=1, return_counts=True)
    ti, pi = np.searchsorted(t_ids, pairs[0]), np.searchsorted(p_ids, pairs[1])
    iou = np.zeros((t_ids.size, p_ids.size))
    iou[ti, pi] = inter / (t_area[ti] + p_area[pi] - inter)
    terms = []
    for th in np.arange(0.5, 1.0, 0.05):
        tp = int((iou > th).sum())
        terms.append(tp / (tp + (p_ids.size - tp) + (t_ids.size - tp)))
    assert r["n_true"] == t_ids.size > 300 and r["n_pred"] == p_ids.size
    assert r["dsb"] == pytest.approx(float(np.mean(terms)), abs=1e-12)


# --------------------------------------------------------------------------- data sets
def test_dataset_scores_average_images_and_sum_counts():
    perfect = np.zeros((10, 10), np.int32)
    perfect[0:3, 0:3], perfect[4:6, 4:6], perfect[7:10, 7:10] = 1, 2, 3
    missed = np.zeros((10, 10), np.int32)
    missed[0:2, 0:2], missed[5:8, 5:8] = 1, 2
    pairs = [(perfect, perfect), (missed, np.zeros_like(missed))]
    s = metrics.dataset_scores(pairs)
    assert s["images"] == 2
    assert s["dsb"] == pytest.approx(0.5)                      # mean of 1.0 and 0.0
    assert (s["tp50"], s["fp50"], s["fn50"]) == (3, 0, 2)
    assert s["precision"] == pytest.approx(1.0)
    assert s["recall"] == pytest.approx(3 / 5)                  # micro, not (1 + 0) / 2
    assert s["f1"] == pytest.approx(6 / 8)
    # the per-image dicts give the same summary as the pairs
    same = metrics.dataset_scores([metrics.image_scores(t, p) for t, p in pairs])
    assert same == s


def test_dataset_scores_of_nothing_is_nan():
    s = metrics.dataset_scores([])
    assert s["images"] == 0 and np.isnan(s["dsb"])


def test_per_image_table_rows_follow_ids():
    a = square_image()
    b = np.zeros_like(a)
    results = [metrics.image_scores(a, a), metrics.image_scores(a, b)]
    table = metrics.per_image_table(["x", "y"], results)
    assert list(table.columns)[:11] == ["id", "dsb", "n_true", "n_pred", "tp", "fp", "fn",
                                        "precision", "recall", "f1", "pixel_accuracy"]
    assert table["id"].tolist() == ["x", "y"]
    assert table["dsb"].tolist() == [1.0, 0.0]
    assert table[["tp", "fp", "fn"]].values.tolist() == [[1, 0, 0], [0, 0, 1]]
    with pytest.raises(ValueError):
        metrics.per_image_table(["x"], results)


# --------------------------------------------------------------------------- Kaggle CSVs
def write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(str(v) for v in row) + "\n")
    return path


def rows_of(image_id, labels, extra=()):
    """Solution/submission rows of one label image (an empty row if it has no object)."""
    runs = list(rle.encode_labels(labels).values())
    return [(image_id, r, *extra) for r in runs] or [(image_id, "", *extra)]


@pytest.fixture
def small_solution(tmp_path, make_labels):
    """A solution CSV of six small random images (one without nuclei); returns
    (path, {id: labels})."""
    rng = np.random.default_rng(11)
    truths = {}
    rows = []
    for i in range(6):
        shape = (20 + i, 30 - i)
        lab = make_labels(rng, shape, 9) if i != 2 else np.zeros(shape, np.int64)
        sid = f"img{i}"
        truths[sid] = lab
        rows += rows_of(sid, lab, (shape[0], shape[1], "Public"))
    path = write_csv(tmp_path / "solution.csv",
                     ["ImageId", "EncodedPixels", "Height", "Width", "Usage"], rows)
    return path, truths


def test_perturbed_submission_scores_like_loop_reference(small_solution, tmp_path, perturb):
    sol, truths = small_solution
    rng = np.random.default_rng(5)
    preds = {sid: perturb(rng, lab) for sid, lab in truths.items()}
    rows = [r for sid, lab in preds.items() for r in rows_of(sid, lab)]
    rng.shuffle(rows)  # row order must not matter
    sub = write_csv(tmp_path / "sub.csv", ["ImageId", "EncodedPixels"], rows)
    summary, table = metrics.score_csv(sol, sub)
    expected = np.mean([reference_dsb(truths[s], preds[s]) for s in sorted(truths)])
    assert abs(summary["dsb"] - expected) <= 1e-12
    assert summary["images"] == 6 and summary["missing_images"] == 0
    assert summary["submission"] == str(sub) and summary["solution"] == str(sol)
    assert table["id"].tolist() == sorted(truths)
    for sid, dsb in zip(table["id"], table["dsb"]):
        assert abs(dsb - reference_dsb(truths[sid], preds[sid])) <= 1e-12


def test_solution_scored_against_itself_is_one(small_solution):
    sol, truths = small_solution
    summary, _ = metrics.score_csv(sol, sol)
    assert summary["dsb"] == 1.0 and summary["images"] == len(truths)


def test_missing_image_is_counted_and_scored_empty(small_solution, tmp_path):
    sol, truths = small_solution
    dropped = "img4"
    assert truths[dropped].any()
    rows = [r for sid, lab in truths.items() if sid != dropped for r in rows_of(sid, lab)]
    sub = write_csv(tmp_path / "sub.csv", ["ImageId", "EncodedPixels"], rows)
    summary, table = metrics.score_csv(sol, sub)
    assert summary["missing_images"] == 1
    row = table.set_index("id").loc[dropped]
    assert not row["in_submission"] and row["dsb"] == 0.0 and row["n_pred"] == 0
    assert summary["dsb"] == pytest.approx(5 / 6)


def test_empty_encoded_pixels_means_no_nucleus(small_solution, tmp_path):
    sol, truths = small_solution
    assert not truths["img2"].any()
    rows = [r for sid, lab in truths.items() for r in rows_of(sid, lab)]
    assert ("img2", "") in rows
    sub = write_csv(tmp_path / "sub.csv", ["ImageId", "EncodedPixels"], rows)
    summary, table = metrics.score_csv(sol, sub)
    assert summary["dsb"] == 1.0 and summary["missing_images"] == 0
    # a spurious nucleus on the empty image makes that image score 0
    rows.append(("img2", "1 3"))
    write_csv(sub, ["ImageId", "EncodedPixels"], rows)
    summary, table = metrics.score_csv(sol, sub)
    assert table.set_index("id").loc["img2", "dsb"] == 0.0


def test_ignored_rows_are_not_scored(small_solution, tmp_path):
    sol, truths = small_solution
    text = sol.read_text() + "decoy,1 5,10,10,Ignored\ndecoy,20 5,10,10,Ignored\n"
    sol.write_text(text)
    rows = [r for sid, lab in truths.items() for r in rows_of(sid, lab)] + [("decoy", "1 1")]
    sub = write_csv(tmp_path / "sub.csv", ["ImageId", "EncodedPixels"], rows)
    summary, table = metrics.score_csv(sol, sub)
    assert summary["images"] == len(truths) and "decoy" not in table["id"].tolist()
    assert summary["dsb"] == 1.0 and summary["ignored_images"] == 1


def submission_with_bad_row(tmp_path, truths, bad):
    """A correct submission with ``bad`` appended; returns (path, line number of ``bad``)."""
    rows = [r for sid, lab in truths.items() for r in rows_of(sid, lab)]
    path = write_csv(tmp_path / "sub.csv", ["ImageId", "EncodedPixels"], rows + [bad])
    return path, len(rows) + 2  # header is line 1


def test_unknown_image_id_names_its_line(small_solution, tmp_path):
    sol, truths = small_solution
    sub, line = submission_with_bad_row(tmp_path, truths, ("not_an_image", "1 2"))
    with pytest.raises(ScoreError) as err:
        metrics.score_csv(sol, sub)
    assert f"{sub}:{line}" in str(err.value) and "not_an_image" in str(err.value)


@pytest.mark.parametrize("runs, why", [("3 4 7", "odd"), ("0 2", "< 1"),
                                       ("1 x", "non-integer"), ("5 2 1 2", "sorted")])
def test_malformed_run_names_its_line(small_solution, tmp_path, runs, why):
    sol, truths = small_solution
    sub, line = submission_with_bad_row(tmp_path, truths, ("img1", runs))
    with pytest.raises(ScoreError) as err:
        metrics.score_csv(sol, sub)
    assert f"{sub}:{line} (img1)" in str(err.value) and why in str(err.value)


def test_pixel_out_of_range_names_its_line(small_solution, tmp_path):
    sol, truths = small_solution
    n_pixels = truths["img3"].size
    sub, line = submission_with_bad_row(tmp_path, truths, ("img3", f"{n_pixels - 1} 3"))
    with pytest.raises(ScoreError) as err:
        metrics.score_csv(sol, sub)
    assert f"{sub}:{line} (img3)" in str(err.value) and "outside" in str(err.value)


def test_overlapping_masks_name_both_lines(small_solution, tmp_path):
    sol, truths = small_solution
    rows = [("img0", "1 10"), ("img0", "5 3")]
    sub = write_csv(tmp_path / "sub.csv", ["ImageId", "EncodedPixels"], rows)
    with pytest.raises(ScoreError) as err:
        metrics.score_csv(sol, sub)
    assert f"{sub}:2 (img0)" in str(err.value) and f"{sub}:3 (img0)" in str(err.value)


def test_submission_without_columns_is_refused(small_solution, tmp_path):
    sol, _ = small_solution
    sub = write_csv(tmp_path / "sub.csv", ["Id", "Pixels"], [("img0", "1 2")])
    with pytest.raises(ScoreError, match="EncodedPixels"):
        metrics.score_csv(sol, sub)


def test_stage1_solution_scored_against_itself_is_one(real_data):
    sol = real_data / "stage1_solution.csv"
    if not sol.is_file():
        pytest.skip(f"{sol} not found")
    summary, table = metrics.score_csv(sol, sol)
    assert summary["dsb"] == 1.0
    assert summary["images"] == 65 and len(table) == 65
    assert summary["missing_images"] == 0
    assert summary["n_true"] == summary["n_pred"] == 4152


def test_per_threshold_rows_sum_the_counts_and_average_to_the_dsb(make_labels, perturb):
    rng = np.random.default_rng(5)
    pairs = []
    for _ in range(5):
        t = make_labels(rng, (30, 30), n_max=6)
        pairs.append((t, perturb(rng, t)))
    s = metrics.dataset_scores(pairs)
    rows = s["per_threshold"]
    assert [r["threshold"] for r in rows] == pytest.approx(list(metrics.THRESHOLDS))
    per_image = [metrics.image_scores(t, p) for t, p in pairs]
    assert rows[0]["tp"] == s["tp50"] and rows[0]["fn"] == s["fn50"]
    assert all(r["tp"] == sum(int(x["tp"][k]) for x in per_image) for k, r in enumerate(rows))
    assert np.mean([r["dsb_term"] for r in rows]) == pytest.approx(s["dsb"], abs=1e-12)
    assert all(r["tp"] >= n["tp"] for r, n in zip(rows, rows[1:]))  # stricter, fewer matches
