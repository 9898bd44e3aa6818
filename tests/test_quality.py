"""The per-image quality score: its stability signal on label images whose answer is known,
the fitted estimate as the benchmark wrote it, and the score in predict_instances' details
and summary.csv; and progress written as plain lines where no terminal reads it."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from skimage.measure import label

from nucseg_utils.core.progress import Lines, progress
from nucseg_utils.inference import quality


def _two_objects():
    a = np.zeros((40, 60), np.int32)
    a[5:15, 5:15] = 1
    a[20:30, 10:30] = 2              # 10 x 20
    b = a.copy()
    b[20:30, 20:30] = 3              # object 2 split in two halves: best IoU exactly 0.5
    return a, b


def test_stability_of_a_segmentation_with_itself_is_one_and_of_a_split_is_known():
    a, b = _two_objects()
    assert quality.stability(a, a) == 1.0
    # a -> b: object 1 matched at every threshold, object 2 at none (IoU 0.5 is not > 0.5):
    # 1/2; b -> a: 1 of 3 objects: 1/3; the mean of both ways
    assert quality.stability(a, b) == pytest.approx((1 / 2 + 1 / 3) / 2)
    empty = np.zeros_like(a)
    assert quality.stability(empty, empty) == 1.0 and quality.stability(a, empty) == 0.0


def segment(prob):
    return label(prob[..., 0] > 0.5)


def test_a_map_that_changes_within_its_tta_spread_scores_lower():
    prob = np.zeros((40, 60, 1), np.float32)
    prob[5:15, 5:15, 0] = 0.95
    prob[20:30, 10:30, 0] = 0.95
    labels = segment(prob)
    sure = quality.signals(prob, np.zeros(prob.shape[:2]), labels, segment)
    assert sure["stability"] == 1.0 and sure["mean_prob_inside"] == pytest.approx(0.95)
    unsure = prob.copy()
    unsure[20:30, 10:30, 0] = 0.55   # object 2 barely above the threshold ...
    spread = np.zeros(prob.shape[:2], np.float32)
    spread[20:30, 10:30] = 0.1       # ... and the TTA variants disagree about it
    doubt = quality.signals(unsure, spread, segment(unsure), segment)
    # lowered by its spread object 2 is lost (stability (1/2 + 1) / 2), raised it stays (1)
    assert doubt["stability"] == pytest.approx(0.5 * (0.75 + 1.0))
    assert doubt["spread_inside"] > 0
    fitted = {"signals": ["stability"], "weights": [1.0], "intercept": 0.0, "check_below": 0.9}
    assert quality.estimate(sure, fitted) == 1.0 and quality.estimate(doubt, fitted) == 0.875


def test_unsure_pixels_and_touching_borders_inside_the_nuclei_are_counted():
    prob = np.zeros((40, 60, 2), np.float32)
    prob[5:15, 5:15, 0] = 0.95                 # 100 sure pixels
    prob[20:30, 10:30, 0] = 0.95               # 200 pixels, a quarter of them unsure
    prob[20:30, 10:15, 0] = 0.6
    prob[20:30, 10:30, 1] = 0.5                # the second nucleus touches another
    prob[30:35, 10:30, 0] = 0.15               # 100 faint pixels outside the nuclei
    labels = segment(prob)
    sig = quality.signals(prob, None, labels)
    # the zone: 300 nucleus pixels and the 100 faint ones above 0.1; 50 + 0 unsure of them
    assert sig["uncertain_share"] == pytest.approx(50 / 400)
    assert sig["touching_inside"] == pytest.approx(0.5 * 200 / 300)
    one_output = quality.signals(prob[..., :1], None, labels)
    assert one_output["touching_inside"] == 0.0
    assert one_output["uncertain_share"] == sig["uncertain_share"]
    assert quality.signals(prob, None, np.zeros_like(labels))["touching_inside"] == 0.0


def test_the_committed_estimate_is_the_benchmarks_and_flags_the_low_ones():
    fitted = quality.weights()
    assert fitted["written_by"] == "python benchmarks/quality_score.py"
    assert set(fitted["signals"]) <= set(quality.SIGNALS)
    assert len(fitted["weights"]) == len(fitted["signals"])
    table = pd.read_csv(quality.WEIGHTS_FILE.parents[2] / "benchmarks" / "quality_score.csv")
    # the score in the benchmark's table is the estimate of the committed weights
    again = [quality.estimate(r, fitted) for r in table.to_dict("records")]
    assert np.allclose(again, table["quality"], atol=1e-4)
    assert (table["check"] == (table["quality"] < fitted["check_below"])).all()


def test_predict_instances_and_summary_carry_the_quality(tmp_path):
    import imageio.v3 as iio

    from nucseg_utils import data, predict
    from test_microscope import channels, stand_in
    model = stand_in()
    img = (channels((5,))[0] // 257).astype(np.uint8)
    labels, details = model.predict_instances(img)
    q = details["quality"]
    assert 0.0 <= q["quality"] <= 1.0 and isinstance(q["check"], bool)
    assert q == quality.image_quality(details["probabilities"], details["spread"], labels,
                                      model.postprocess)
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "a.png", img)
    predict.predict_folder(model, data.open_images(folder), tmp_path / "out",
                           predict.PredictOptions(formats=("measurements",)), progress=False)
    row = pd.read_csv(tmp_path / "out" / "summary.csv").iloc[0]
    assert row["quality"] == pytest.approx(q["quality"], abs=1e-4)
    assert bool(row["check"]) == q["check"]
    assert json.loads((tmp_path / "out" / "done" / "a.json").read_text())["summary"][
        "quality"] == pytest.approx(q["quality"], abs=1e-4)


# --------------------------------------------------------------------------- progress
def test_progress_in_a_log_is_plain_lines():
    log = io.StringIO()
    bar = progress(total=3, desc="predict", unit="images", file=log)
    assert isinstance(bar, Lines)            # a StringIO is no terminal
    bar.every = 0                           # a line at every step
    for _ in range(3):
        bar.update()
    bar.set_postfix_str("tiles on the cluster")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("predict: 1/3 images (33%), 0:00 elapsed")
    assert lines[-1].startswith("predict: 3/3 images (100%)")
    assert lines[-1].endswith("tiles on the cluster")
    quiet = io.StringIO()
    list(Lines(range(5), desc="x", file=quiet, every=3600))   # long steps apart: one line
    assert quiet.getvalue().count("\n") == 1 and "5/5" in quiet.getvalue()


def test_a_tiled_image_says_what_it_does_before_planning(tmp_path, monkeypatch):
    from nucseg_utils import big
    from test_big import image_of, random_nuclei, stand_in as big_stand_in
    said = []
    real = big.run.make_plan

    def plan(*args, **kwargs):
        assert said, "the plan (overview and size passes) started before any message"
        return real(*args, **kwargs)
    monkeypatch.setattr(big.run, "make_plan", plan)
    big.predict_big(big_stand_in(), image_of(random_nuclei((120, 130), 20)), tmp_path,
                    sid="im", tile=64, overlap=56, progress=False, log=said.append)
    assert "im" in said[0] and "tile by tile" in said[0]
