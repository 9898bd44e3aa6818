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

Training never goes through an engine: an engine only speeds up prediction with fixed weights.
To add one, write its ``build`` (network -> forward function) and :func:`register` it here.
"""
from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
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
    (None: never)."""
    name: str
    description: str
    build: Callable
    requires: str | None = None
    exact: bool = True
    exact_as: str | None = None
    auto: int | None = None

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


def _openvino(network, precision: str = "f32"):
    """The Keras graph with its current weights, converted once (about 3 s for the ResNet-18
    U-Net), for any input size; one infer request, used by one thread at a time."""
    import openvino as ov  # lazy: importing OpenVINO takes about a second
    name = "openvino-bf16" if precision == "bf16" else "openvino"
    if precision == "bf16" and not has_bfloat16():
        warnings.warn("this CPU has no bfloat16 instructions: openvino-bf16 runs as "
                      "openvino (float32)", stacklevel=3)
        name, precision = "openvino", "f32"
    compiled = ov.Core().compile_model(
        ov.convert_model(network, input=[(-1, -1, -1, network.input_shape[-1])]), "CPU",
        {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
    request, lock = compiled.create_infer_request(), threading.Lock()

    def forward(batch):
        with lock:
            out = request.infer({0: np.ascontiguousarray(batch, np.float32)})
            return np.array(out[0], np.float32)  # a copy: the request reuses its buffer
    return forward, name


register(Engine("openvino", "OpenVINO on the CPU, float32: faster than TensorFlow, the same "
                "probabilities within float tolerance", _openvino, requires="openvino", auto=0))
register(Engine("tensorflow", "the Keras model, eagerly (as training)", _tensorflow, auto=1))
register(Engine("openvino-bf16", "OpenVINO in bfloat16 on CPUs that have it: faster again on "
                "some CPUs, not the same probabilities",
                lambda network: _openvino(network, "bf16"), requires="openvino", exact=False,
                exact_as="openvino"))

CHOICES = ("auto", *ENGINES)


def _gpu() -> bool:
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


def build(network, engine: str | None = None):
    """(forward function, engine name) for ``network`` on ``engine`` (:func:`resolve`)."""
    return ENGINES[resolve(engine)].build(network)
