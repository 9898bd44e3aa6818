"""The napari plugin: its manifest, the evaluation table against `nucseg score`, the reader
on what `nucseg predict` wrote and the sample data, here; the widgets in a real viewer in
`napari_gui.py`, run by the last test in a process of its own (a napari viewer and
TensorFlow cannot share a process: see nucseg_utils/napari_plugin/core.py), headless on a
virtual X server that pytest-xvfb starts, against the labels this process computes with
NucleusModel.predict_instances."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")  # requirements.txt installs it; the core install does not

from nucseg_utils.napari_plugin import core  # noqa: E402

HERE = Path(__file__).parent


def empty_window(labels, size):
    """The first (y, x) of a window of ``size`` with no object (a grid search)."""
    h, w = size
    for y in range(0, labels.shape[0] - h, 5):
        for x in range(0, labels.shape[1] - w, 5):
            if not labels[y:y + h, x:x + w].any():
                return y, x
    raise AssertionError("no empty window")


def field():
    """A synthetic fluorescence field (the plugin's sample) and its true nuclei."""
    (image, _, _), (labels, _, _) = core.sample_images("fluorescence")
    return image[:160, :192], labels[:160, :192]


def test_the_manifest_is_valid_and_found_by_napari():
    import npe2
    from npe2.cli import app
    from typer.testing import CliRunner
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("nucseg")
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Segment nuclei", "Score a segmentation"}
    assert manifest.contributions.readers and manifest.contributions.sample_data
    res = CliRunner().invoke(app, ["validate", "nucseg"])
    assert res.exit_code == 0, res.output


def test_the_evaluation_table_is_nucseg_score(tmp_path):
    from nucseg_utils.data import outputs, rle
    from nucseg_utils.evaluation import metrics
    _, truth = field()
    pred = truth.copy()
    gone = int(np.unique(truth[truth > 0])[2])
    pred[pred == gone] = 0                    # one nucleus missed
    y, x = empty_window(truth, (10, 15))
    pred[y:y + 10, x:x + 15] = pred.max() + 1  # one extra, where there is no nucleus
    table, summary = core.evaluation_table(truth, pred)
    h, w = truth.shape
    (tmp_path / "solution.csv").write_text("ImageId,EncodedPixels,Height,Width,Usage\n" + "".join(
        f"img,{r},{h},{w},Public\n" for r in rle.encode_labels(truth).values()))
    outputs.write_submission({"img": pred}, tmp_path / "submission.csv")
    scored, _ = metrics.score_csv(tmp_path / "solution.csv", tmp_path / "submission.csv")
    assert summary["dsb"] == pytest.approx(scored["dsb"])
    assert table["score"].mean() == pytest.approx(scored["dsb"])
    assert list(table["IoU threshold"]) == [round(t, 2) for t in metrics.THRESHOLDS]
    extra, missed = core.error_layers(truth, pred)
    assert set(np.unique(extra)) == {0, pred.max()} and (extra > 0).sum() == 150
    assert set(np.unique(missed)) == {0, gone} and np.array_equal(missed > 0, truth == gone)


def test_the_reader_opens_what_nucseg_predict_wrote(tmp_path):
    import imageio.v3 as iio
    from test_microscope import channels, stand_in

    from nucseg_utils import data, predict
    from nucseg_utils.exports import files as export
    folder = tmp_path / "images"
    folder.mkdir()
    for k, n in enumerate((3, 5)):
        iio.imwrite(folder / f"img{k}.png", (channels((n,))[0] // 257).astype(np.uint8))
    out = tmp_path / "out"
    predict.predict_folder(stand_in(), data.open_images(folder), out,
                           predict.PredictOptions(formats=("tiff", "ome-zarr"), pixel_size=0.5),
                           progress=False)
    assert core.reader_for(str(out)) is core.read
    assert core.reader_for(str(folder / "img0.png")) is None
    layers = core.read(str(out))
    assert [m["name"] for _, m, kind in layers] == ["img0 nuclei", "img1 nuclei"]
    assert [int(np.asarray(d).max()) for d, _, _ in layers] == [3, 5]
    assert all(m["scale"] == (0.5, 0.5) and kind == "labels" for _, m, kind in layers)
    store = export.output_paths(out, "img1")["ome-zarr"]
    assert core.reader_for(str(store)) is core.read
    image, labels = core.read(str(store))
    assert image[2] == "image" and labels[2] == "labels" and labels[1]["scale"] == (0.5, 0.5)
    assert np.array_equal(np.asarray(labels[0]), np.asarray(layers[1][0]))
    assert np.array_equal(np.asarray(image[0]), iio.imread(folder / "img1.png"))


def test_sample_data_are_nuclei_with_their_truth():
    for kind in core.SAMPLES:
        (image, meta, k1), (labels, _, k2) = core.sample_images(kind)
        assert (k1, k2) == ("image", "labels") and meta["rgb"] and image.shape[-1] == 3
        assert labels.max() >= 5 and labels.shape == image.shape[:2]


@pytest.mark.heavy
def test_the_widgets_in_a_headless_viewer(tmp_path):
    """napari_gui.py in its own process, on a virtual X server, against the labels
    predict_instances gives here (with TensorFlow) for the same images and settings."""
    model = core.load_model("release")
    image, truth = field()
    small, _ = model.with_settings(threshold=0.4, min_size=30).predict_instances(image,
                                                                                 tta=False)
    mosaic = np.tile(image, (2, 2, 1))
    tiled = core.segment(model, mosaic, tta=False, tile_above=200 * 200)
    np.savez(tmp_path / "reference.npz", image=image, truth=truth, labels=small,
             mosaic=mosaic, mosaic_labels=np.asarray(tiled.labels))
    env = {**os.environ, "NUCSEG_NAPARI_REFERENCE": str(tmp_path / "reference.npz")}
    env.pop("NUCSEG_TEST_TF_EAGER", None)  # that process must not import TensorFlow
    if os.environ.get("NUCSEG_REQUIRE_DISPLAY"):
        env["NUCSEG_REQUIRE_DISPLAY"] = "1"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(HERE / "napari_gui.py"), "--basetemp", str(tmp_path / "gui")],
                          cwd=HERE.parent, env=env, capture_output=True, text=True,
                          timeout=1200)
    report = done.stdout[-4000:] + done.stderr[-2000:]
    if "no X display" in done.stdout and not os.environ.get("NUCSEG_REQUIRE_DISPLAY"):
        pytest.skip("no X display: install Debian's xvfb (see .ci/run) to run the napari "
                    "viewer tests")
    assert done.returncode == 0, report
    assert " passed" in done.stdout and "skipped" not in done.stdout, report
