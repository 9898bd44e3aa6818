"""Run profiles: the named recipes, each the ``cpu`` recipe (the typed defaults of
:mod:`nucseg_utils.core.settings`, written once there) with its changes.

In: a profile name (``paper``, ``cpu``, ``release``, ``smoke``) and optional overrides.
Out: the flat dict a run records, which training, prediction, post-processing, the notebooks'
parameters cells and the command line all read, checked against the typed settings
(:class:`~nucseg_utils.core.settings.Recipe`: an unknown or missing key is named).
``describe(profile)`` gives the Table I rows.

- ``paper``: the paper as published (U-Net, ResNet-152 encoder with ImageNet weights, whole
  images resized to 256x256, Jaccard loss, Adam, batch 32, 100 epochs, stage1_train +
  stage1_test split 70:30), for a Colab GPU. The paper names its augmentations but not their
  ranges; the ranges here are this repository's. Its batch of 32 is the *effective* batch:
  gradients are accumulated over micro-batches (``micro_batch``), in ``mixed_float16`` when a
  GPU is present (``mixed_precision``), with a full checkpoint every ``checkpoint_every``
  epochs (the memory and time estimate behind these: ``benchmarks/paper_profile_estimate.md``).
- ``cpu``: the recipe sized to train in about an hour on 2 CPU cores, trained on stage1_train
  only so that stage1_test stays an honest test set: a ResNet-18 encoder without pretrained
  weights, a narrow decoder, random crops of images rescaled so that their nuclei are about
  ``target_diameter`` px across (:mod:`nucseg_utils.inference.scale`), per-image percentile
  normalisation, colour and intensity augmentation, a second output for the zone where
  nuclei touch, BCE + Jaccard loss, cosine learning-rate decay. The post-processing is chosen
  on the validation images by ``nucseg publish`` (:mod:`nucseg_utils.evaluation.calibration`).
- ``release``: the ``cpu`` recipe for people's own images: it learns from every labelled
  stage-1 image (the fixed stage1_train labels and stage1_test), draws every image type
  equally often (``balance_by`` "type", power 1) and holds out validation images drawn by
  type (``split_by`` "type"). It has no untouched test set, so its numbers are validation
  numbers.
- ``smoke``: seconds; for the tests and a first read of the notebooks. Its numbers mean nothing.

What was measured on the way to these recipes (every lever tried, with its score and the
command that reproduces it) is in ``models/cpu/NOTES.md``, ``models/cpu/ablation.md`` and
``benchmarks/validation_study.md``, not here.

``split_seed`` draws the train/validation split, ``seed`` everything else (initial weights,
batches, augmentation), so that two trainings of one recipe with different seeds are judged
on the same validation images; runs recorded before the key existed (None) drew their split
with ``seed``, as ``Training.split_draw_seed`` says.

``train_labels`` chooses stage1_train's ground truth: ``original`` (Kaggle's masks) or
``fixed`` (the community-fixed masks, ``stage1_train_fixed.zip``; :mod:`nucseg_utils.data`).
``split_by`` chooses how the validation images are drawn: ``random`` (``val_fraction`` of all
images) or ``type`` (stratified by image type, :mod:`nucseg_utils.evaluation.image_types`, so
that every type has validation images to be scored on its own;
:func:`nucseg_utils.training.split_ids`).

``balance_modalities`` (a power) and ``balance_by`` (``modality`` or ``type``) set how often
each training image is drawn: with weight ``count(group) ** -power``, the group being the
image's modality (stained, brightfield, fluorescence) or its image type (with power 1 every
type is drawn equally often). All four are ``nucseg train`` options (``--train-labels``,
``--split-by``, ``--balance-modalities``, ``--balance-by``).

Three keys only the paper profile sets, neutral elsewhere: ``micro_batch`` (None: the whole
batch in one step, with ``train_on_batch``), ``mixed_precision`` (False) and
``checkpoint_every`` (1: a full checkpoint after every epoch). :data:`ADDED_KEYS` holds these
neutral values, segmentation_models' default ``decoder_filters``, ``train_labels``
``original``, ``split_by`` ``random`` and ``balance_by`` ``modality``; they stand for the keys
in runs recorded before they existed.
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from nucseg_utils.core.settings import LEGACY, Augmentation, Recipe, RecipeError

# the recipes, each the cpu recipe (the field defaults of nucseg_utils.core.settings) with the
# changes that make it
RECIPES: dict[str, Recipe] = {"cpu": Recipe()}
RECIPES["paper"] = RECIPES["cpu"].replace(
    "paper",
    backbone="resnet152",
    decoder_filters=[256, 128, 64, 32, 16],  # segmentation_models' default decoder
    encoder_weights="imagenet",
    input_mode="resize",           # whole image resized to input_size x input_size
    input_size=256,
    normalization="unit",          # pixel values / 255
    targets=["mask"],
    loss="jaccard",
    lr_schedule="constant",        # Keras' Adam, its default learning rate
    batch_size=32,                 # the effective batch: gradients of 4 micro-batches
    micro_batch=8,                 # ... of 8 are averaged, then applied once (fits a T4)
    mixed_precision=True,          # mixed_float16 when a GPU is present; ignored on a CPU
    checkpoint_every=20,           # full checkpoint (0.8 GB) every 20 epochs and the last
    epochs=100,
    steps_per_epoch=None,          # one pass over the training images
    train_splits=["stage1_train", "stage1_test"],
    val_fraction=0.3,
    balance_modalities=0.0,
    # named in the paper, its ranges chosen here: rotation in [-90, 90] degrees, shift 0.1 of
    # the size, shear 10 degrees, zoom in [0.9, 1.1], flips; no quarter turns, no colour
    augmentation=dataclasses.asdict(Augmentation(rotation=90.0, shift=0.1, shear=10.0,
                                                 zoom=0.1, dihedral=False, colour=False)),
    val_crops_per_image=1,
    postprocess="paper",
    target_diameter=None,          # images at native scale (resized whole, as the paper)
    size_probe=None)
RECIPES["smoke"] = RECIPES["cpu"].replace(
    "smoke", decoder_filters=[256, 128, 64, 32, 16], input_size=64, batch_size=4, epochs=2,
    steps_per_epoch=3, val_fraction=0.25, val_crops_per_image=1, size_probe=None)
# the cpu recipe on every labelled stage-1 image (see the module docstring)
RECIPES["release"] = RECIPES["cpu"].replace(
    "release", train_splits=["stage1_train", "stage1_test"], train_labels="fixed",
    split_by="type",
    # every image type drawn equally often (validation_study.md, section 4)
    balance_modalities=1.0, balance_by="type")
RECIPES = {name: RECIPES[name] for name in ("paper", "cpu", "smoke", "release")}

# each profile as the flat dict a run records (read-only: get_profile gives a copy to change)
PROFILES: dict[str, dict] = {name: {k: v for k, v in r.flat().items() if k != "name"}
                             for name, r in RECIPES.items()}
PAPER_AUGMENTATION = PROFILES["paper"]["augmentation"]
CROP_AUGMENTATION = PROFILES["cpu"]["augmentation"]

# Keys added after the first runs, with the values that keep the behaviour of before: what
# ``training.check_resume`` assumes for a run whose run.json does not record them.
ADDED_KEYS = LEGACY

TRAIN_LABELS = ("original", "fixed")  # stage1_train's masks (nucseg_utils.data.LABELS)
SPLIT_BY = ("random", "type")          # how the validation images are drawn
BALANCE_BY = ("modality", "type")      # the groups whose sizes set the sampling weights

TTA_VARIANTS = 8  # rotations 0/90/180/270, each with and without a flip

TARGETS = ("mask", "touching", "distance")  # the output channels a model can learn


def target_list(text: str) -> list[str]:
    """``--targets mask,touching,distance`` -> ["mask", "touching", "distance"]."""
    return check_targets([t.strip() for t in str(text).split(",") if t.strip()])


def check_targets(names: list[str]) -> list[str]:
    """``names`` if the post-processing can read them (it reads the channels by position: a
    prefix of :data:`TARGETS`); a ValueError naming the lists it can read otherwise."""
    if not names or list(names) != list(TARGETS[:len(names)]):
        raise ValueError(f"targets '{','.join(names)}': one of " + ", ".join(
            ",".join(TARGETS[:n]) for n in range(1, len(TARGETS) + 1)))
    return list(names)


def filter_list(text: str) -> list[int]:
    """``--decoder-filters 128,64,32,16,16`` -> [128, 64, 32, 16, 16]: five positive counts,
    one per decoder block (deepest first); a ValueError otherwise."""
    try:
        counts = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        counts = []
    if len(counts) != 5 or min(counts) < 1:
        raise ValueError(f"decoder filters '{text}': five positive whole numbers, one per "
                         f"decoder block, deepest first (e.g. 64,32,16,16,16)")
    return counts


def choice(key: str, allowed: tuple[str, ...]):
    """A parser of one of ``allowed`` for the option of ``key``: a ValueError naming them."""
    def parse(text: str) -> str:
        value = str(text).strip().lower()
        if value not in allowed:
            raise ValueError(f"{key.replace('_', '-')} '{text}': one of {', '.join(allowed)}")
        return value
    parse.__name__ = key
    return parse


# the profile values `nucseg train` can override (--epochs, --steps-per-epoch, ...), and their
# types; `--stain S` sets augmentation["stain"]
TRAIN_OPTIONS = {"epochs": int, "steps_per_epoch": int, "batch_size": int, "input_size": int,
                 "learning_rate": float, "seed": int, "backbone": str, "encoder_weights": str,
                 "targets": target_list, "normalization": str, "split_seed": int,
                 "decoder_filters": filter_list,
                 "train_labels": choice("train_labels", TRAIN_LABELS),
                 "split_by": choice("split_by", SPLIT_BY),
                 "balance_by": choice("balance_by", BALANCE_BY),
                 "balance_modalities": float}

# Where each value of the ``paper`` profile comes from, for Table I: "stated" in the paper
# (El Mokhtari, ULB: its text and its Table I); "named" where the paper names the step but not
# its amounts (the augmentation), chosen here; "unstated" where the paper says nothing and
# the usual default of the tools is taken; "ours" for what this repository adds to run the
# recipe at all (a Colab T4's memory, checkpoints, the validation crops). A key not listed is
# "unstated".
PAPER_SOURCES = {
    "backbone": "stated", "encoder_weights": "stated", "input_mode": "stated",
    "input_size": "stated", "normalization": "stated", "targets": "stated", "loss": "stated",
    "batch_size": "stated", "epochs": "stated", "steps_per_epoch": "stated",
    "train_splits": "stated", "val_fraction": "stated", "postprocess": "stated",
    "target_diameter": "stated", "train_labels": "stated", "tta": "stated",
    "augmentation": "named",
    "decoder_filters": "unstated", "lr_schedule": "unstated", "learning_rate": "unstated",
    "balance_modalities": "unstated", "split_by": "unstated",
    "micro_batch": "ours", "mixed_precision": "ours", "checkpoint_every": "ours",
    "val_crops_per_image": "ours", "balance_by": "ours", "size_probe": "ours",
}
PAPER_SOURCE_WORDS = {
    "stated": "stated in the paper",
    "named": "named in the paper; its amounts chosen here",
    "unstated": "not stated; the tools' usual default taken",
    "ours": "not in the paper: added here to run it (a Colab T4)",
}

DESCRIPTIONS = {
    "backbone": "encoder of the U-Net",
    "decoder_filters": "decoder filters per block (deepest first)",
    "encoder_weights": "encoder initialisation",
    "input_mode": "how images reach the network",
    "input_size": "network input (pixels)",
    "normalization": "intensity normalisation",
    "targets": "output channels",
    "loss": "loss",
    "learning_rate": "Adam learning rate",
    "lr_schedule": "learning-rate schedule",
    "batch_size": "batch size",
    "epochs": "epochs",
    "steps_per_epoch": "steps per epoch",
    "train_splits": "training data",
    "train_labels": "stage1_train labels",
    "val_fraction": "validation fraction",
    "split_by": "validation images drawn",
    "balance_modalities": "training images drawn",
    "augmentation": "augmentation",
    "tta": "test-time augmentation",
    "postprocess": "post-processing",
    "target_diameter": "nucleus size the images are rescaled to (px)",
    "size_probe": "scale of the first look at an image's nucleus size",
    "threshold": "nucleus probability threshold",
    "dilation": "final dilation of each nucleus (px)",
    "seed": "seed",
}


def complete(profile: dict) -> dict:
    """A profile, maybe as an older run recorded it, with every key: :data:`ADDED_KEYS`'
    values (and the post-processing's defaults) for the keys it lacks, its split seed resolved
    (``Training.split_draw_seed``). Two profiles that train alike are equal once completed. A
    :class:`ProfileError` names a key no setting has."""
    recipe = Recipe.from_flat(profile)
    full = recipe.flat()
    if "name" not in profile:
        full.pop("name", None)
    full["split_seed"] = recipe.training.split_draw_seed()
    return full


ProfileError = RecipeError  # an unknown profile, or an unknown or missing key (named)


class SettingsError(ValueError):
    """Settings that cannot train or predict together (named in the message)."""


def get_profile(name: str | dict = "cpu", **overrides) -> dict:
    """A profile as a flat dict (a copy to change): the recipe ``name`` (or a profile dict)
    with ``overrides`` applied; a :class:`ProfileError` names an unknown profile or key."""
    if isinstance(name, dict):
        recipe = Recipe.from_flat(name)
    elif name in RECIPES:
        recipe = RECIPES[name]
    else:
        raise ProfileError(f"unknown profile '{name}'; choose one of {', '.join(RECIPES)}")
    return recipe.replace(overrides.pop("name", None), **overrides).flat()


def train_command(profile: dict, out) -> str:
    """The `nucseg train` command that trains ``profile`` (a run's recorded profile) from
    today's profile of the same name: the options for the values that differ. A value no
    option sets, which differs, is named after the command (the run then needs that
    profile's code of the time)."""
    if profile.get("name") not in PROFILES:
        return f"nucseg train --out {out} (a profile of its own: see its run.json)"
    base = complete(get_profile(profile["name"]))
    prof = complete(profile)
    words = ["nucseg", "train", "--profile", profile["name"], "--out", str(out)]
    for key in TRAIN_OPTIONS:
        if prof.get(key) != base.get(key):
            value = "none" if prof.get(key) is None else prof.get(key)
            words += [f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float)
                      else ",".join(map(str, value)) if isinstance(value, list)
                      else str(value)]
    aug, base_aug = prof.get("augmentation") or {}, base.get("augmentation") or {}
    if aug.get("stain", 0) != base_aug.get("stain", 0):
        words += ["--stain", f"{aug.get('stain', 0):g}"]
    other = sorted(k for k in set(prof) | set(base) if k not in TRAIN_OPTIONS
                   and k not in ("name", "augmentation") and prof.get(k) != base.get(k))
    other += sorted(f"augmentation.{k}" for k in set(aug) | set(base_aug)
                    if k != "stain" and aug.get(k) != base_aug.get(k))
    return " ".join(words) + (f" (with the profile's {', '.join(other)} of its time)"
                              if other else "")


def describe(profile: dict):
    """Table I: the hyper-parameters of a profile as a two-column DataFrame."""
    rows = []
    for key, text in DESCRIPTIONS.items():
        v = profile.get(key)
        if key == "augmentation":
            a = v
            parts = [f"rotation ±{a['rotation']:g}°"]
            if a["shift"]:
                parts.append(f"shift {a['shift']:g}")
            parts += [f"shear {a['shear']:g}°", f"zoom ±{a['zoom']:g}"]
            if a["hflip"] or a["vflip"]:
                parts.append("flips")
            if a.get("dihedral"):
                parts.append("rot90")
            if a.get("colour"):
                parts.append("colour/intensity")
            if a.get("stain"):
                parts.append(f"stain ±{a['stain']:g} (stained tissue)")
            v = ", ".join(parts)
        elif key == "batch_size" and accumulation_steps(profile) > 1:
            v = (f"{v} (gradients of {accumulation_steps(profile)} micro-batches of "
                 f"{profile['micro_batch']} averaged, applied once)")
        elif key == "decoder_filters":
            v = ", ".join(map(str, v))
        elif key == "tta":
            v = f"{TTA_VARIANTS} variants (rot90 x flip), averaged" if v else "off"
        elif key in ("train_labels", "split_by"):
            v = {"original": "original (Kaggle's masks)",
                 "fixed": "fixed (community-fixed masks: 664 images, 109 corrected)",
                 "random": "at random",
                 "type": "stratified by image type (each type scored on its own)"}.get(
                     v or ADDED_KEYS[key], v)
        elif key == "balance_modalities":
            group = {"modality": "modality", "type": "image type"}[
                profile.get("balance_by") or ADDED_KEYS["balance_by"]]
            v = ("uniformly" if not v else f"every {group} equally often" if v == 1 else
                 f"with weight (images of its {group}) ^ -{v:g}")
        elif isinstance(v, (list, tuple)):
            v = " + ".join(map(str, v))
        elif v is None:
            v = {"encoder_weights": "none (random)",
                 "target_diameter": "none (native scale)",
                 "size_probe": "none (first look at native scale)",
                 "steps_per_epoch": "one pass over the data"}.get(key, "none")
        rows.append({"parameter": text, "value": str(v)})
        if key == "batch_size" and profile.get("mixed_precision"):
            rows.append({"parameter": "precision",
                         "value": "mixed float16 on a GPU (float32 on a CPU)"})
    return pd.DataFrame(rows)


def accumulation_steps(profile: dict) -> int:
    """How many micro-batches make one batch of a profile (1: no gradient accumulation)."""
    return micro_batches(profile["batch_size"], profile.get("micro_batch"))


def micro_batches(batch_size: int, micro_batch: int | None) -> int:
    """How many micro-batches of ``micro_batch`` images make a batch of ``batch_size`` (1:
    no gradient accumulation)."""
    micro, batch = micro_batch, int(batch_size)
    if not micro or int(micro) >= batch:
        return 1
    if int(micro) < 1:
        raise ProfileError(f"micro_batch must be a positive number of images, not {micro!r}")
    return -(-batch // int(micro))
