"""The network: a ``segmentation_models`` U-Net with a ResNet (or other) encoder.

In: a profile (backbone, encoder weights, targets, loss) or a saved model file.
Out: a compiled Keras model; ``predict_probabilities`` turns one normalised image of any size
into per-pixel probabilities at that size (padding to a multiple of 32, tiling for large
images, or the paper's resize to the input size and back).

A loaded model predicts with an *engine* (:func:`attach_engine`): ``openvino`` (Intel's
OpenVINO runtime, 1.4-2x as fast as TensorFlow on 2-core CPUs of this kind, by machine,
for the same probabilities within 1e-5, measured side by side in ``benchmarks/REPORT.md``)
when it is installed and TensorFlow sees no GPU, else ``tensorflow``. ``NUCSEG_ENGINE`` or
the commands' ``--engine`` choose one. ``openvino-bf16`` is OpenVINO computing in bfloat16 on
a CPU that has bfloat16 instructions (AVX-512 BF16 or AMX; elsewhere it is plain ``openvino``):
1.1-1.8x as fast again by image size (1.7x over stage1_test), but its probabilities differ by up to about 0.03, so label images
can differ (on stage1_test the DSB moved by 0.0005, ``benchmarks/REPORT.md``); never chosen
by ``auto``, it is offered for large batches of images. Training never goes through an engine: it only speeds up prediction with
fixed weights.

Saved models are one ``.npz`` file: the weights (float16 by default, half the size, with no
measurable effect on the score) and the JSON config needed to rebuild the network. Training
checkpoints (:mod:`nucseg_utils.training`) also keep the optimizer state; the model file does
not.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import runs
from .preprocessing import pad_to_multiple, resize_image

MODEL_KEYS = ("backbone", "decoder_filters", "targets", "input_mode", "input_size",
              "normalization", "postprocess", "min_distance_factor", "min_size", "threshold",
              "dilation", "target_diameter", "scale_limits", "size_probe", "tta")


ENGINES = ("auto", "openvino", "tensorflow", "openvino-bf16")

# segmentation_models' U-Net decoder: filters of its 5 blocks, deepest first. A model file
# without ``decoder_filters`` in its config (all before it was a key) has this decoder.
DECODER_FILTERS = (256, 128, 64, 32, 16)


class ModelError(Exception):
    """A model file that cannot be used; the message names the file."""


def tf_setup(threads: int | None = None):
    """Import TensorFlow quietly (after nucseg_utils set the Keras env vars)."""
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(2)
        except RuntimeError:
            pass
    return tf


def build_model(profile: dict, seed: int | None = None):
    """Build the U-Net of a profile (uncompiled); ``seed`` fixes its random initial weights."""
    tf = tf_setup()
    if seed is not None:
        tf.keras.utils.set_random_seed(int(seed))
    import segmentation_models as sm
    weights = profile.get("encoder_weights")
    try:
        return sm.Unet(profile["backbone"], encoder_weights=weights,
                       classes=len(profile["targets"]), activation="sigmoid",
                       input_shape=(None, None, 3),
                       decoder_filters=tuple(profile.get("decoder_filters") or DECODER_FILTERS))
    except Exception as err:  # noqa: BLE001
        if weights and ("URL" in str(err) or "fetch" in str(err).lower() or
                        "connect" in str(err).lower() or isinstance(err, OSError)):
            raise ModelError(
                f"could not download the {weights} weights of the {profile['backbone']} encoder "
                f"({type(err).__name__}: {err}). This machine may have no internet access. "
                f"Train with encoder_weights=None (`--encoder-weights none`), or on Colab, "
                f"or put the weights file into ~/.keras/models/ by hand.") from None
        raise


def _mask_iou(y_true, y_pred):
    import tensorflow as tf
    t = y_true[..., 0]
    p = tf.cast(y_pred[..., 0] > 0.5, t.dtype)
    inter = tf.reduce_sum(t * p)
    union = tf.reduce_sum(t) + tf.reduce_sum(p) - inter
    return (inter + 1e-6) / (union + 1e-6)


def _mask_f1(y_true, y_pred):
    import tensorflow as tf
    t = y_true[..., 0]
    p = tf.cast(y_pred[..., 0] > 0.5, t.dtype)
    inter = tf.reduce_sum(t * p)
    return (2 * inter + 1e-6) / (tf.reduce_sum(t) + tf.reduce_sum(p) + 1e-6)


_mask_iou.__name__ = "iou"
_mask_f1.__name__ = "f1"


def loss_for(name: str):
    import segmentation_models as sm
    if name == "jaccard":
        return sm.losses.JaccardLoss()
    if name == "bce_jaccard":
        return sm.losses.BinaryCELoss() + sm.losses.JaccardLoss()
    raise ValueError(f"unknown loss '{name}'")


def compile_model(model, profile: dict):
    tf = tf_setup()
    opt = tf.keras.optimizers.Adam(learning_rate=profile["learning_rate"])
    model.compile(optimizer=opt, loss=loss_for(profile["loss"]), metrics=[_mask_iou, _mask_f1])
    return model


def model_config(profile: dict) -> dict:
    return {k: profile[k] for k in MODEL_KEYS if k in profile}


def save_model(model, path, profile_or_config: dict, dtype=np.float16, **extra) -> Path:
    """Write weights + config to one .npz, atomically."""
    config = {**model_config(profile_or_config), **extra}
    arrays = {f"w{i:03d}": w.astype(dtype) for i, w in enumerate(model.get_weights())}
    path = Path(path)
    with runs.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, config=np.array(json.dumps(config)), **arrays)
    return path


def read_model_file(path) -> tuple[dict, list[np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as z:
            config = json.loads(str(z["config"]))
            weights = [z[k].astype(np.float32) for k in sorted(k for k in z.files if k[0] == "w")]
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{path}: not a readable nucseg model file ({type(err).__name__}: "
                         f"{err})") from None
    missing = [k for k in ("backbone", "targets") if k not in config]
    if missing:
        raise ModelError(f"{path}: model config lacks {', '.join(missing)}; not a nucseg model "
                         f"file")
    return config, weights


def update_config(path, **fields) -> dict:
    """Rewrite a saved model's config with ``fields`` (weights untouched), atomically."""
    config, _ = read_model_file(path)
    config.update(fields)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "config"}
    with runs.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, config=np.array(json.dumps(config)), **arrays)
    return config


def read_config(path) -> dict:
    """The config saved with a model (what it predicts, how to pre- and post-process)."""
    return read_model_file(path)[0]


def load_model(path, engine: str | None = None):
    """Rebuild a saved model; returns (model, config). ModelError names the file on failure.

    ``engine`` (default: ``$NUCSEG_ENGINE``, else ``auto``): what runs the forward passes of
    prediction (:func:`attach_engine`); the Keras model is returned either way."""
    config, weights = read_model_file(path)
    try:
        model = build_model({**config, "encoder_weights": None})
    except Exception as err:  # noqa: BLE001 - e.g. an unknown backbone name in the config
        raise ModelError(f"{path}: cannot build the model its config describes "
                         f"({type(err).__name__}: {err})") from None
    expected = [w.shape for w in model.get_weights()]
    got = [w.shape for w in weights]
    if expected != got:
        bad = next((i for i, (e, g) in enumerate(zip(expected, got)) if e != g),
                   min(len(expected), len(got)))
        where = (f"array {bad} has shape {got[bad]}, expected {expected[bad]}"
                 if bad < min(len(expected), len(got)) else "")
        raise ModelError(f"{path}: weights do not fit a {config.get('backbone')} U-Net with "
                         f"{len(config.get('targets', []))} output(s) ({len(got)} arrays, "
                         f"expected {len(expected)}{'; ' + where if where else ''}); the file "
                         f"is corrupt or of another model")
    model.set_weights(weights)
    attach_engine(model, engine)
    return model, config


def resolve_engine(engine: str | None = None) -> str:
    """``openvino``, ``openvino-bf16`` or ``tensorflow`` for ``engine`` (None:
    ``$NUCSEG_ENGINE`` or ``auto``).

    ``auto`` is OpenVINO when it is installed and TensorFlow sees no GPU (OpenVINO runs on the
    CPU); ModelError when an OpenVINO engine is asked for and cannot be imported."""
    import os
    engine = (engine or os.environ.get("NUCSEG_ENGINE") or "auto").lower()
    if engine not in ENGINES:
        raise ModelError(f"unknown engine '{engine}'; choose from {', '.join(ENGINES)}")
    if engine == "tensorflow":
        return engine
    try:
        import openvino  # noqa: F401
    except ImportError as err:
        if engine != "auto":
            raise ModelError(f"the {engine} engine was asked for but OpenVINO cannot be "
                             f"imported ({err}); `pip install openvino` or use "
                             f"--engine tensorflow") from None
        return "tensorflow"
    if engine == "auto":
        return "tensorflow" if tf_setup().config.list_physical_devices("GPU") else "openvino"
    return engine


def exact_engine(engine: str | None = None) -> str:
    """:func:`resolve_engine`, but never ``openvino-bf16`` (``openvino`` instead): the engine
    of every number nucseg publishes (calibration, lever table, results), so that they do not
    depend on whether a CPU computes in bfloat16."""
    name = resolve_engine(engine)
    return "openvino" if name == "openvino-bf16" else name


def has_bfloat16() -> bool:
    """Whether OpenVINO computes in bfloat16 on this CPU (False without OpenVINO)."""
    try:
        import openvino as ov
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no OpenVINO, or no CPU device
        return False


def attach_engine(model, engine: str | None = None) -> str:
    """Make ``model``'s prediction calls (:func:`predict_probabilities`, :func:`predict_batch`)
    run on ``engine``; returns the engine used.

    ``openvino`` converts the Keras graph with its current weights once (about 3 s for the
    ResNet-18 U-Net), for any input size; set the weights before, and attach again after
    changing them. ``openvino-bf16`` the same, computing in bfloat16 (on a CPU without it:
    a warning, and the engine used is ``openvino``). ``tensorflow`` calls the Keras model
    eagerly, as training does."""
    name = resolve_engine(engine)
    forward = None
    if name.startswith("openvino"):
        import threading

        import openvino as ov
        precision = "bf16" if name == "openvino-bf16" else "f32"
        if precision == "bf16" and not has_bfloat16():
            import warnings
            warnings.warn("this CPU has no bfloat16 instructions: openvino-bf16 runs as "
                          "openvino (float32)", stacklevel=2)
            name, precision = "openvino", "f32"
        compiled = ov.Core().compile_model(
            ov.convert_model(model, input=[(-1, -1, -1, model.input_shape[-1])]), "CPU",
            {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
        request, lock = compiled.create_infer_request(), threading.Lock()

        def forward(batch):
            with lock:
                out = request.infer({0: np.ascontiguousarray(batch, np.float32)})
                return np.array(out[0], np.float32)  # a copy: the request reuses its buffer
    # bypass Keras' attribute tracking: this is not part of the model's state
    object.__setattr__(model, "_nucseg_forward", forward)
    object.__setattr__(model, "_nucseg_engine", name)
    return name


def engine_of(model) -> str:
    """The engine a model predicts with (``tensorflow`` unless :func:`attach_engine` said)."""
    return getattr(model, "_nucseg_engine", "tensorflow")


def _forward(model, batch: np.ndarray) -> np.ndarray:
    forward = getattr(model, "_nucseg_forward", None)
    if forward is not None:
        return forward(batch)
    return model(batch, training=False).numpy()


def predict_batch(model, images: list, config: dict, tile: int = 1024) -> list:
    """Probabilities of several normalised images of one shape; one forward pass when they
    fit a tile (TTA's variants), else one :func:`predict_probabilities` call each."""
    h, w = images[0].shape[:2]
    if config.get("input_mode") == "resize" or h > tile or w > tile or len(images) == 1:
        return [predict_probabilities(model, im, config, tile) for im in images]
    batch = np.stack([pad_to_multiple(im, 32)[0] for im in images])
    return list(_forward(model, batch)[:, :h, :w])


def predict_probabilities(model, image: np.ndarray, config: dict, tile: int = 1024,
                          overlap: int = 64) -> np.ndarray:
    """Probabilities (H, W, n_targets) for one normalised (H, W, 3) image at its own size.

    ``resize`` models (the paper's) see the image resized to input_size; their probabilities
    are resized back (bilinear) before any threshold, so nuclei are not dilated. ``crop`` models
    are fully convolutional and see the image at native scale, padded to a multiple of 32;
    images larger than ``tile`` pixels on a side are predicted in overlapping tiles, so memory
    stays bounded whatever the image size.
    """
    h, w = image.shape[:2]
    if config.get("input_mode") == "resize":
        s = config["input_size"]
        small = resize_image(image, (s, s))
        prob = _forward(model, small[None])[0]
        return resize_image(prob, (h, w))
    if h <= tile and w <= tile:
        padded, _ = pad_to_multiple(image, 32)
        return _forward(model, padded[None])[0, :h, :w]
    out = None
    weight = np.zeros((h, w, 1), np.float32)
    step = tile - 2 * overlap
    for y0 in range(0, max(h - 2 * overlap, 1), step):
        for x0 in range(0, max(w - 2 * overlap, 1), step):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y1 - tile), max(0, x1 - tile)
            patch, _ = pad_to_multiple(image[ya:y1, xa:x1], 32)
            p = _forward(model, patch[None])[0, : y1 - ya, : x1 - xa]
            if out is None:
                out = np.zeros((h, w, p.shape[-1]), np.float32)
            # weight tile centres more than tile edges
            wy = np.minimum(np.arange(y1 - ya) + 1, np.arange(y1 - ya)[::-1] + 1)
            wx = np.minimum(np.arange(x1 - xa) + 1, np.arange(x1 - xa)[::-1] + 1)
            wt = np.minimum(np.minimum(wy[:, None], wx[None, :]), overlap).astype(np.float32)
            out[ya:y1, xa:x1] += p * wt[..., None]
            weight[ya:y1, xa:x1] += wt[..., None]
    return out / weight
