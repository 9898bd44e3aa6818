"""The napari widgets in a real viewer (pytest-qt, headless on the X server pytest-xvfb
starts). Run by tests/test_napari.py in a process of its own, which never imports
TensorFlow (the widget's network runs in its worker process), against the reference labels
that test computed with NucleusModel.predict_instances (``$NUCSEG_NAPARI_REFERENCE``)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest
from test_napari import empty_window

from nucseg_utils.napari_plugin import core
from nucseg_utils.napari_plugin.widgets import EvaluateWidget, SegmentWidget


# checked when the module is read: the viewer fixtures make a QApplication (session-scoped,
# so before any function's fixture), and Qt aborts the process when it has no display
if not os.environ.get("DISPLAY"):
    _message = "no X display: install Debian's xvfb (see .ci/run)"
    if os.environ.get("NUCSEG_REQUIRE_DISPLAY"):
        pytest.fail(_message, pytrace=False)
    pytest.skip(_message, allow_module_level=True)


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.environ["NUCSEG_NAPARI_REFERENCE"]))


def _finish(qtbot, widget, timeout=600_000):
    with qtbot.waitSignal(widget.worker.finished, timeout=timeout):
        pass


def test_the_widget_segments_as_predict_instances_and_saves(make_napari_viewer, qtbot,
                                                          tmp_path, reference):
    import tifffile
    image, want = reference["image"], reference["labels"]
    viewer = make_napari_viewer()
    viewer.add_image(image, name="field", rgb=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget.native)
    assert widget.image.value == "field" and widget.method.value == "touching"
    widget.tta.value = False
    widget.threshold.value = 0.4
    widget.min_size.value = 30
    widget.start()
    assert widget.info.value == "segmenting..." and not widget.run.enabled  # not blocked
    _finish(qtbot, widget)
    labels = viewer.layers["field nuclei"].data
    assert want.max() > 5 and np.array_equal(labels, want)
    assert viewer.layers["nucleus probability"].data.shape == image.shape[:2]
    assert f"{want.max()} nuclei; quality" in widget.info.value
    saved = tmp_path / "saved"
    widget.save_to.value = str(saved)
    widget.write()
    assert np.array_equal(tifffile.imread(saved / "labels" / "field.tif"), want)
    assert (saved / "rois" / "field.zip").is_file()
    assert len(pd.read_csv(saved / "measurements" / "field.csv")) == want.max()
    assert "tensorflow" not in sys.modules  # the network ran in the worker process


def test_a_big_image_is_tiled_without_blocking_the_viewer(make_napari_viewer, qtbot,
                                                         monkeypatch, reference):
    mosaic = reference["mosaic"]
    monkeypatch.setattr(core.predict, "TILE_ABOVE", 200 * 200)
    viewer = make_napari_viewer()
    viewer.add_image(mosaic, name="mosaic", rgb=True)
    widget = SegmentWidget(viewer)
    widget.tta.value = False
    widget.start()
    assert widget.info.value.startswith("segmenting 320x384 px tile by tile")
    _finish(qtbot, widget)
    labels = np.asarray(viewer.layers["mosaic nuclei"].data)
    assert np.array_equal(labels, reference["mosaic_labels"]) and labels.max() > 20
    assert "tile by tile" in widget.info.value
    assert "nucleus probability" not in viewer.layers  # a tiled image keeps none


def test_the_evaluation_view_scores_and_colours_the_errors(make_napari_viewer, reference):
    truth = reference["truth"]
    pred = truth.copy()
    gone = int(np.unique(truth[truth > 0])[2])
    pred[pred == gone] = 0
    y, x = empty_window(truth, (10, 15))
    pred[y:y + 10, x:x + 15] = pred.max() + 1
    viewer = make_napari_viewer()
    viewer.add_labels(truth, name="truth")
    viewer.add_labels(pred, name="mine")
    widget = EvaluateWidget(viewer)
    widget.truth.value, widget.predicted.value = "truth", "mine"
    table, summary = widget.score()
    want, _ = core.evaluation_table(truth, pred)
    assert np.allclose(table["score"], want["score"])
    assert widget.summary.value.startswith(f"DSB {summary['dsb']:.4f}")
    assert widget.table.shape == (10, 8)
    extra, missed = viewer.layers["extra nuclei"], viewer.layers["missed nuclei"]
    assert extra.data.sum() == 150 and np.array_equal(missed.data > 0, truth == gone)
    assert np.allclose(extra.colormap.map(np.array([1]))[0], core.ERROR_COLOURS["extra"])
    assert np.allclose(missed.colormap.map(np.array([1]))[0], core.ERROR_COLOURS["missed"])


def test_the_reader_and_the_samples_open_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("nucseg", "fluorescence")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
