"""What the benchmarks of one run share, each computed once (:class:`Context`): the
stage1_test images, the model loaded for each engine, and the stage1_test probability maps
(with and without TTA, and the native-size TTA of each engine) with their timings, and the
label images post-processed from them. Also the sizes of a full and a quick run."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

# common first: it puts the repository on sys.path for nucseg_utils
from common import peak_rss_mib

from nucseg_utils import data as data_mod
from nucseg_utils import postprocessing
from nucseg_utils.inference import forward, preprocessing, tta
from nucseg_utils.model import NucleusModel, engines

# Sizes of a full and a quick run.
FULL = dict(metric_test=None, metric_train=10, repeats_fast=3, repeats_slow=2,
            predict_images=None, train_images=48, pipeline_batches=10, train_steps=6,
            stream_images=200, stream_size=1024, resume_images=6)
QUICK = dict(metric_test=6, metric_train=2, repeats_fast=2, repeats_slow=1,
             predict_images=4, train_images=16, pipeline_batches=2, train_steps=2,
             stream_images=3, stream_size=256, resume_images=3)


def evenly(ids, n):
    """``n`` ids spread evenly over the sorted list (all of them when n is None)."""
    ids = sorted(ids)
    if n is None or n >= len(ids):
        return ids
    return [ids[int(i)] for i in np.linspace(0, len(ids) - 1, n).round()]


class CachedSource:
    """A stand-in for a Split that serves already-read samples to ``score_labels``."""

    def __init__(self, name, samples):
        self.source = name
        self._samples = {s.id: s for s in samples}

    def sample(self, sid):
        return self._samples[sid]


class Context:
    """Data, the model and the stage1_test predictions, each computed once per run."""

    def __init__(self, model_path, sizes: dict, root=None, seed: int = 0, progress=True):
        self.model_path = Path(model_path)
        self.sizes = sizes
        self.root = root
        self.seed = seed
        self.progress = progress
        self._test = None
        self._models: dict = {}
        self._preds = None
        self._labels: dict = {}
        self.timings: dict = {}

    def log(self, msg):
        if self.progress:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- data
    def test_split(self):
        return data_mod.open_split("stage1_test", self.root)

    def test_samples(self, n=None):
        """stage1_test samples (all, or ``n`` spread evenly), with read times per image."""
        if self._test is None:
            self._test = {}
            self.timings["read_image"], self.timings["read_labels"] = {}, {}
        split = self.test_split()
        try:
            for sid in evenly(split.ids, n):
                if sid in self._test:
                    continue
                t0 = time.perf_counter()
                img = split.image(sid)
                t1 = time.perf_counter()
                lab = split.labels(sid, img.shape[:2])
                t2 = time.perf_counter()
                self.timings["read_image"][sid] = t1 - t0
                self.timings["read_labels"][sid] = t2 - t1
                self._test[sid] = data_mod.Sample(sid, img, lab, "stage1_test")
        finally:
            split.close()
        return [self._test[s] for s in evenly(split.ids, n)]

    # -- the model
    def has_model(self) -> bool:
        return self.model_path.is_file()

    def model(self, engine: str | None = None):
        """(model, config) predicting with ``engine`` (None: nucseg's default, as the
        commands use it, in float32 even when ``NUCSEG_ENGINE`` says openvino-bf16); each
        engine's model is loaded once."""
        engine = engines.resolve(engine) if engine else engines.exact()
        if engine not in self._models:
            t0 = time.perf_counter()
            net = NucleusModel.load(self.model_path, engine=engine)
            self._models[engine] = (net, net.config)
            self.timings.setdefault("load_model", {})[engine] = time.perf_counter() - t0
            # the first call builds the kernels; timed apart from the images
            t0 = time.perf_counter()
            model, config = self._models[engine]
            forward.forward_pass(model, np.zeros((64, 64, 3), np.float32), config)
            self.timings.setdefault("warmup", {})[engine] = time.perf_counter() - t0
        return self._models[engine]

    @property
    def engine(self) -> str:
        return self.model()[0].engine

    def bf16_engine(self) -> list[str]:
        """["openvino-bf16"] when OpenVINO computes in bfloat16 on this CPU, else []."""
        return ["openvino-bf16"] if self.engine == "openvino" and engines.has_bfloat16() \
            else []

    # -- the stage1_test predictions
    def predictions(self):
        """{'plain': {id: prob}, 'tta': {id: prob}} on the evaluated stage1_test images as
        ``nucseg evaluate`` makes them (:meth:`NucleusModel.predict_probabilities`: normalised, rescaled
        to the model's nucleus size, predicted with nucseg's default engine), with per-image
        times; and side by side, the 8-fold TTA of the normalised image at native size
        (:func:`tta.predict`) with TensorFlow and with the default engine."""
        if self._preds is None:
            samples = self.test_samples(self.sizes["predict_images"])
            model, config = self.model()
            engines = sorted({"tensorflow", self.engine} | set(self.bf16_engine()))
            t = {k: {} for k in ("predict_plain", "predict_tta",
                                 *(f"native_tta_{e}" for e in engines))}
            plain, tta_maps, native = {}, {}, {e: {} for e in engines}
            for i, s in enumerate(samples):
                t0 = time.perf_counter()
                plain[s.id] = model.predict_probabilities(s.image, tta=False)
                t1 = time.perf_counter()
                tta_maps[s.id] = model.predict_probabilities(s.image, tta=True)
                t2 = time.perf_counter()
                img = preprocessing.normalize(s.image, config["normalization"])
                t["predict_plain"][s.id], t["predict_tta"][s.id] = t1 - t0, t2 - t1
                for e in engines:
                    t3 = time.perf_counter()
                    native[e][s.id] = tta.predict(self.model(e)[0], img, config, tta=True)
                    t[f"native_tta_{e}"][s.id] = time.perf_counter() - t3
                self.log(f"predicted {i + 1}/{len(samples)} {s.image.shape[:2]}: "
                         f"{t1 - t0:.2f} s, TTA {t2 - t1:.2f} s; native TTA " +
                         ", ".join(f"{e} {t[f'native_tta_{e}'][s.id]:.2f} s" for e in engines))
            self._preds = {"plain": plain, "tta": tta_maps, "native": native}
            self.timings.update(t, rss_after_predict=peak_rss_mib())
        return self._preds

    def methods(self):
        """The post-processing methods this model's maps allow, the model's own first."""
        _, config = self.model()
        probs = next(iter(self.predictions()["tta"].values()))
        channels = probs.shape[-1] if probs.ndim == 3 else 1
        own = config.get("postprocess", "paper")
        ms = postprocessing.methods_for(channels)
        return sorted(ms, key=lambda m: (m != own, list(postprocessing.METHODS).index(m)))

    def labels(self, which: str, method: str, engine: str | None = None):
        """Post-processed label images of the 'plain' or 'tta' maps (or, with ``engine``, of
        that engine's native-size TTA maps), with the model's threshold, marker spacing,
        minimum size and dilation; with per-image times."""
        key = (which, method, engine)
        if key not in self._labels:
            _, config = self.model()
            out, times = {}, {}
            maps = self.predictions()[which] if engine is None else \
                self.predictions()["native"][engine]
            for sid, p in maps.items():
                t0 = time.perf_counter()
                out[sid] = postprocessing.postprocess_as(p, config, method)
                times[sid] = time.perf_counter() - t0
            self._labels[key] = (out, times)
        return self._labels[key]
