"""The napari widgets: segment the image layer in view, and score a segmentation against a
ground-truth layer (the paper's "performance of a model", its Fig. 9 colours).

In: the viewer, its layers.
Out: layers added to it (``nuclei`` labels, the ``nucleus probability`` image; the extra and
missed nuclei), and text and tables in the dock. The work is :mod:`.core`'s; the network runs
in a worker thread (napari's ``thread_worker``) so the viewer stays responsive.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    Table,
)
from napari.qt.threading import thread_worker

from nucseg_utils.napari_plugin import core
from nucseg_utils.postprocessing import METHODS

__all__ = ["EvaluateWidget", "SegmentWidget"]

MODELS = ("release", "cpu", "a model file")


def _layers(viewer, kind: str) -> list[str]:
    return [layer.name for layer in viewer.layers if type(layer).__name__ == kind]


class SegmentWidget(Container):
    """Segment the chosen image layer with a committed model (or a model file) and the
    controls of ``nucseg predict``; add its nuclei and probability map as layers; save its
    ROI set, label TIFF and measurements."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self._settings, self._settings_key = None, None
        self.segmenter = core.Segmenter()
        self.image = ComboBox(label="image", choices=self._images)
        self.model_name = ComboBox(label="model", choices=MODELS, value="release")
        self.model_path = FileEdit(label="model file", filter="*.npz", visible=False)
        self.tta = CheckBox(text="test-time augmentation (8 variants)", value=True)
        self.diameter = FloatSpinBox(label="nucleus diameter (px)", value=0.0, min=0.0,
                                     max=1000.0, step=1.0,
                                     tooltip="0: measured on the image; set it when the "
                                             "nuclei come out split or merged")
        self.threshold = FloatSpinBox(label="probability threshold", value=0.5, min=0.05,
                                      max=0.95, step=0.05,
                                      tooltip="lower finds dim nuclei, higher drops faint "
                                              "false ones")
        self.min_size = SpinBox(label="smallest nucleus (px)", value=0, min=0, max=100000,
                                tooltip="objects smaller than this are dropped")
        self.method = ComboBox(label="post-processing", choices=sorted(METHODS))
        self.exclude = CheckBox(text="drop nuclei touching the image's edge", value=False)
        self.run = PushButton(text="Segment")
        self.info = Label(value="")
        self.save_to = FileEdit(label="save to", mode="d")
        self.save = PushButton(text="Save ROIs, label TIFF, measurements", enabled=False)
        super().__init__(widgets=[self.image, self.model_name, self.model_path, self.tta,
                                  self.diameter, self.threshold, self.min_size, self.method,
                                  self.exclude, self.run, self.info, self.save_to, self.save])
        self.result: core.Segmentation | None = None
        self.worker = None
        self.model_name.changed.connect(self._model_changed)
        self.model_path.changed.connect(self._model_changed)
        self.run.changed.connect(self.start)
        self.save.changed.connect(self.write)
        self.viewer.layers.events.inserted.connect(lambda e: self.image.reset_choices())
        self.viewer.layers.events.removed.connect(lambda e: self.image.reset_choices())
        self.native.destroyed.connect(lambda *_: self.segmenter.close())
        self._model_changed()

    def _images(self, _widget=None) -> list[str]:
        return _layers(self.viewer, "Image")

    def _model_changed(self, *_):
        self.model_path.visible = self.model_name.value == "a model file"
        if self.model_name.value != "a model file" or self.model_path.value.is_file():
            self.settings()

    def _key(self):
        return str(self.model_path.value) if self.model_name.value == "a model file" \
            else self.model_name.value

    def settings(self):
        """The chosen model's settings (read from its file), shown as the controls' values
        when the model changes."""
        if self._settings is None or self._key() != self._settings_key:
            settings = core.model_settings(self._key())
            pp = settings.postprocessing
            self._settings, self._settings_key = settings, self._key()
            self.tta.value = bool(settings.tta)
            self.threshold.value = float(pp.threshold)
            self.min_size.value = int(pp.min_size)
            self.method.choices = sorted(core.methods_for_model(settings))
            self.method.value = pp.method
        return self._settings

    def options(self) -> dict:
        """The controls as :func:`.core.segment`'s keywords (the model's own values left to
        it)."""
        pp = self.settings().postprocessing
        return {"tta": self.tta.value, "diameter": self.diameter.value or None,
                "threshold": (self.threshold.value
                              if abs(self.threshold.value - pp.threshold) > 1e-9 else None),
                "min_size": (self.min_size.value
                             if self.min_size.value != int(pp.min_size) else None),
                "method": self.method.value, "exclude_border": self.exclude.value}

    def start(self, *_):
        """Segment the chosen layer: the worker process computes, a worker thread waits for
        it, and the layers are added when it ends."""
        if not self.image.value:
            self.info.value = "open an image first"
            return
        data = self.viewer.layers[self.image.value].data
        key, options = self._key(), self.options()
        h, w = core.as_plane(data).shape[:2]
        options["tile_above"] = core.predict.TILE_ABOVE
        tiled = h * w > options["tile_above"]
        self.run.enabled = False
        self.info.value = (f"segmenting {h}x{w} px tile by tile..." if tiled
                           else "segmenting...")

        @thread_worker(connect={"returned": self._show, "errored": self._failed},
                       progress={"desc": f"nucseg: segmenting {self.image.value}"})
        def work():
            return self.segmenter.segment(key, data, **options)
        self.worker = work()

    def _say(self, message: str):
        self.info.value = str(message)

    def _failed(self, err):
        self.run.enabled = True
        self.info.value = f"failed: {err}"

    def _show(self, result: core.Segmentation):
        self.run.enabled = True
        self.result = result
        name = self.image.value
        scale = self.viewer.layers[name].scale
        if result.probability is not None:
            self._put("nucleus probability", result.probability, "image", scale,
                      colormap="magma", opacity=0.5, visible=False)
        self._put(f"{name} nuclei", result.labels, "labels", scale)
        self.info.value = core.describe(result) + "".join(f"\n{n}" for n in result.notes)
        self.save.enabled = True

    def _put(self, name, data, kind, scale, **kwargs):
        if name in self.viewer.layers:
            self.viewer.layers[name].data = data
            return self.viewer.layers[name]
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        return add(data, name=name, scale=scale, **kwargs)

    def write(self, *_):
        """Save the last segmentation as ``nucseg predict`` writes it."""
        if self.result is None:
            return
        folder = Path(self.save_to.value or ".")
        layer = self.viewer.layers[self.image.value]
        px = float(layer.scale[-1]) if layer.scale[-1] != 1 else None
        paths = core.save(self.result, layer.data, folder, self.image.value, px)
        self.info.value = "saved " + ", ".join(str(p) for p in paths.values())


class EvaluateWidget(Container):
    """Score a segmentation layer against a ground-truth layer: DSB, precision, recall and F1
    per IoU threshold, and the extra (blue) and missed (red) nuclei as layers."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.truth = ComboBox(label="ground truth", choices=self._labels)
        self.predicted = ComboBox(label="segmentation", choices=self._labels)
        self.run = PushButton(text="Score")
        self.summary = Label(value="")
        self.table = Table(value={"IoU threshold": []})
        super().__init__(widgets=[self.truth, self.predicted, self.run, self.summary,
                                  self.table])
        self.run.changed.connect(self.score)
        self.viewer.layers.events.inserted.connect(lambda e: self.reset_choices())
        self.viewer.layers.events.removed.connect(lambda e: self.reset_choices())

    def _labels(self, _widget=None) -> list[str]:
        return _layers(self.viewer, "Labels")

    def score(self, *_):
        truth = np.asarray(self.viewer.layers[self.truth.value].data)
        pred = np.asarray(self.viewer.layers[self.predicted.value].data)
        table, s = core.evaluation_table(truth, pred)
        self.table.value = table.round(4).to_dict("list")
        self.summary.value = (f"DSB {s['dsb']:.4f}; at IoU 0.5: precision "
                              f"{s['precision']:.3f}, recall {s['recall']:.3f}, F1 "
                              f"{s['f1']:.3f} ({s['n_pred']} found, {s['n_true']} true)")
        extra, missed = core.error_layers(truth, pred)
        scale = self.viewer.layers[self.predicted.value].scale
        for name, data, colour in (("extra nuclei", extra, core.ERROR_COLOURS["extra"]),
                                   ("missed nuclei", missed, core.ERROR_COLOURS["missed"])):
            mask = (data > 0).astype(np.uint8)
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.viewer.add_labels(mask, name=name, scale=scale, opacity=0.7,
                                   colormap={None: (0, 0, 0, 0), 1: colour})
        return table, s
