"""Engines: what runs a loaded model's forward passes when it predicts.

In: a Keras network with its weights set, and an engine name (``--engine``, ``$NUCSEG_ENGINE``
or ``auto``).
Out: a forward function, normalised batch (N, H, W, 3) -> probabilities (N, H, W, C), and the
name of the engine that runs it.

This module is the one place that names the engines: :data:`ENGINES` (the registry) is what
the command line offers (:data:`CHOICES`), what ``auto`` chooses from, what the benchmarks
compare and what :class:`nucseg_utils.model.NucleusModel` runs. Each engine says whether its
probabilities equal TensorFlow's within float tolerance (``exact``); every number nucseg
publishes (calibration, lever rows, results) is computed with an exact engine
(:func:`exact`), so that it does not depend on the CPU.

- ``openvino``: Intel's OpenVINO runtime on the CPU, in float32: faster than TensorFlow for
  the same probabilities within float tolerance; what ``auto`` picks on a CPU when it is
  installed.
- ``tensorflow``: the Keras model called eagerly, as training does; ``auto`` on a GPU.
- ``openvino-bf16``: OpenVINO computing in bfloat16 on a CPU that has bfloat16 instructions
  (AVX-512 BF16 or AMX; elsewhere it warns and runs as ``openvino``): faster again on some
  CPUs, but its probabilities differ from TensorFlow's, so label images can differ. Never
  chosen by ``auto``.

How fast each is, and how far bfloat16's probabilities move, is measured by ``make benchmark``
(``benchmarks/REPORT.md``, section 3), not written here.

The OpenVINO engines keep each conversion in a cache folder (:func:`cache_dir`), keyed by the
network's architecture and weights: a model loaded again in another process (a Dask worker,
the next ``nucseg predict``, the next notebook) reads the converted network from there and
does not build the Keras network at all.

Training never goes through an engine: an engine only speeds up prediction with fixed weights.
To add one, write its ``build`` (network -> forward function) and :func:`register` it here.
"""
from __future__ import annotations

import os
import sys
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


class EngineError(Exception):
    """An engine that is unknown or cannot run here; the message says what to do."""


@dataclass(frozen=True)
class Engine:
    """One way of running the network's forward pass.

    ``build(network)`` returns ``(forward, name)``: the forward function and the name of the
    engine that actually runs (an engine may fall back to another, saying so). ``requires``
    is the module it imports (None: TensorFlow, always there). ``exact``: its probabilities
    equal TensorFlow's within float tolerance; if not, ``exact_as`` names the exact engine
    that publishes in its place. ``auto``: the order in which ``auto`` tries it on a CPU
    (None: never). ``cached``: its ``build`` also takes ``cache_as``, a key under which it
    keeps its conversion in :func:`cache_dir`, and ``network`` may be a :class:`Deferred`
    that it builds only when the cache does not hold the key."""
    name: str
    description: str
    build: Callable
    requires: str | None = None
    exact: bool = True
    exact_as: str | None = None
    auto: int | None = None
    cached: bool = False

    def available(self) -> str | None:
        """None when this engine can run here, else why not."""
        if self.requires is None:
            return None
        try:
            __import__(self.requires)
        except ImportError as err:
            return str(err)
        return None


ENGINES: dict[str, Engine] = {}


class Deferred:
    """A network not built yet: ``deferred()`` builds it the first time and returns the same
    network every time after."""

    def __init__(self, make: Callable):
        self._make, self._network = make, None

    def __call__(self):
        if self._network is None:
            self._network = self._make()
        return self._network


def network_of(network):
    """The Keras network itself, built now if ``network`` is :class:`Deferred`."""
    return network() if isinstance(network, Deferred) else network


def cache_dir() -> Path | None:
    """Where the OpenVINO engines keep their conversions: ``$NUCSEG_CACHE``/openvino, else
    ``$XDG_CACHE_HOME`` (or ``~/.cache``)/nucseg/openvino; ``NUCSEG_CACHE=off``: nowhere, each
    process converts again. A conversion of the ResNet-18 U-Net takes about 60 MB."""
    value = os.environ.get("NUCSEG_CACHE", "")
    if value.lower() in ("off", "0", "none", "no"):
        return None
    base = Path(value) if value else Path(os.environ.get("XDG_CACHE_HOME") or
                                          Path.home() / ".cache") / "nucseg"
    return base / "openvino"


def register(engine: Engine) -> Engine:
    ENGINES[engine.name] = engine
    return engine


def _tensorflow(network):
    def forward(batch):
        return network(batch, training=False).numpy()
    return forward, "tensorflow"


def has_bfloat16() -> bool:
    """Whether OpenVINO computes in bfloat16 on this CPU (False without OpenVINO)."""
    try:
        import openvino as ov  # lazy: importing OpenVINO takes about a second
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no OpenVINO, or no CPU device
        return False


def _converted(ov, core, network, cache_as: str | None, read: bool = True):
    """(the OpenVINO model of ``network``, whether it was read from the cache): read from the
    cache when it holds ``cache_as`` (and ``read``), else converted and kept there (written
    under a temporary name and renamed)."""
    folder = cache_dir() if cache_as else None
    target = None
    if folder is not None:
        version = "".join(c if c.isalnum() else "_" for c in ov.get_version().split("-")[0])
        target = folder / f"{cache_as}-ov{version}.xml"
        if read and target.is_file() and target.with_suffix(".bin").is_file():
            try:
                return core.read_model(target), True
            except Exception:  # noqa: BLE001 - a damaged entry: converted again below
                pass
    network = network_of(network)
    converted = ov.convert_model(network, input=[(-1, -1, -1, network.input_shape[-1])])
    if target is not None:
        tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.xml")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ov.save_model(converted, tmp, compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
            os.replace(tmp, target)
        except OSError:  # a cache that cannot be written only costs the next conversion
            for leftover in (tmp, tmp.with_suffix(".bin")):
                leftover.unlink(missing_ok=True)
    return converted, False


def _openvino(network, precision: str = "f32", cache_as: str | None = None):
    """The Keras graph with its current weights, converted once (about 3 s for the ResNet-18
    U-Net; read from :func:`cache_dir` when it was converted before), for any input size; one
    infer request, used by one thread at a time."""
    import openvino as ov  # lazy: importing OpenVINO takes about a second
    name = "openvino-bf16" if precision == "bf16" else "openvino"
    if precision == "bf16" and not has_bfloat16():
        warnings.warn("this CPU has no bfloat16 instructions: openvino-bf16 runs as "
                      "openvino (float32)", stacklevel=3)
        name, precision = "openvino", "f32"
    hints = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    core = ov.Core()
    converted, from_cache = _converted(ov, core, network, cache_as)
    try:
        compiled = core.compile_model(converted, "CPU", hints)
    except Exception:  # noqa: BLE001 - a cache entry read but not usable: converted again
        if not from_cache:
            raise
        compiled = core.compile_model(_converted(ov, core, network, cache_as, read=False)[0],
                                      "CPU", hints)
    request, lock = compiled.create_infer_request(), threading.Lock()

    def forward(batch):
        with lock:
            out = request.infer({0: np.ascontiguousarray(batch, np.float32)})
            return np.array(out[0], np.float32)  # a copy: the request reuses its buffer
    return forward, name


register(Engine("openvino", "OpenVINO on the CPU, float32: faster than TensorFlow, the same "
                "probabilities within float tolerance", _openvino, requires="openvino", auto=0,
                cached=True))
register(Engine("tensorflow", "the Keras model, eagerly (as training)", _tensorflow, auto=1))
register(Engine("openvino-bf16", "OpenVINO in bfloat16 on CPUs that have it: faster again on "
                "some CPUs, not the same probabilities",
                lambda network, cache_as=None: _openvino(network, "bf16", cache_as),
                requires="openvino", exact=False, exact_as="openvino", cached=True))

CHOICES = ("auto", *ENGINES)


# what a Linux machine with a GPU that TensorFlow can use has (NVIDIA's driver, or ROCm's)
GPU_DEVICES = ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/kfd")


def _gpu() -> bool:
    """Whether TensorFlow sees a GPU; on Linux without a GPU driver, known without importing
    TensorFlow (seconds), so that a model run by OpenVINO never imports it."""
    if (sys.platform.startswith("linux") and "tensorflow" not in sys.modules
            and not any(os.path.exists(p) for p in GPU_DEVICES)):
        return False
    import tensorflow as tf  # lazy: importing TensorFlow takes seconds
    return bool(tf.config.list_physical_devices("GPU"))


def resolve(engine: str | None = None) -> str:
    """The registered engine for ``engine`` (None: ``$NUCSEG_ENGINE`` or ``auto``).

    ``auto`` is TensorFlow when it sees a GPU, else the first engine by its ``auto`` order that
    can run here (OpenVINO when it is installed). EngineError for an unknown name, or a named
    engine that cannot run here."""
    name = (engine or os.environ.get("NUCSEG_ENGINE") or "auto").lower()
    if name == "auto":
        if _gpu():
            return "tensorflow"
        ordered = sorted((e for e in ENGINES.values() if e.auto is not None),
                         key=lambda e: e.auto)
        return next(e.name for e in ordered if e.available() is None)
    if name not in ENGINES:
        raise EngineError(f"unknown engine '{name}'; choose from {', '.join(CHOICES)}")
    why = ENGINES[name].available()
    if why:
        raise EngineError(f"the {name} engine was asked for but {ENGINES[name].requires} "
                          f"cannot be imported ({why}); `pip install "
                          f"{ENGINES[name].requires}` or use --engine tensorflow")
    return name


def exact(engine: str | None = None) -> str:
    """:func:`resolve`, with an engine that is not exact replaced by its exact twin: the
    engine of every number nucseg publishes."""
    name = resolve(engine)
    return ENGINES[name].exact_as or name


def build(network, engine: str | None = None, cache_as: str | None = None):
    """(forward function, engine name) for ``network`` (a Keras network, or a
    :class:`Deferred` one) on ``engine`` (:func:`resolve`); ``cache_as``: the key under which
    an engine that caches (``Engine.cached``) keeps its conversion."""
    spec = ENGINES[resolve(engine)]
    if spec.cached and cache_as:
        return spec.build(network, cache_as=cache_as)
    return spec.build(network_of(network))
