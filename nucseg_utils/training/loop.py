"""Training: data split, the training loop, checkpoints, history, resume.

In: a recipe (:class:`~nucseg_utils.core.settings.Recipe`, or a profile's flat dict, read
once into one: an unknown or missing setting is named), a data root and a run folder.
Out, in the run folder (:class:`nucseg_utils.core.runs.RunLayout`): ``model.npz`` (the best epoch by
validation loss, float16 weights + config, with the training splits), ``checkpoint.npz`` (last
epoch, float32 weights + optimizer state, for ``--resume``), ``history.csv`` (one row per
epoch), ``split.csv`` (which image went where, with each image's modality and type),
``train.log`` and ``run.json`` (profile, seed, versions, data fingerprint, wall time, the
validation images per type). Training is the only writer of ``run.json``.

The profile's ``train_labels`` says which masks of stage1_train it learns from and is judged
on (original or fixed, :mod:`nucseg_utils.data`; the data fingerprint is the fixed zip's when
fixed), its ``split_by`` how the validation images are drawn (:func:`split_ids`).

Every file is written under a temporary name and renamed, so an interrupted run leaves the last
complete checkpoint behind, and ``resume=True`` continues from it with a continuous history: the
augmentation stream is a function of (seed, step), so the resumed run sees the batches the
uninterrupted run would have seen. A run is only resumed with the profile, seed and data it was
started with (``epochs`` and ``checkpoint_every`` may change); anything else, or a checkpoint
whose ``run.json`` does not say what it was trained with, is refused with a ModelError naming
what differs: it never silently continues. A training that does not resume (no checkpoint, or
``resume=False``) starts afresh: the previous model, checkpoint and history are removed and
``run.json`` is written anew, so nothing of an earlier training survives into its record.

Three profile keys serve the paper profile on a Colab T4 (neutral in ``cpu`` and ``smoke``,
whose training is what it was):

- ``micro_batch``: the batch of ``batch_size`` is cut into micro-batches of that many images;
  their gradients are averaged (weighted by size) and applied once (:class:`AccumulatingStep`),
  so the effective batch stays ``batch_size`` while memory holds one micro-batch. None (or
  ``batch_size``): Keras' ``train_on_batch``, as before.
- ``mixed_precision``: build and train in ``mixed_float16`` (float32 output and loss, dynamic
  loss scaling) when TensorFlow sees a GPU; on a CPU it is ignored, and the log says so. The
  loss scale is not part of the checkpoint: a resumed run starts it again (at 2**15), and it
  adapts within a few steps.
- ``checkpoint_every``: the full checkpoint (float32 weights + optimizer state) is written
  every that many epochs and after the last one; ``model.npz`` whenever validation improves,
  ``history.csv`` every epoch. With ``sync_to`` (or the ``NUCSEG_SYNC_DIR`` variable, which the
  Colab runner sets to the run's folder on Drive) the run folder's training files are copied
  there, atomically, right after each checkpoint (:func:`nucseg_utils.core.mirror.sync_run`).

Progress: a tqdm bar when ``progress``; and one line per epoch on stdout as well as in
``train.log`` when stdout is not a terminal (a notebook, papermill, a log file).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from nucseg_utils import data as data_mod
from nucseg_utils import model as model_mod
from nucseg_utils.core import mirror, runs
from nucseg_utils.core.profiles import (
    BALANCE_BY,
    SPLIT_BY,
    TRAIN_LABELS,
    SettingsError,
    check_targets,
    complete,
    micro_batches,
)
from nucseg_utils.core.progress import progress as progress_bar
from nucseg_utils.core.settings import Recipe, RecipeError, recipe_of
from nucseg_utils.evaluation import image_types
from nucseg_utils.inference.preprocessing import NORMALIZATIONS, normalize
from nucseg_utils.model.network import ModelError, mask_f1, mask_iou
from nucseg_utils.postprocessing.methods import METHODS
from nucseg_utils.training.augmentation import (
    PatchSampler,
    modality_weights,
    prefetch,
    validation_set,
)

__all__ = [
    "AccumulatingStep", "MIN_VAL_PER_TYPE", "RESUMABLE_CHANGES", "build_training_model",
    "check_resume", "checkpoint_due", "learning_rate", "load_checkpoint", "load_training_data",
    "log", "obtain_model", "save_checkpoint", "split_ids", "start_afresh", "train",
    "training_labels", "use_mixed_precision"
]

log = logging.getLogger("nucseg.training")


# the fewest validation images a type gets in a split by type (at most half of its images)
MIN_VAL_PER_TYPE = 12


def split_ids(ids, val_fraction: float, seed: int, types: dict | None = None):
    """Deterministic train/validation split of image ids (sorted first, then shuffled).

    ``types`` ({id: image type}, :mod:`nucseg_utils.evaluation.image_types`) stratifies it: each type
    gives ``val_fraction`` of its images, at least :data:`MIN_VAL_PER_TYPE`, at most half of
    them (a type of one image gives none; when every type has one image, the split is drawn
    at random), by a generator of its own (seeded by ``seed`` and the type's name), so that
    the draw of one type does not depend on the others. Over stage1_train at 0.1 (seed 42):
    42 fluorescence small nuclei, 13 large, 8 grey tissue (of 16), 12 purple tissue and 2
    pink-and-purple H&E (of 4), 77 images; the random split of the committed model (seed 42)
    holds 38, 13, 2, 13 and 1, 67 images."""
    if types is not None:
        return _split_by_type(ids, val_fraction, seed, types)
    ids = sorted(ids)
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(ids))
    n_val = int(round(len(ids) * val_fraction))
    if len(ids) > 1:
        n_val = min(max(n_val, 1), len(ids) - 1)
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def _split_by_type(ids, val_fraction: float, seed: int, types: dict):
    ids = sorted(ids)
    missing = [i for i in ids if i not in types]
    if missing:
        raise ValueError(f"no image type for {len(missing)} id(s), e.g. '{missing[0]}'")
    train, val = [], []
    for name in sorted({types[i] for i in ids}):
        group = [i for i in ids if types[i] == name]
        n_val = min(max(int(round(len(group) * val_fraction)), MIN_VAL_PER_TYPE),
                    len(group) // 2)
        rng = np.random.default_rng([seed, 2, zlib.crc32(name.encode())])
        order = rng.permutation(len(group))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    if not val and len(ids) > 1:  # every type has one image: nothing to stratify
        return split_ids(ids, val_fraction, seed)
    return sorted(train), sorted(val)


def _removed_ids(split_name: str, root, fixed_ids) -> list[str]:
    """The ids of :data:`nucseg_utils.data.FIXED_REMOVED` that the split's original labels
    hold and its fixed labels do not: all of them when only the fixed labels are there (the
    DSB2018 set is the only one with fixed labels), none for a set whose original split does
    not hold them (a synthetic one)."""
    removed = [i for i in data_mod.FIXED_REMOVED.get(split_name, ()) if i not in set(fixed_ids)]
    try:
        original = data_mod.open_split(split_name, root)
    except data_mod.DataError:
        return removed
    try:
        return [i for i in removed if i in set(original.ids)]
    finally:
        original.close()


def training_labels(profile: dict) -> str:
    """The profile's ``train_labels`` ("original" for a run recorded before the key)."""
    return complete(profile)["train_labels"]


def load_training_data(recipe: Recipe | dict, root=None, progress: bool = True):
    """Read the recipe's training splits; returns (table, samples) with a 'subset' column
    (train / val) decided by :func:`split_ids` over all images of the training splits, and
    each image's ``modality`` and ``type`` (:func:`nucseg_utils.evaluation.image_types.image_type`, its
    nucleus scale from its labels).

    stage1_train is read with the recipe's ``train_labels``. With the fixed labels the six
    images they leave out (:data:`nucseg_utils.data.FIXED_REMOVED`) still take part in the
    draw of the split and are then dropped, so that a run on the fixed labels holds out the
    same images as a run on the original labels, less those removed; ``split_by`` "type"
    stratifies the draw by image type."""
    t = recipe_of(recipe).training
    labels = t.train_labels
    samples, rows, absent = [], [], {}
    for split_name in t.train_splits:
        variant = data_mod.labels_for(split_name, labels)
        split = data_mod.open_split(split_name, root, labels=variant)
        for s in data_mod.load_samples(split, progress=progress):
            samples.append(s)
            rows.append({"id": s.id, "split": split_name,
                         "modality": data_mod.modality_of(s.image),
                         "type": image_types.image_type(s.image, s.labels)})
        if variant == "fixed":
            absent.update({i: image_types.FIXED_REMOVED_TYPES[i]
                           for i in _removed_ids(split_name, root, split.ids)})
        split.close()
    table = pd.DataFrame(rows)
    pool = {**dict(zip(table["id"], table["type"])), **absent}
    train, val = split_ids(list(pool), t.val_fraction, t.split_draw_seed(),
                           types=pool if t.split_by == "type" else None)
    table["subset"] = np.where(table["id"].isin(set(val)), "val", "train")
    return table, samples


def learning_rate(recipe: Recipe | dict, step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total``: constant, or the cosine schedule (a linear
    warm-up over the first 2 % of the steps, then half a cosine down to 0)."""
    t = recipe_of(recipe).training
    lr = t.learning_rate
    if t.lr_schedule == "constant":
        return lr
    warm = max(1, total // 50)
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


# what may differ between a run and its resumption: neither changes what is learnt
RESUMABLE_CHANGES = ("epochs", "checkpoint_every", "size_probe")  # size_probe: prediction only


def _optimizer_vars(model):
    return list(model.optimizer.variables)


def save_checkpoint(model, path, epoch: int, best: float):
    arrays = {f"w{i:03d}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"o{i:03d}": v.numpy() for i, v in enumerate(_optimizer_vars(model))})
    with runs.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, epoch=epoch, best=best, **arrays)


def load_checkpoint(model, path) -> tuple[int, float]:
    """Restore weights and optimizer state; ModelError naming the file if it cannot be."""
    try:
        with np.load(path) as z:
            weights = [z[k] for k in sorted(k for k in z.files if k[0] == "w")]
            opt_arrays = [z[k] for k in sorted(k for k in z.files if k[0] == "o")]
            epoch, best = int(z["epoch"]), float(z["best"])
        model.set_weights(weights)
    except Exception as err:  # noqa: BLE001 - unreadable, or weights of another model
        raise ModelError(f"{path}: cannot resume from this checkpoint ({type(err).__name__}: "
                         f"{err}); delete it to train from scratch") from None
    opt = model.optimizer
    opt.build(model.trainable_variables)
    variables = _optimizer_vars(model)
    if len(variables) != len(opt_arrays):
        raise ModelError(f"{path}: optimizer state does not fit this model")
    for v, a in zip(variables, opt_arrays):
        v.assign(a)
    return epoch, best


def check_resume(profile: dict, data_fingerprint: dict, run_dir) -> None:
    """Refuse to resume a run with another profile, seed, setting or other data than it was
    started with (only ``epochs`` and ``checkpoint_every`` may change), or when its
    ``run.json`` does not record them: the history would no longer describe one training."""
    layout = runs.RunLayout(run_dir)
    info = runs.read_json(layout.run_json) if layout.run_json.exists() else {}
    if not info.get("profile") or info.get("data_fingerprint") is None:
        raise ModelError(f"{layout.checkpoint}: {layout.run_json} does not record the profile "
                         f"and the data this checkpoint was trained with, so resuming it cannot "
                         f"be checked; train into a new folder (or delete the checkpoint to "
                         f"train this one from scratch)")
    # a run recorded before a key existed trained with the key's neutral value
    old = complete(info["profile"])
    new = complete(json.loads(json.dumps(profile, default=str)))
    what = []
    if old.get("name") != new.get("name"):
        what.append(f"profile: {old.get('name')!r} -> {new.get('name')!r}")
    what += [f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
             for k in sorted(set(old) | set(new))
             if k not in RESUMABLE_CHANGES + ("name",) and old.get(k) != new.get(k)]
    if info["data_fingerprint"] != data_fingerprint:
        what.append(f"data: {info.get('data')} (fingerprint {info['data_fingerprint']}) -> "
                    f"fingerprint {data_fingerprint}")
    if what:
        raise ModelError(f"{layout.checkpoint}: the run was started with other "
                         f"settings ({'; '.join(what)}); resume with the same ones (only epochs "
                         f"and checkpoint_every may change) or train into a new folder")


def start_afresh(run_dir) -> list[str]:
    """Remove what an earlier training left in ``run_dir`` that a new one would not replace at
    once (model, checkpoint, history); returns the names removed. ``run.json`` is rewritten by
    the new training."""
    layout = runs.RunLayout(run_dir)
    removed = []
    for path in (layout.checkpoint, layout.model, layout.history,
                 layout.history.with_suffix(".md")):
        if path.exists():
            path.unlink()
            removed.append(path.name)
    return removed


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (a notebook's, pytest's capture)."""

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _setup_logging(run_dir: Path, echo: bool = False):
    """Log to ``train.log``; with ``echo`` also to stdout (returns that handler)."""
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        if getattr(h, "_nucseg", False):
            log.removeHandler(h)
    fh = logging.FileHandler(runs.RunLayout(run_dir).train_log)
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    fh._nucseg = True
    log.addHandler(fh)
    if not echo:
        return None
    sh = _StdoutHandler(sys.stdout)
    sh.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    sh._nucseg = True
    log.addHandler(sh)
    return sh


def checkpoint_due(epoch: int, epochs: int, every=1, stopping: bool = False) -> bool:
    """Whether a full checkpoint follows ``epoch`` (counted from 1): every ``every`` epochs
    (None: every epoch), after the last one, and when the run stops early."""
    return epoch % max(1, int(every or 1)) == 0 or epoch == epochs or stopping


# --------------------------------------------------------------------------- paper on a GPU
class AccumulatingStep:
    """One optimizer step over a batch, computed in micro-batches (gradient accumulation).

    The gradients of each micro-batch, weighted by its share of the batch, are summed into
    variables beside the weights, then applied once with the model's optimizer, which is then
    the update of the whole batch for a loss that is a mean over images. Returns the logs of
    ``train_on_batch``: the loss (the same weighted mean) and the iou and f1 of the whole
    batch. Mixed precision: each micro-batch's loss is scaled and its gradients unscaled by the
    model's ``LossScaleOptimizer``, which skips the step (and lowers its scale) when any is not
    finite. Two differences from one big batch remain: batch normalisation sees micro-batches
    (its statistics, and the updates of its moving averages, are per micro-batch), and a loss
    computed over a whole batch, as segmentation_models' Jaccard is, is averaged over the
    micro-batches instead.
    """

    def __init__(self, model, micro_batch: int):
        import tensorflow as tf  # lazy: importing TensorFlow takes ~6 s
        self.tf, self.model, self.micro = tf, model, int(micro_batch)
        self.variables = list(model.trainable_variables)
        self.sums = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        opt = model.optimizer
        self.scaled = hasattr(opt, "get_scaled_loss") and hasattr(opt, "inner_optimizer")
        self._accumulate = tf.function(self._accumulate_fn)
        self._apply = tf.function(self._apply_fn)

    def _accumulate_fn(self, x, y, weight):
        tf, model = self.tf, self.model
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = model.compiled_loss(y, pred, regularization_losses=model.losses)
            target = model.optimizer.get_scaled_loss(loss) if self.scaled else loss
        grads = tape.gradient(target, self.variables)
        if self.scaled:
            grads = model.optimizer.get_unscaled_gradients(grads)
        for total, g in zip(self.sums, grads):
            if g is not None:
                total.assign_add(tf.cast(g, total.dtype) * weight)
        return loss, pred

    def _apply_fn(self):
        grads = [total.read_value() for total in self.sums]
        self.model.optimizer.apply_gradients(zip(grads, self.variables))
        for total in self.sums:
            total.assign(self.tf.zeros_like(total))

    def __call__(self, x, y) -> dict:
        tf = self.tf
        n = len(x)
        loss, preds = 0.0, []
        for i in range(0, n, self.micro):
            xb, yb = x[i:i + self.micro], y[i:i + self.micro]
            share = tf.constant(len(xb) / n, tf.float32)
            part, pred = self._accumulate(tf.constant(xb), tf.constant(yb), share)
            loss += part * share
            preds.append(pred)
        self._apply()
        pred = tf.concat(preds, 0)
        y = tf.constant(y, pred.dtype)
        return {"loss": float(loss), "iou": float(mask_iou(y, pred)),
                "f1": float(mask_f1(y, pred))}


def use_mixed_precision(recipe: Recipe | dict, tf=None) -> bool:
    """Whether this run trains in mixed_float16: asked for by the recipe, and a GPU present."""
    if not recipe_of(recipe).training.mixed_precision:
        return False
    tf = tf or __import__("tensorflow")  # lazy: importing TensorFlow takes ~6 s
    return bool(tf.config.list_physical_devices("GPU"))


def build_training_model(recipe: Recipe | dict, mixed: bool = False):
    """The recipe's U-Net, compiled. ``mixed``: built under the ``mixed_float16`` policy (its
    variables stay float32) with a float32 output, so the loss and the metrics are computed in
    float32 and Keras wraps the optimizer in a LossScaleOptimizer. The global policy is
    restored afterwards; the weights are those of the plain model, in the same order."""
    tf = model_mod.tf_setup()
    if not mixed:
        return model_mod.compile_model(model_mod.build_model(recipe), recipe)
    mp = tf.keras.mixed_precision
    before = mp.global_policy()
    mp.set_global_policy("mixed_float16")
    try:
        net = model_mod.build_model(recipe)
        out = tf.keras.layers.Activation("linear", dtype="float32", name="float32_output")(
            net.output)
        net = tf.keras.Model(net.input, out, name=net.name)
        return model_mod.compile_model(net, recipe)
    finally:
        mp.set_global_policy(before)


def train(profile: Recipe | dict, run_dir, root=None, resume: bool = False,
          progress: bool = True, stop_after_epoch: int | None = None, sync_to=None):
    """Train the recipe's model (a :class:`Recipe`, or a profile's flat dict) into
    ``run_dir``; returns the history DataFrame. Settings that cannot work are refused with a
    SettingsError naming them, before anything in ``run_dir`` is touched.

    ``stop_after_epoch`` ends the run early after that epoch, as an interruption would (used by
    the tests of ``resume``); a full checkpoint is written then. ``sync_to`` (default: the
    ``NUCSEG_SYNC_DIR`` environment variable, if set) is a folder, on Google Drive, that gets a
    copy of the training files after every full checkpoint.
    """
    recipe = _checked(profile)
    run_dir = Path(run_dir)
    t = recipe.training
    first = t.train_splits[0]  # missing data is named before TensorFlow is imported
    root = data_mod.find_data_root(root, first,
                                   labels=data_mod.labels_for(first, t.train_labels))
    fingerprint = {s: runs.file_fingerprint(p) for s in t.train_splits
                   for p in [Path(data_mod.open_split(
                       s, root, labels=data_mod.labels_for(s, t.train_labels)).source)]
                   if p.exists()}
    tf = model_mod.tf_setup()
    layout = runs.RunLayout(run_dir)
    resume = resume and layout.checkpoint.exists()
    if resume:
        check_resume(recipe.flat(), fingerprint, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    echo = _setup_logging(run_dir, echo=not _isatty(sys.stdout))
    if not resume:
        removed = start_afresh(run_dir)
        log.info("training from scratch%s", f" (removed the previous training's "
                 f"{', '.join(removed)})" if removed else "")
    try:
        return _train(tf, recipe, run_dir, root, fingerprint, resume, progress,
                      stop_after_epoch, sync_to)
    finally:
        if echo is not None:
            log.removeHandler(echo)


def _checked(profile: Recipe | dict) -> Recipe:
    """The recipe a training reads; settings that cannot work are refused (SettingsError,
    naming them) before anything in the run folder is touched."""
    try:
        recipe = recipe_of(profile, "the training profile")
        check_targets(recipe.network.targets)
    except (RecipeError, ValueError) as err:
        raise SettingsError(str(err)) from None
    net, t, method = recipe.network, recipe.training, recipe.postprocess.method
    if method in METHODS and METHODS[method].channels > len(net.targets):
        raise SettingsError(f"the profile's '{method}' post-processing needs "
                            f"{METHODS[method].channels} outputs; targets "
                            f"{','.join(net.targets)} give {len(net.targets)}")
    if net.normalization not in NORMALIZATIONS:
        raise SettingsError(f"unknown normalization '{net.normalization}'; choose one of "
                            f"{', '.join(NORMALIZATIONS)}")
    if net.normalization == "haematoxylin" and t.augmentation.stain:
        raise SettingsError("the stain augmentation works on colour images; with the "
                            "'haematoxylin' normalization stained images reach the network grey")
    for key, allowed in (("train_labels", TRAIN_LABELS), ("split_by", SPLIT_BY),
                         ("balance_by", BALANCE_BY)):
        if getattr(t, key) not in allowed:
            raise SettingsError(f"unknown {key} '{getattr(t, key)}'; choose one of "
                                f"{', '.join(allowed)}")
    return recipe


def _training_data(recipe: Recipe, layout, root, progress):
    """The training images as a patch sampler and the validation patches, from the recipe's
    splits (their train/validation table written to the run folder). Returns (sampler, x_val,
    y_val, number of training images, number of validation images, validation images per
    type)."""
    table, samples = load_training_data(recipe, root, progress=progress)
    runs.write_table(table, layout.split)
    val_types = table.loc[table["subset"] == "val", "type"].value_counts()
    val_by_type = {t: int(val_types.get(t, 0)) for t in image_types.TYPE_ORDER
                   if t in set(table["type"])}
    images = [normalize(s.image, recipe.network.normalization) for s in samples]
    labels = [s.labels.astype(np.int32) for s in samples]
    is_val = (table["subset"] == "val").to_numpy()
    tr = np.flatnonzero(~is_val)
    va = np.flatnonzero(is_val)
    t = recipe.training
    # balance_by "modality" or "type": a column of the table
    weights = modality_weights(table[t.balance_by].to_numpy()[tr], t.balance_modalities)
    stained = (table["modality"] == "stained").to_numpy()[tr]
    sampler = PatchSampler([images[i] for i in tr], [labels[i] for i in tr], recipe, weights,
                           stained)
    x_val, y_val = validation_set([images[i] for i in va], [labels[i] for i in va], recipe)
    return sampler, x_val, y_val, len(tr), len(va), val_by_type


def _training_model(tf, recipe: Recipe):
    """The compiled model and its training step (micro-batched when the recipe asks for
    it); returns (model, step function, whether mixed precision is used, micro-batches)."""
    t = recipe.training
    mixed = use_mixed_precision(recipe, tf)
    if t.mixed_precision and not mixed:
        log.info("mixed_precision: no GPU here, so training in float32 (float16 is slow on a CPU)")
    model = build_training_model(recipe, mixed)
    n_micro = micro_batches(t.batch_size, t.micro_batch)
    step_fn = (AccumulatingStep(model, t.micro_batch) if n_micro > 1 else
               lambda x, y: model.train_on_batch(x, y, return_dict=True))
    return model, step_fn, mixed, n_micro


def _resume_state(model, layout, resume):
    """(epochs done, best validation loss, history rows): the checkpoint's when resuming
    (train() has checked that it exists and fits), else a fresh start."""
    start_epoch, best = 0, float("inf")
    history: list[dict] = []
    if resume:
        start_epoch, best = load_checkpoint(model, layout.checkpoint)
        if layout.history.exists():
            history = pd.read_csv(layout.history).query("epoch <= @start_epoch").to_dict("records")
        log.info("resumed from epoch %d (best val_loss %.4f)", start_epoch, best)
    return start_epoch, best, history


def _log_plan(recipe: Recipe, n_train, n_val_patches, epochs, steps, n_micro, mixed, every,
              sync_to, val_by_type):
    t = recipe.training
    log.info("training %s on %d images (%d validation patches), %d epochs x %d steps",
             recipe.name or "custom", n_train, n_val_patches, epochs, steps)
    if n_micro > 1 or mixed or every > 1 or sync_to:
        log.info("batch %d in %d micro-batch(es) of %s, %s, full checkpoint every %d epoch(s)%s",
                 t.batch_size, n_micro, t.micro_batch or t.batch_size,
                 "mixed_float16" if mixed else "float32", every,
                 f", copied to {sync_to}" if sync_to else "")
    log.info("labels: %s; validation %s: %s", t.train_labels,
             "by type" if t.split_by == "type" else "at random",
             ", ".join(f"{k} {n}" for k, n in val_by_type.items()))


def _train_epoch(model, step_fn, batches, recipe, epoch, steps, total, bar) -> list[dict]:
    """One epoch's optimizer steps; returns the logs of each step."""
    logs = []
    for k in range(steps):
        step = epoch * steps + k
        model.optimizer.learning_rate.assign(learning_rate(recipe, step, total))
        x, y = next(batches)
        logs.append(step_fn(x, y))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{logs[-1]['loss']:.3f}", iou=f"{logs[-1]['iou']:.3f}")
    return logs


def _history_row(logs, val, recipe, epoch, steps, total, seconds) -> dict:
    """The history row of an epoch: the means of its steps' logs and the validation scores."""
    return {"epoch": epoch + 1, "step": (epoch + 1) * steps,
            "loss": float(np.mean([l["loss"] for l in logs])),
            "iou": float(np.mean([l["iou"] for l in logs])),
            "f1": float(np.mean([l["f1"] for l in logs])),
            "val_loss": float(val["loss"]), "val_iou": float(val["iou"]),
            "val_f1": float(val["f1"]),
            "lr": learning_rate(recipe, (epoch + 1) * steps - 1, total),
            "seconds": seconds}


def _sync(run_dir, sync_to) -> None:
    """Copy the run folder's training files to ``sync_to`` (Drive), logging what and how long."""
    t1 = time.time()
    copied = mirror.sync_run(run_dir, sync_to, mirror.TRAINING_FILES)
    log.info("copied %s to %s (%.0f s)", ", ".join(copied) or "nothing new", sync_to,
             time.time() - t1)


def _record_end(run_dir, history, best, epochs) -> None:
    """What the training reached, in run.json."""
    done = len(history) == epochs
    runs.update_run_json(run_dir, train_seconds=history[-1]["seconds"] if history else 0.0,
                         best_val_loss=best, completed=done,
                         best_epoch=int(min(history, key=lambda r: r["val_loss"])["epoch"])
                         if history else None)


def _train(tf, recipe: Recipe, run_dir, root, fingerprint, resume, progress,
           stop_after_epoch, sync_to):
    t = recipe.training
    tf.keras.utils.set_random_seed(int(t.seed))
    layout = runs.RunLayout(run_dir)
    sampler, x_val, y_val, n_train, n_val, val_by_type = _training_data(recipe, layout, root,
                                                                        progress)
    steps = t.steps_per_epoch or max(1, math.ceil(n_train / t.batch_size))
    epochs = int(t.epochs)
    total = steps * epochs
    model, step_fn, mixed, n_micro = _training_model(tf, recipe)
    every = max(1, int(t.checkpoint_every or 1))
    if sync_to is None:
        sync_to = os.environ.get(mirror.SYNC_ENV) or None
    start_epoch, best, history = _resume_state(model, layout, resume)
    runs.update_run_json(  # a training that does not resume starts a new record
        run_dir, fresh=not resume, profile=recipe.flat(), seed=int(t.seed),
        data=str(Path(root).resolve()), dataset=data_mod.dataset_name(root),
        data_fingerprint=fingerprint,
        n_train=int(n_train), n_val=int(n_val), steps_per_epoch=steps, epochs=epochs,
        accumulation_steps=n_micro, mixed_precision_used=mixed, n_val_by_type=val_by_type)
    _log_plan(recipe, n_train, len(x_val), epochs, steps, n_micro, mixed, every, sync_to,
              val_by_type)

    bar = None
    if progress:
        bar = progress_bar(total=total, initial=start_epoch * steps, desc="train", unit="step")
    t_start = time.time()
    elapsed_before = float(history[-1]["seconds"]) if history else 0.0
    batches = prefetch(sampler, start_epoch * steps, total)
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        logs = _train_epoch(model, step_fn, batches, recipe, epoch, steps, total, bar)
        val = model.evaluate(x_val, y_val, verbose=0, return_dict=True,
                             batch_size=t.micro_batch or t.batch_size)
        row = _history_row(logs, val, recipe, epoch, steps, total,
                           elapsed_before + time.time() - t_start)
        history.append(row)
        improved = row["val_loss"] < best
        if improved:
            best = row["val_loss"]
            _save_best(model, layout, recipe, root, epoch, best)
        runs.write_table(pd.DataFrame(history), layout.history)
        stopping = (stop_after_epoch is not None and epoch + 1 >= stop_after_epoch
                    and epoch + 1 < epochs)
        checkpoint = checkpoint_due(epoch + 1, epochs, every, stopping)
        if checkpoint:
            save_checkpoint(model, layout.checkpoint, epoch + 1, best)
        log.info("epoch %d/%d loss %.4f iou %.3f val_loss %.4f val_iou %.3f %s(%.0f s)",
                 epoch + 1, epochs, row["loss"], row["iou"], row["val_loss"], row["val_iou"],
                 "best " if improved else "", time.time() - t0)
        if checkpoint and sync_to:
            _sync(run_dir, sync_to)
        if stopping:
            break
    if bar is not None:
        bar.close()
    _record_end(run_dir, history, best, epochs)
    return pd.DataFrame(history)


def _save_best(model, layout, recipe: Recipe, root, epoch: int, best: float) -> None:
    """``model.npz``: the network of the best epoch so far, with what the recipe keeps in a
    model file and the training's record."""
    model_mod.save_model(model, layout.model, recipe.flat(), epoch=epoch + 1, val_loss=best,
                         dataset=data_mod.dataset_name(root), profile=recipe.name,
                         train_splits=list(recipe.training.train_splits))


def obtain_model(profile: dict, run_dir, root, committed=None, retrain: bool = False,
                 progress: bool = True):
    """The model of a run: the committed one (copied into the run folder with its history, its
    training's ``run.json`` and its validation candidates) when there is one and ``retrain`` is off, else a model trained
    now (resuming the folder's checkpoint, if any, after :func:`check_resume`). Returns (model
    path, history DataFrame, how it was obtained). A folder holding a training of its own
    (``checkpoint.npz``) is not overwritten with the committed model: ModelError."""
    layout = runs.RunLayout(run_dir)
    if committed is not None and not retrain:
        committed = runs.RunLayout(committed)
        if layout.checkpoint.exists():
            raise ModelError(f"{layout.checkpoint}: this run folder holds a training of its own; "
                             f"retrain = True (`--retrain`) continues it, another run folder "
                             f"takes the committed model {committed.model}")
        for name in (layout.MODEL, layout.HISTORY, layout.RUN_JSON, layout.SPLIT,
                     layout.CANDIDATES):
            if (committed / name).exists():  # the committed model's own files, or none
                with runs.atomic_path(layout / name) as tmp:
                    shutil.copyfile(committed / name, tmp)
            elif (layout / name).exists():
                (layout / name).unlink()
        return (layout.model, pd.read_csv(layout.history),
                f"committed model {committed.root}")
    hist = train(profile, run_dir, root=root, resume=True, progress=progress)
    return layout.model, hist, f"trained now ({len(hist)} epochs)"
