"""Training, opened up: the pieces :func:`nucseg_utils.training.train` puts together, each
returned for inspection (notebook 03).

In: a profile, a built or loaded model, a few training images, a training history.
Out: tables and arrays, nothing written:

- :func:`profiles_table`: Table I, every parameter that differs between the profiles;
- :func:`network_summary`: the U-Net block by block (encoder, decoder, output head) with its
  parameters and the size of what each block hands on;
- :func:`example_batch`: one augmented batch and its targets, exactly as training draws it
  (the images rescaled to the standard nucleus size first);
- :func:`batch_loss`: the loss and its terms on that batch, for any model;
- :func:`lr_schedule`: the learning rate at every training step;
- :func:`read_history` and :func:`history_markdown`: what the training curves say, computed
  from the history (best epoch, whether validation was still improving), and what the lever
  table measured about training this recipe longer (:func:`training_lengths`).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from nucseg_utils import data as data_mod
from nucseg_utils.core import profiles as profiles_mod
from nucseg_utils.core.settings import Recipe, recipe_of
from nucseg_utils.evaluation import calibration
from nucseg_utils.inference.preprocessing import make_targets, normalize
from nucseg_utils.model.network import mask_iou, segmentation_models, tf_setup
from nucseg_utils.training.augmentation import PatchSampler, sample_patch
from nucseg_utils.training.loop import learning_rate, split_ids

# keys that describe the run rather than the method
_NOT_METHOD = {"name"}


def _fmt(key: str, value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return " + ".join(map(str, value)) if key != "scale_limits" else \
            f"{value[0]:g} to {value[1]:g}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def profiles_table(names=None):
    """Table I: one row per parameter whose value differs between the profiles ``names``
    (default: all), one column per profile, described in words where
    :func:`nucseg_utils.core.profiles.describe` has a description; with the ``paper`` profile,
    a column saying where its value comes from (:data:`nucseg_utils.core.profiles.PAPER_SOURCES`:
    stated in the paper, named there without its amounts, not stated, or this repository's)."""
    names = list(names or profiles_mod.PROFILES)
    profs = {n: profiles_mod.get_profile(n) for n in names}
    described = {n: dict(zip(profiles_mod.describe(p)["parameter"],
                             profiles_mod.describe(p)["value"])) for n, p in profs.items()}
    words = profiles_mod.DESCRIPTIONS
    keys = []
    for p in profs.values():
        keys += [k for k in p if k not in keys and k not in _NOT_METHOD]
    rows = []
    for key in keys:
        values = [profs[n].get(key) for n in names]
        if all(v == values[0] for v in values[1:]):
            continue
        row = {"parameter": words.get(key, key.replace("_", " ")), "key": key}
        for n in names:
            row[n] = (described[n][words[key]] if key in words
                      else _fmt(key, profs[n].get(key)))
        if "paper" in names:
            row["paper's value"] = profiles_mod.PAPER_SOURCE_WORDS[
                profiles_mod.PAPER_SOURCES.get(key, "unstated")]
        rows.append(row)
    columns = ["parameter", "key", *names] + (["paper's value"] if "paper" in names else [])
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- the network
_STEM = "encoder stem: 7x7 convolution, max-pooling"


def _block(name: str, current: tuple[int, str]) -> tuple[int, str]:
    """(order, block) of a layer of a segmentation_models U-Net, by its name; layers without
    a block in their name (paddings, additions) belong to the block of the layer before."""
    if name.startswith("decoder_stage"):
        k = int(name[len("decoder_stage")])
        return 10 + k, (f"decoder {k + 1}: upsample x2, join the skip connection (if any), "
                        f"2 convolutions")
    if name.startswith("stage"):
        k = int(name[len("stage")])
        return k, f"encoder {k}: residual blocks"
    if name in ("final_conv", "sigmoid") or name.startswith("final"):
        return 20, "output head: 3x3 convolution, one sigmoid per target"
    if name in ("bn1", "relu1"):
        return 4, "encoder 4: residual blocks"
    if name in ("data", "bn_data", "conv0", "bn0", "relu0", "pooling0"):
        return 0, _STEM
    return current


def network_summary(model, input_size: int = 128):
    """The network block by block: its layers, parameters, and the feature map it hands on
    for an ``input_size`` x ``input_size`` input (height x width x channels). The last row is
    the total."""
    tf = tf_setup()
    groups: dict[tuple[int, str], list] = {}
    current = (0, _STEM)
    for layer in model.layers[1:]:  # [0] is the input
        current = _block(layer.name, current)
        groups.setdefault(current, []).append(layer)
    order = sorted(groups)
    probe = tf.keras.Model(model.input, [groups[g][-1].output for g in order])
    outs = probe(np.zeros((1, input_size, input_size, 3), np.float32), training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    rows = []
    for g, out in zip(order, outs):
        shape = tuple(int(v) for v in out.shape[1:])
        rows.append({"block": g[1], "layers": len(groups[g]),
                     "parameters": int(sum(lay.count_params() for lay in groups[g])),
                     "output": f"{shape[0]} x {shape[1]} x {shape[2]}"})
    rows.append({"block": "total", "layers": len(model.layers) - 1,
                 "parameters": int(model.count_params()),
                 "output": f"{input_size} x {input_size} x {int(model.output.shape[-1])}"})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- one batch
def example_batch(split, profile: Recipe | dict, ids, seed: int = 0) -> dict:
    """One training batch drawn from the images ``ids`` of ``split`` as training draws it:
    normalised, each image magnified by its factor to the standard nucleus size, an
    augmented patch per sample, the targets computed from the transformed labels.

    Returns ``x`` (B, S, S, 3), ``y`` (B, S, S, targets), ``scales`` (the factor of each image)
    and ``notes`` (one short title per patch: image id and factor)."""
    recipe = recipe_of(profile)
    ids = list(ids)
    samples = [split.sample(i) for i in ids]
    images = [normalize(s.image, recipe.network.normalization) for s in samples]
    labels = [s.labels.astype(np.int32) for s in samples]
    n = len(ids)
    sampler = PatchSampler(images, labels, recipe.replace(batch_size=n, seed=seed))
    # one patch per image, in order, so each patch can be named by its image
    rng = np.random.default_rng([seed, 0])
    xs, ys = [], []
    for i in range(n):
        img, lab = sample_patch(rng, sampler.images[i], labels[i], recipe,
                                scale=sampler.scales[i])
        xs.append(img)
        ys.append(make_targets(lab, recipe.network.targets))
    return {"x": np.stack(xs), "y": np.stack(ys), "ids": ids, "scales": sampler.scales,
            "notes": [f"{i[:6]} x{f:.2f}" for i, f in zip(ids, sampler.scales)]}


def batch_loss(models: dict, x, y, profile: Recipe | dict):
    """The loss a profile trains with, and its terms, on one batch, for each of
    ``models`` ({name: Keras model}); one row per model. Columns: binary cross-entropy and
    Jaccard loss (1 - soft IoU) over all target channels, their sum or the Jaccard loss
    alone as the profile's ``loss`` says, and the nucleus-mask IoU at 0.5."""
    loss = recipe_of(profile).training.loss
    sm = segmentation_models()
    tf = tf_setup()
    yt = tf.constant(np.asarray(y, np.float32))
    rows = []
    for name, model in models.items():
        yp = model(np.asarray(x, np.float32), training=False)
        bce = float(sm.losses.BinaryCELoss()(yt, yp))
        jac = float(sm.losses.JaccardLoss()(yt, yp))
        total = bce + jac if loss == "bce_jaccard" else jac
        rows.append({"model": name, "binary cross-entropy": bce, "Jaccard loss": jac,
                     f"loss ({loss})": total,
                     "mask IoU at 0.5": float(mask_iou(yt, yp))})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- schedule
def lr_schedule(profile: Recipe | dict, root=None, history=None, steps_per_epoch: int | None = None):
    """The learning rate at every step (:func:`nucseg_utils.training.learning_rate`):
    columns step, epoch, lr. The steps per epoch come from the profile; for a profile that
    makes one pass over its images per epoch (the paper's), from ``steps_per_epoch``, the
    ``history`` (its ``step`` column) or the number of training images under ``root``."""
    recipe = recipe_of(profile)
    t = recipe.training
    steps = t.steps_per_epoch or steps_per_epoch
    if not steps and history is not None and "step" in history and len(history):
        steps = int(history["step"].iloc[0])
    if not steps and root is not None:
        ids = [i for s in t.train_splits for i in data_mod.open_split(s, root).ids]
        train, _ = split_ids(ids, t.val_fraction, t.split_draw_seed())
        steps = max(1, math.ceil(len(train) / t.batch_size))
    steps = int(steps or 1)
    total = steps * int(t.epochs)
    step = np.arange(total)
    return pd.DataFrame({"step": step + 1, "epoch": step // steps + 1,
                         "lr": [learning_rate(recipe, int(s), total) for s in step]})


# --------------------------------------------------------------------------- history
def read_history(history, window: int = 3) -> dict:
    """What a training history says: the best epoch by validation loss (the checkpoint that
    is kept), its losses, and whether validation was still improving at the end (the last
    epoch is the best, or the last ``window`` epochs lowered the validation loss)."""
    h = history.reset_index(drop=True)
    best = int(h["val_loss"].idxmin())
    last = len(h) - 1
    tail = h["val_loss"].iloc[max(0, last - window):].to_numpy()
    falling = bool(len(tail) > 1 and tail[-1] < tail[0])
    return {"epochs": int(len(h)), "best_epoch": int(h.loc[best, "epoch"]),
            "best_val_loss": float(h.loc[best, "val_loss"]),
            "best_val_iou": float(h.loc[best, "val_iou"]) if "val_iou" in h else math.nan,
            "train_loss_at_best": float(h.loc[best, "loss"]),
            "last_val_loss": float(h.loc[last, "val_loss"]),
            "first_val_loss": float(h.loc[0, "val_loss"]),
            "window": int(min(window, last)), "window_start_val_loss": float(tail[0]),
            "still_improving": bool(best == last or falling),
            "minutes": float(h["seconds"].iloc[-1]) / 60 if "seconds" in h else math.nan}


_CANDIDATE = "candidate, not published: "
_EPOCHS = re.compile(r"\b(\d+) epochs\b")
# a recipe's description up to its test-time augmentation; what follows (the post-processing
# and its threshold and dilation) is chosen on validation for each model by `nucseg publish`
_TRAINED = re.compile(r"^chosen recipe: (.*?(?:8-fold TTA|no TTA))")


def _recipe_key(lever: str):
    """(recipe with its number of epochs blanked, epochs) of a lever-table row that names a
    trained recipe, else None."""
    text = str(lever)
    text = text[len(_CANDIDATE):] if text.startswith(_CANDIDATE) else text
    trained, epochs = _TRAINED.match(text), _EPOCHS.search(text)
    if not trained or not epochs:
        return None
    return _EPOCHS.sub("N epochs", trained.group(1)), int(epochs.group(1))


# how much one training of the cpu recipe's validation DSB varies with its seed (three seeds,
# models/cpu/NOTES.md): differences within it are not read as a gain or a loss
SEED_SPREAD = 0.011
# the `nucseg train` options that change only how long a recipe trains, or where
_LENGTH_ONLY = {"--profile", "--out", "--epochs", "--resume", "--steps-per-epoch"}


def _same_recipe(command) -> bool:
    """Whether a lever-table row's ``nucseg train`` command trains its profile as it is, but
    for its length (a row trained with other options, e.g. ``--balance-by``, is another
    recipe)."""
    train = str(command).split("&&")[0].split()
    return all(t in _LENGTH_ONLY for t in train if t.startswith("--"))


def training_lengths(levers, profile: dict):
    """The rows of the lever table (``models/cpu/ablation.csv``: columns lever, validation_dsb,
    model, command) that trained the recipe of ``profile`` for some number of epochs, the same
    in everything else (network, seed, augmentation, scale, TTA, no other training option; the
    post-processing is calibrated per model). Columns: epochs, object filters (whether the
    row's post-processing had them: compare rows of the same kind only), validation DSB,
    model, published; sorted by epochs. Empty without a table or without such rows."""
    columns = ["epochs", "object filters", "validation DSB", "model", "published"]
    if levers is None or not len(levers):
        return pd.DataFrame(columns=columns)
    own = _recipe_key(calibration.recipe_name(profile, profile))
    rows = []
    for r in levers.to_dict("records"):
        key = _recipe_key(r["lever"])
        if own and key and key[0] == own[0] and _same_recipe(r.get("command", "")):
            rows.append({"epochs": key[1], "object filters": "dropped" in str(r["lever"]),
                         "validation DSB": float(r["validation_dsb"]), "model": r["model"],
                         "published": not str(r["lever"]).startswith(_CANDIDATE)})
    return pd.DataFrame(rows, columns=columns).sort_values(["epochs", "object filters"],
                                                           ignore_index=True)


def _lengths_sentence(lengths, epochs: int) -> str:
    """What the lever table says about training the same recipe for more than ``epochs``
    epochs, like for like (rows with the same object filters as the longer run's); "" when it
    has no such pair."""
    if lengths is None or not len(lengths):
        return ""
    longer = lengths[lengths["epochs"] > epochs]
    pairs = []
    for r in longer.to_dict("records"):
        mine = lengths[(lengths["epochs"] == epochs) &
                       (lengths["object filters"] == r["object filters"])]
        if len(mine):
            pairs.append((r, float(mine["validation DSB"].max())))
    if not pairs:
        return ""
    said = " and ".join(f"{int(r['epochs'])} epochs scored {r['validation DSB']:.4f} against "
                        f"{ref:.4f} for {epochs} epochs"
                        f"{' (both with the object filters)' if r['object filters'] else ' (both without the object filters)'}"
                        for r, ref in pairs)
    gain = max(r["validation DSB"] - ref for r, ref in pairs)
    verdict = ("training longer did help" if gain > SEED_SPREAD else
               "more epochs did **not** help (a difference within the "
               f"{SEED_SPREAD:.3f} that one training varies by with its seed)"
               if gain > -SEED_SPREAD else "more epochs did **not** help")
    return (f"But the lever table (`models/cpu/ablation.md`) also trained this recipe longer "
            f"and judged it on the validation DSB (the object score on whole images, which "
            f"chooses the recipe), like for like: {said}, so {verdict}. ")


def history_markdown(history, lengths=None) -> str:
    """Two or three sentences on the curves, every number read from ``history``; with
    ``lengths`` (:func:`training_lengths`), what the lever table measured about training the
    same recipe longer, which decides whether more epochs would have helped (a validation
    loss still falling at the end does not)."""
    r = read_history(history)
    text = (f"Validation loss was lowest at **epoch {r['best_epoch']} of {r['epochs']}** "
            f"({r['best_val_loss']:.4f}, validation IoU {r['best_val_iou']:.3f}); that "
            f"checkpoint is the model the next notebooks use. ")
    measured = _lengths_sentence(lengths, r["epochs"])
    if r["still_improving"]:
        text += (f"The validation loss was still falling at the end (over the last "
                 f"{r['window']} epochs it went from {r['window_start_val_loss']:.4f} to "
                 f"{r['last_val_loss']:.4f}). ")
        text += measured or ("Whether more epochs would have helped is not measured for "
                             "this recipe: a longer run judged on the validation DSB would "
                             "say (the lever table, `models/cpu/ablation.md`, does this for "
                             "the `cpu` recipe). ")
    else:
        text += (f"Validation had **stopped improving**: the last epoch ended at "
                 f"{r['last_val_loss']:.4f}, above the best. ") + measured
    if r["minutes"] == r["minutes"]:
        text += f"Training took {r['minutes']:.0f} minutes."
    return text
