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
  from the history (best epoch, whether validation was still improving).
"""
from __future__ import annotations

import math

import numpy as np

from . import profiles as profiles_mod

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
    :func:`nucseg_utils.profiles.describe` has a description."""
    import pandas as pd
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
        rows.append(row)
    return pd.DataFrame(rows, columns=["parameter", "key", *names])


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
    import pandas as pd
    from .model import tf_setup
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
def example_batch(split, profile: dict, ids, seed: int = 0) -> dict:
    """One training batch drawn from the images ``ids`` of ``split`` as training draws it:
    normalised, each image magnified by its factor to the standard nucleus size, an
    augmented patch per sample, the targets computed from the transformed labels.

    Returns ``x`` (B, S, S, 3), ``y`` (B, S, S, targets), ``scales`` (the factor of each image)
    and ``notes`` (one short title per patch: image id and factor)."""
    from .augmentation import PatchSampler
    from .preprocessing import normalize
    ids = list(ids)
    samples = [split.sample(i) for i in ids]
    images = [normalize(s.image, profile["normalization"]) for s in samples]
    labels = [s.labels.astype(np.int32) for s in samples]
    n = len(ids)
    sampler = PatchSampler(images, labels, {**profile, "batch_size": n, "seed": seed})
    # one patch per image, in order, so each patch can be named by its image
    rng = np.random.default_rng([seed, 0])
    from .augmentation import sample_patch
    from .preprocessing import make_targets
    xs, ys = [], []
    for i in range(n):
        img, lab = sample_patch(rng, sampler.images[i], labels[i], profile,
                                scale=sampler.scales[i])
        xs.append(img)
        ys.append(make_targets(lab, profile["targets"]))
    return {"x": np.stack(xs), "y": np.stack(ys), "ids": ids, "scales": sampler.scales,
            "notes": [f"{i[:6]} x{f:.2f}" for i, f in zip(ids, sampler.scales)]}


def batch_loss(models: dict, x, y, profile: dict):
    """The loss a profile trains with, and its terms, on one batch, for each of
    ``models`` ({name: Keras model}); one row per model. Columns: binary cross-entropy and
    Jaccard loss (1 - soft IoU) over all target channels, their sum or the Jaccard loss
    alone as the profile's ``loss`` says, and the nucleus-mask IoU at 0.5."""
    import pandas as pd
    import segmentation_models as sm
    from .model import _mask_iou, tf_setup
    tf = tf_setup()
    yt = tf.constant(np.asarray(y, np.float32))
    rows = []
    for name, model in models.items():
        yp = model(np.asarray(x, np.float32), training=False)
        bce = float(sm.losses.BinaryCELoss()(yt, yp))
        jac = float(sm.losses.JaccardLoss()(yt, yp))
        total = bce + jac if profile["loss"] == "bce_jaccard" else jac
        rows.append({"model": name, "binary cross-entropy": bce, "Jaccard loss": jac,
                     f"loss ({profile['loss']})": total,
                     "mask IoU at 0.5": float(_mask_iou(yt, yp))})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- schedule
def lr_schedule(profile: dict, root=None, history=None, steps_per_epoch: int | None = None):
    """The learning rate at every step (:func:`nucseg_utils.training.learning_rate`):
    columns step, epoch, lr. The steps per epoch come from the profile; for a profile that
    makes one pass over its images per epoch (the paper's), from ``steps_per_epoch``, the
    ``history`` (its ``step`` column) or the number of training images under ``root``."""
    import pandas as pd
    from .training import learning_rate, split_ids
    steps = profile.get("steps_per_epoch") or steps_per_epoch
    if not steps and history is not None and "step" in history and len(history):
        steps = int(history["step"].iloc[0])
    if not steps and root is not None:
        from . import data as data_mod
        ids = [i for s in profile["train_splits"] for i in data_mod.open_split(s, root).ids]
        from .profiles import split_seed
        train, _ = split_ids(ids, profile["val_fraction"], split_seed(profile))
        steps = max(1, math.ceil(len(train) / profile["batch_size"]))
    steps = int(steps or 1)
    total = steps * int(profile["epochs"])
    step = np.arange(total)
    return pd.DataFrame({"step": step + 1, "epoch": step // steps + 1,
                         "lr": [learning_rate(profile, int(s), total) for s in step]})


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


def history_markdown(history) -> str:
    """Two or three sentences on the curves, every number read from ``history``."""
    r = read_history(history)
    text = (f"Validation loss was lowest at **epoch {r['best_epoch']} of {r['epochs']}** "
            f"({r['best_val_loss']:.4f}, validation IoU {r['best_val_iou']:.3f}); that "
            f"checkpoint is the model the next notebooks use. ")
    if r["still_improving"]:
        text += (f"Validation was **still improving** at the end (over the last "
                 f"{r['window']} epochs it went from {r['window_start_val_loss']:.4f} to "
                 f"{r['last_val_loss']:.4f}): more epochs would probably have helped. ")
    else:
        text += (f"Validation had **stopped improving**: the last epoch ended at "
                 f"{r['last_val_loss']:.4f}, above the best; more epochs of this schedule "
                 f"would not have helped. ")
    if r["minutes"] == r["minutes"]:
        text += f"Training took {r['minutes']:.0f} minutes."
    return text
