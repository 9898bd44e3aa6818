"""The model: a ``segmentation_models`` U-Net with a ResNet (or other) encoder, and the one
object that predicts with it.

In: a profile (backbone, encoder weights, targets, loss) to build and train a network, or a
saved model file.
Out: :class:`NucleusModel`, what every command, notebook, the model package and the
benchmarks predict with: ``NucleusModel.load(path)``, ``predict_probabilities(image)``,
``predict_instances(image)`` (labels and the steps that made them), its ``settings`` as a
dataclass (:class:`ModelSettings`) and the registered engine (:mod:`nucseg_utils.model.engines`)
that runs its forward passes. For training: :func:`build_model`, :func:`compile_model`,
:func:`save_model`.

Saved models are one ``.npz`` file: the weights (float16 by default, half the size, with no
measurable effect on the score), the JSON config training wrote (what rebuilds the network,
and the recipe's pre- and post-processing) and, apart from it, the post-processing settings
that ``nucseg publish`` calibrated on validation images (``calibration``). Training
checkpoints (:mod:`nucseg_utils.training`) also keep the optimizer state; the model file does
not.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from nucseg_utils import postprocessing
from nucseg_utils.core import runs
from nucseg_utils.core import settings as core_settings
from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.data.dsb import to_rgb_float
from nucseg_utils.inference.preprocessing import normalize
from nucseg_utils.inference.quality import image_quality
from nucseg_utils.inference.scale import predict_scaled
from nucseg_utils.model import engines

__all__ = [
    "COMMITTED", "CPU_MODEL", "DECODER_FILTERS", "DEFAULT_MODEL", "MODEL_KEYS",
    "RECORD_KEYS", "RELEASE_MODEL", "REPO", "USER_KEYS", "ModelError", "ModelSettings",
    "NucleusModel",
    "build_model", "committed_model", "compile_model", "control_changes", "fresh_network",
    "loss_for",
    "mask_f1", "mask_iou", "model_config", "model_file", "read_calibration", "read_config",
    "read_model_file", "read_training_config", "save_calibration", "save_model",
    "segmentation_models", "tf_setup", "update_config"
]

REPO = runs.REPO
# the committed models: ``cpu`` learnt from stage1_train alone, so stage1_test is its honest
# test set (the report scores it); ``release`` learnt from every labelled stage-1 image, for
# people's own images (``nucseg predict``, notebook 7 and ``nucseg export`` use it)
COMMITTED = ("cpu", "release")  # the committed models, by name


def control_changes(diameter=None, threshold=None, min_size=None,
                    exclude_border: bool = False) -> dict:
    """The settings ``nucseg predict``'s controls (and the napari widget's) change, for
    :meth:`NucleusModel.with_settings`: only those given (a diameter of 0 is none)."""
    changes = {}
    if diameter:
        changes["diameter"] = float(diameter)
    if threshold is not None:
        changes["threshold"] = float(threshold)
    if min_size is not None:
        changes["min_size"] = int(min_size)
    if exclude_border:
        changes["exclude_border"] = True
    return changes


def committed_model(name: str) -> Path:
    """The file of the committed model ``name`` (:data:`COMMITTED`): in a checkout,
    ``models/<name>/model.npz``; in an installed nucseg (``pip install``), the copy its wheel
    carries as package data (``nucseg_utils/models/<name>/model.npz``), so that an install
    predicts offline."""
    if name not in COMMITTED:
        raise ModelError(f"no committed model '{name}'; choose one of {', '.join(COMMITTED)}")
    checkout = REPO / "models" / name / "model.npz"
    if (REPO / "pyproject.toml").is_file() and checkout.is_file():
        return checkout
    return Path(__file__).resolve().parents[1] / "models" / name / "model.npz"


def model_file(path=None) -> Path:
    """The model file ``path`` names: a file, or the name of a committed model (``release``,
    ``cpu``: :func:`committed_model`) when no such file exists; None is :data:`DEFAULT_MODEL`."""
    if path in COMMITTED and not Path(path).is_file():
        return committed_model(path)
    return Path(path or DEFAULT_MODEL)


CPU_MODEL = committed_model("cpu")
RELEASE_MODEL = committed_model("release")
DEFAULT_MODEL = RELEASE_MODEL  # what NucleusModel.load() loads

# what a model file's config keeps of its profile: the network, its input, the inference and
# every post-processing setting (:class:`nucseg_utils.postprocessing.PostprocessSettings`)
MODEL_KEYS = ("backbone", "decoder_filters", "targets", "input_mode", "input_size",
              "normalization", "target_diameter", "scale_limits", "size_probe", "tta",
              *postprocessing.DEFAULTS)
# what a model file records of its training beside MODEL_KEYS (save_model's extras): the
# epoch kept, its validation loss, the data and profile it learnt from
RECORD_KEYS = ("epoch", "val_loss", "dataset", "profile", "train_splits")
# settings a user may give a loaded model (NucleusModel.with_settings, nucseg predict's
# controls) besides MODEL_KEYS: the nuclei's diameter in native pixels, which skips the size
# probe (nucseg_utils.inference.scale)
USER_KEYS = ("diameter",)


# segmentation_models' U-Net decoder: filters of its 5 blocks, deepest first. A model file
# without ``decoder_filters`` in its config (all before it was a key) has this decoder.
DECODER_FILTERS = tuple(core_settings.LEGACY["decoder_filters"])


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


def segmentation_models():
    """``segmentation_models``, imported without the line it prints on import (lazy: it
    imports TensorFlow, seconds)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import segmentation_models as sm
    return sm


def build_model(network: "core_settings.Network | core_settings.Recipe | dict",
                seed: int | None = None):
    """Build the U-Net of a recipe's network settings (uncompiled; a profile or a model file's
    config is read by :func:`~nucseg_utils.core.settings.network_of`); ``seed`` fixes its
    random initial weights."""
    net = core_settings.network_of(network)
    tf = tf_setup()
    if seed is not None:
        tf.keras.utils.set_random_seed(int(seed))
    sm = segmentation_models()
    weights = net.encoder_weights
    try:
        return sm.Unet(net.backbone, encoder_weights=weights, classes=len(net.targets),
                       activation="sigmoid", input_shape=(None, None, 3),
                       decoder_filters=tuple(net.decoder_filters))
    except Exception as err:  # noqa: BLE001
        if weights and ("URL" in str(err) or "fetch" in str(err).lower() or
                        "connect" in str(err).lower() or isinstance(err, OSError)):
            raise ModelError(
                f"could not download the {weights} weights of the {net.backbone} encoder "
                f"({type(err).__name__}: {err}). This machine may have no internet access. "
                f"Train with encoder_weights=None (`--encoder-weights none`), or on Colab, "
                f"or put the weights file into ~/.keras/models/ by hand.") from None
        raise


def mask_iou(y_true, y_pred):
    import tensorflow as tf
    t = y_true[..., 0]
    p = tf.cast(y_pred[..., 0] > 0.5, t.dtype)
    inter = tf.reduce_sum(t * p)
    union = tf.reduce_sum(t) + tf.reduce_sum(p) - inter
    return (inter + 1e-6) / (union + 1e-6)


def mask_f1(y_true, y_pred):
    import tensorflow as tf
    t = y_true[..., 0]
    p = tf.cast(y_pred[..., 0] > 0.5, t.dtype)
    inter = tf.reduce_sum(t * p)
    return (2 * inter + 1e-6) / (tf.reduce_sum(t) + tf.reduce_sum(p) + 1e-6)


mask_iou.__name__ = "iou"
mask_f1.__name__ = "f1"


def loss_for(name: str):
    sm = segmentation_models()
    if name == "jaccard":
        return sm.losses.JaccardLoss()
    if name == "bce_jaccard":
        return sm.losses.BinaryCELoss() + sm.losses.JaccardLoss()
    raise ValueError(f"unknown loss '{name}'")


def compile_model(model, recipe: "core_settings.Recipe | dict"):
    """``model`` compiled with the recipe's loss and Adam at its learning rate."""
    t = core_settings.recipe_of(recipe).training
    tf = tf_setup()
    opt = tf.keras.optimizers.Adam(learning_rate=t.learning_rate)
    model.compile(optimizer=opt, loss=loss_for(t.loss), metrics=[mask_iou, mask_f1])
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


CALIBRATION = "calibration"  # the model file's member holding what calibration chose


def _read_members(path) -> tuple[dict, dict | None, list[np.ndarray]]:
    """(the config training wrote, what calibration chose or None, the weights) of a model
    file; ModelError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as z:
            config = json.loads(str(z["config"]))
            chosen = json.loads(str(z[CALIBRATION])) if CALIBRATION in z.files else None
            weights = [z[k].astype(np.float32) for k in sorted(k for k in z.files if k[0] == "w")]
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{path}: not a readable nucseg model file ({type(err).__name__}: "
                         f"{err})") from None
    missing = [k for k in ("backbone", "targets") if k not in config]
    if missing:
        raise ModelError(f"{path}: model config lacks {', '.join(missing)}; not a nucseg model "
                         f"file")
    _check_keys(path, config, chosen)
    return config, chosen, weights


def _check_keys(path, config: dict, chosen: dict | None) -> None:
    """ModelError naming the settings of a model file that this nucseg does not know (a file
    of a newer nucseg, or edited by hand): read silently, they would be ignored."""
    pp = {core_settings.config_key(f.name)
          for f in dataclasses.fields(postprocessing.methods.PostprocessSettings)}
    known = set(MODEL_KEYS) | set(RECORD_KEYS) | pp
    unknown = sorted(set(config) - known)
    unchosen = sorted(set(chosen or {}) - pp)
    if unknown or unchosen:
        names = ", ".join(map(repr, unknown + unchosen))
        raise ModelError(f"{path}: unknown setting(s) {names} in the model file's "
                         f"{'config' if unknown else 'calibration'}; this nucseg knows "
                         f"{', '.join(sorted(known))}. A model file of a newer nucseg? "
                         f"Update nucseg (pip install -U)")


def read_model_file(path) -> tuple[dict, list[np.ndarray]]:
    """(config, weights) of a model file: the config is what training wrote with what
    calibration chose on top (:func:`read_calibration`), the settings the model runs with."""
    config, chosen, weights = _read_members(path)
    return {**config, **(chosen or {})}, weights


def read_calibration(path) -> dict | None:
    """What ``nucseg publish`` chose on the validation images for a model file, kept apart
    from the config training wrote (as StarDist keeps ``thresholds.json`` beside
    ``config.json``); None for a file never calibrated, or calibrated before the two were
    kept apart (its config then holds the choice)."""
    return _read_members(path)[1]


def read_training_config(path) -> dict:
    """The config training wrote into a model file, without what calibration chose."""
    return _read_members(path)[0]


def _rewrite(path, config: dict, chosen: dict | None) -> None:
    """Write a model file's config and calibration again, its weights untouched, atomically."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in ("config", CALIBRATION)}
    if chosen is not None:
        arrays[CALIBRATION] = np.array(json.dumps(chosen))
    with runs.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, config=np.array(json.dumps(config)), **arrays)


def update_config(path, **fields) -> dict:
    """Rewrite the config training wrote into a saved model with ``fields`` (weights and
    calibration untouched), atomically; the config as the model now runs."""
    config, chosen, _ = _read_members(path)
    _rewrite(path, {**config, **fields}, chosen)
    return {**config, **fields, **(chosen or {})}


def save_calibration(path, chosen: dict) -> dict:
    """Keep ``chosen`` (post-processing settings, by their config keys) as a model file's
    calibration, apart from its training config; the config as the model now runs."""
    config, _, _ = _read_members(path)
    _rewrite(path, config, dict(chosen))
    return {**config, **chosen}


def read_config(path) -> dict:
    """The config saved with a model (what it predicts, how to pre- and post-process)."""
    return read_model_file(path)[0]


class NucleusModel:
    """A trained nucleus segmenter: its network, its settings and the engine that runs it.

    The one object the command line, the notebooks, the model package and the benchmarks use::

        model = NucleusModel.load()                      # the committed cpu model
        labels, details = model.predict_instances(image)

    ``settings`` (a :class:`ModelSettings`) says how it pre- and post-processes (what the
    functions of :mod:`nucseg_utils.inference` read), ``config`` the same as the plain dict
    saved in the model file, ``engine`` the registered engine
    (:mod:`nucseg_utils.model.engines`) that runs its forward passes, ``keras`` the network
    itself (built when first asked for, if the engine did not need it)."""

    def __init__(self, network, config: dict, engine: str | None = None, path=None,
                 _forward=None, overrides: dict | None = None):
        self._network = network  # Keras, or engines.Deferred
        self.config = dict(config)
        self.overrides = dict(overrides or {})  # what with_settings changed of the file's
        self.settings = ModelSettings.from_config(self.config)
        self.path = Path(path) if path else None
        if _forward is None:
            _forward = engines.build(network, engine)
        self._forward, self.engine = _forward

    @classmethod
    def load(cls, path=None, engine: str | None = None) -> "NucleusModel":
        """Rebuild a saved model: a model file, or the name of a committed one
        (:func:`model_file`); ModelError names the file when it cannot be used. ``engine``:
        None is ``$NUCSEG_ENGINE``, else ``auto``."""
        path = model_file(path)
        config, weights = read_model_file(path)
        network, forward = _built(path, config, weights, engines.resolve(engine))
        return cls(network, config, path=path, _forward=forward)

    def with_settings(self, **changes) -> "NucleusModel":
        """The same network and engine with other settings: a calibrated threshold, or what a
        user turns on a failing image (``threshold``, ``min_size``, ``exclude_border`` of
        :class:`nucseg_utils.postprocessing.PostprocessSettings`; ``diameter``, the nuclei's
        size in native pixels, instead of the size probe). A ValueError names a setting no
        model has."""
        unknown = sorted(set(changes) - set(MODEL_KEYS) - set(USER_KEYS) - set(self.config))
        if unknown:
            raise ValueError(f"unknown model setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted({*MODEL_KEYS, *USER_KEYS}))}")
        return NucleusModel(self._network, {**self.config, **changes}, path=self.path,
                            _forward=(self._forward, self.engine),
                            overrides={**self.overrides, **changes})

    @property
    def keras(self):
        """The Keras network (TensorFlow), built now if it was not."""
        return engines.network_of(self._network)

    @property
    def fingerprint(self) -> str | None:
        return runs.file_fingerprint(self.path) if self.path else None

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The engine's forward pass: normalised (N, H, W, 3) -> probabilities (N, H, W, C)."""
        return self._forward(batch)

    def predict_probabilities(self, image: np.ndarray, tta: bool | None = None,
                              spread: bool = False):
        """Probabilities (H, W, n_targets) at native size for one image as read by
        :func:`read_image` or :mod:`nucseg_utils.data` (grey or colour, any dtype): normalised
        as the model was trained, rescaled to its nucleus size, predicted (with the 8-fold TTA
        when ``tta``, default the model's setting), rounded to float16 precision (as stored, so
        every path scores the same numbers). The one place every command and notebook
        predicts an image. With ``spread``: (that map, the pixel-wise spread of the TTA
        variants' nucleus probability, zero without TTA)."""
        tta = self.settings.tta if tta is None else bool(tta)
        img = normalize(to_rgb_float(image), self.settings.normalization)
        if not spread:
            prob = predict_scaled(self, img, self.settings, tta=tta)
            return prob.astype(np.float16).astype(np.float32)
        prob, steps = predict_scaled(self, img, self.settings, tta=tta, return_steps=True)
        return prob.astype(np.float16).astype(np.float32), steps["spread"]

    def postprocess(self, prob: np.ndarray, method: str | None = None) -> np.ndarray:
        """The label image of one probability map, post-processed as the settings say
        (``method``, a name of :data:`nucseg_utils.postprocessing.METHODS`, overrides their
        ``postprocess``)."""
        return postprocessing.postprocess_as(prob, self.config, method)

    def predict_instances(self, image: np.ndarray, tta: bool | None = None,
                          method: str | None = None) -> tuple[np.ndarray, dict]:
        """(labels, details) for one image: ``labels`` an (H, W) image, 0 the background and
        1..N one nucleus each (the same as :meth:`postprocess` of
        :meth:`predict_probabilities`); ``details`` the ``probabilities``, the TTA variants'
        ``spread``, the post-processing ``method``, its intermediate ``steps`` (foreground,
        seeds, watershed, ...), the ``settings`` it ran with, and the image's ``quality``
        (:func:`nucseg_utils.inference.quality.image_quality`: a score in [0, 1] without
        ground truth, and ``check``, whether to look at this image)."""
        prob, spread = self.predict_probabilities(image, tta, spread=True)
        pp = postprocessing.settings(self.config)
        name = method or pp["postprocess"]
        steps = postprocessing.get_method(name).steps_of(prob, pp)
        labels = postprocessing.finish(steps["labels"], prob, pp)
        return labels, {"probabilities": prob, "spread": spread, "method": name,
                        "steps": steps, "settings": {**pp, "postprocess": name},
                        "quality": image_quality(prob, spread, labels,
                                                 lambda p: self.postprocess(p, name))}

    def __repr__(self) -> str:
        s = self.settings
        return (f"NucleusModel({self.path or 'in memory'}: {s.backbone} U-Net, outputs "
                f"{'+'.join(s.targets)}, post-processing {s.postprocessing.method}, "
                f"engine {self.engine})")


# networks built this process, by their architecture, weights and engine: a model file loaded
# again (publishing and the notebooks load one model several times, its calibrated settings
# rewritten in between) reuses its network and its engine's conversion (seconds each)
_BUILT: collections.OrderedDict = collections.OrderedDict()
_BUILT_KEPT = 2
# part of the key under which an engine keeps a conversion on disk (engines.cache_dir): change
# it when build_model makes another graph of the same settings and weights
GRAPH_VERSION = 1


def _built(path, config: dict, weights: list, engine: str):
    """(Keras network, (forward, engine name)) for a model file's architecture and weights on
    ``engine``: built once per process, the last :data:`_BUILT_KEPT` kept. The network is
    :class:`~nucseg_utils.model.engines.Deferred`: an engine that finds its conversion in its
    cache never builds it."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([config.get(k) for k in ("backbone", "decoder_filters",
                                                        "targets")]).encode())
    for w in weights:
        digest.update(str(w.shape).encode())
        digest.update(np.ascontiguousarray(w).tobytes())
    key = (digest.hexdigest(), engine)
    if key not in _BUILT:
        network = engines.Deferred(lambda: _rebuild(path, config, weights))
        _BUILT[key] = (network, engines.build(network, engine,
                                              cache_as=f"{key[0]}-g{GRAPH_VERSION}"))
        while len(_BUILT) > _BUILT_KEPT:
            _BUILT.popitem(last=False)
    _BUILT.move_to_end(key)
    return _BUILT[key]


def fresh_network(path=None):
    """A new Keras network, with its weights, of a model file (or the name of a committed
    model, :func:`model_file`): the caller's own, to change freely (the network of
    :meth:`NucleusModel.load` is shared by every load of the file in this process).
    ModelError names the file when it cannot be built."""
    path = model_file(path)
    config, weights = read_model_file(path)
    return _rebuild(path, config, weights)


def _rebuild(path, config: dict, weights: list):
    """The Keras network a model file describes, with its weights (ModelError naming the
    file when they do not fit)."""
    try:
        network = build_model(config)
    except Exception as err:  # noqa: BLE001 - e.g. an unknown backbone name in the config
        raise ModelError(f"{path}: cannot build the model its config describes "
                         f"({type(err).__name__}: {err})") from None
    expected = [w.shape for w in network.get_weights()]
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
    network.set_weights(weights)
    return network
