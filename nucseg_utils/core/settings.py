"""Every setting of a recipe, typed, each default written once.

A :class:`Recipe` is four groups of settings: the :class:`Network` and what it sees, its
:class:`Training`, the :class:`Inference` (the images' scale, TTA) and the post-processing
(:class:`PostprocessSettings`). The field defaults are the ``cpu`` recipe's;
:mod:`nucseg_utils.core.profiles` names the others as changes of it (``paper``, ``release``,
``smoke``).

A run, a profile and a model file keep the settings as one flat dict (``run.json``, the
notebooks' parameters, the model file's config): :meth:`Recipe.flat` writes it and
:meth:`Recipe.from_flat` reads it back, refusing a key no group has or a key that is missing,
with its name. A key added after the first runs is not missing from an older record: it
takes the value that kept the behaviour of before (:data:`LEGACY`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class PostprocessSettings:
    """Every setting of the post-processing, each default written here once.

    A model file's config holds them under the same names (``method`` under ``postprocess``);
    :func:`nucseg_utils.postprocessing.postprocess` takes them as keywords; a post-processing
    method reads those of its ``parameters``. A field whose metadata has a ``label`` is a
    setting calibration may choose: the label heads its column in a model's table of
    candidates (``results.md``), and a method's ``grid`` names the values tried. A new method
    with a new parameter is a field here and an entry of
    :data:`nucseg_utils.postprocessing.METHODS` (CONTRIBUTING.md walks through one)."""
    method: str = "paper"
    min_size: int = 10                      # objects smaller than this (px) are dropped
    threshold: float = field(default=0.5, metadata={"label": "threshold"})
    distance_seed: float = field(default=0.5, metadata={"label": "seed level"})
    min_distance_factor: float = field(default=0.5,
                                       metadata={"label": "marker spacing (radii)"})
    dilation: int = field(default=0, metadata={"label": "dilation (px)"})
    min_size_factor: float = field(default=0.0, metadata={"label": "min size (x typical area)"})
    min_mean_prob: float = field(default=0.0, metadata={"label": "min mean probability"})
    exclude_border: bool = False            # nuclei touching the image's border dropped

    @classmethod
    def from_config(cls, config: dict, **changes) -> "PostprocessSettings":
        """The settings a model's config holds (a key it lacks, or holds as None, keeps its
        default), with ``changes`` (field names) on top; a ValueError names unknown ones."""
        values = {f.name: config.get(config_key(f.name)) for f in fields(cls)}
        values = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown post-processing setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(f.name for f in fields(cls))}")
        return cls(**{**values, **changes})

    def config(self) -> dict:
        """The settings as a model file's config holds them (``postprocess`` for ``method``)."""
        return {config_key(f.name): getattr(self, f.name) for f in fields(self)}


def config_key(name: str) -> str:
    """The name a model file's config gives the setting ``name`` of
    :class:`PostprocessSettings`."""
    return "postprocess" if name == "method" else name


@dataclass(frozen=True)
class Augmentation:
    """The random changes a training patch goes through (``nucseg_utils.training``)."""
    rotation: float = 180.0     # degrees, uniform in [-rotation, rotation]
    shift: float = 0.0          # fraction of width/height
    shear: float = 8.0          # degrees
    zoom: float = 0.35          # scale in [1 - zoom, 1 + zoom]
    hflip: bool = True
    vflip: bool = True
    dihedral: bool = True       # a random quarter turn on top
    colour: bool = True         # colour and intensity changes
    stain: float = 0.0          # H&E stain changes of stained tissue (0: none)

    def flat(self) -> dict:
        """As a profile holds it: ``stain`` only when it is on (as ``--stain`` sets it)."""
        out = dataclasses.asdict(self)
        if not self.stain:
            del out["stain"]
        return out


@dataclass(frozen=True)
class Network:
    """The U-Net and what reaches it."""
    backbone: str = "resnet18"                       # encoder of the U-Net
    decoder_filters: tuple = (64, 32, 16, 16, 16)    # per decoder block, deepest first
    encoder_weights: str | None = None               # None: random; "imagenet"
    targets: tuple = ("mask", "touching")            # output channels
    input_mode: str = "crop"                         # "crop" (native scale) | "resize"
    input_size: int = 128                            # network input (px)
    normalization: str = "percentile"                # "percentile" | "unit" (/ 255)


@dataclass(frozen=True)
class Training:
    """How the network learns, and from what."""
    loss: str = "bce_jaccard"
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"                      # "cosine" | "constant"
    batch_size: int = 16                             # the effective batch
    micro_batch: int | None = None                   # gradient accumulation (None: off)
    mixed_precision: bool = False                    # mixed_float16 on a GPU
    checkpoint_every: int = 1                        # epochs between full checkpoints
    epochs: int = 15
    steps_per_epoch: int | None = 100                # None: one pass over the images
    train_splits: tuple = ("stage1_train",)
    val_fraction: float = 0.1
    balance_modalities: float = 0.5                  # weight count(group) ** -power
    balance_by: str = "modality"                     # "modality" | "type"
    augmentation: Augmentation = Augmentation()
    val_crops_per_image: int = 2
    seed: int = 42                                   # weights, batches, augmentation
    split_seed: int | None = 42                      # the train/validation split
    train_labels: str = "original"                   # "original" | "fixed"
    split_by: str = "random"                         # "random" | "type"

    def split_draw_seed(self) -> int:
        """The seed of the train/validation split: ``split_seed``, or ``seed`` for runs
        recorded before ``split_seed`` existed (None)."""
        return int(self.seed if self.split_seed is None else self.split_seed)


@dataclass(frozen=True)
class Inference:
    """How a trained network sees an image."""
    tta: bool = True                                 # 8 variants (rot90 x flip), averaged
    target_diameter: float | None = 20               # nuclei rescaled to this (px); None: native
    size_probe: float | None = 0.5                   # scale of the first size estimate
    scale_limits: tuple = (0.25, 2.0)                # the rescaling factor's bounds


GROUPS = {"network": Network, "training": Training, "inference": Inference}

# Keys added after the first runs, with the values that keep the behaviour of before: what a
# run.json (or a profile) recorded before a key existed stands for. The post-processing
# settings a profile did not yet record are :class:`PostprocessSettings`' defaults.
LEGACY = {"micro_batch": None, "mixed_precision": False, "checkpoint_every": 1,
          "decoder_filters": [256, 128, 64, 32, 16], "split_seed": None,
          "train_labels": "original", "split_by": "random", "balance_by": "modality"}


class RecipeError(KeyError):
    """A profile or record with a key no setting has, or without one it needs (named)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Recipe:
    """Every setting of a run: the network, the training, the inference, the post-processing.

    ``Recipe()`` is the ``cpu`` recipe; ``replace(**changes)`` another, the changes named by
    their flat keys (``epochs=40``, ``postprocess="paper"``, ``augmentation={"shift": 0.1}``)."""
    name: str | None = "cpu"
    network: Network = Network()
    training: Training = Training()
    inference: Inference = Inference()
    postprocess: PostprocessSettings = PostprocessSettings(method="touching")

    def flat(self) -> dict:
        """The flat dict a profile, a run.json and the notebooks' parameters hold: lists for
        sequences, ``postprocess`` for the post-processing's method."""
        out = {}
        for group in (self.network, self.training, self.inference):
            for f in fields(group):
                value = getattr(group, f.name)
                out[f.name] = (value.flat() if isinstance(value, Augmentation)
                               else list(value) if isinstance(value, tuple) else value)
        out.update(self.postprocess.config())
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def keys(cls) -> set[str]:
        """Every flat key a recipe has."""
        return {f.name for g in GROUPS.values() for f in fields(g)} | {
            config_key(f.name) for f in fields(PostprocessSettings)} | {"name"}

    @classmethod
    def from_flat(cls, flat: dict, where: str = "profile") -> "Recipe":
        """The recipe of a flat dict. Keys an older record lacks take their :data:`LEGACY`
        value (or the post-processing's default); a RecipeError names unknown keys, and
        missing ones, saying ``where`` they were read."""
        unknown = sorted(set(flat) - cls.keys())
        if unknown:
            raise RecipeError(f"{where}: unknown setting {', '.join(map(repr, unknown))}; known: "
                              f"{', '.join(sorted(cls.keys()))}")
        pp_keys = {config_key(f.name) for f in fields(PostprocessSettings)}
        full = {**LEGACY, **flat}
        missing = sorted(k for k in cls.keys() - pp_keys - {"name"} if k not in full)
        if missing:
            raise RecipeError(f"{where}: missing setting {', '.join(map(repr, missing))}")
        groups = {}
        for gname, group in GROUPS.items():
            values = {}
            for f in fields(group):
                value = full[f.name]
                if f.name == "augmentation":
                    value = _augmentation(value, where)
                elif isinstance(value, list):
                    value = tuple(value)
                values[f.name] = value
            groups[gname] = group(**values)
        post = PostprocessSettings.from_config({k: full[k] for k in pp_keys if k in full})
        return cls(name=flat.get("name"), postprocess=post, **groups)

    def replace(self, name: str | None = None, **changes) -> "Recipe":
        """This recipe with ``changes`` (flat keys; ``augmentation`` a dict of its changes)
        and, when given, another ``name``. A RecipeError names an unknown key."""
        flat = self.flat()
        unknown = sorted(set(changes) - self.keys())
        if unknown:
            raise RecipeError(f"unknown profile parameter {', '.join(map(repr, unknown))}; known: "
                              f"{', '.join(sorted(self.keys() - {'name'}))}")
        for key, value in changes.items():
            flat[key] = ({**flat[key], **value} if key == "augmentation"
                         and isinstance(value, dict) else value)
        if name is not None:
            flat["name"] = name
        return Recipe.from_flat(flat)


def _augmentation(value, where: str) -> Augmentation:
    if isinstance(value, Augmentation):
        return value
    known = {f.name for f in fields(Augmentation)}
    unknown = sorted(set(value or {}) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown augmentation setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    missing = sorted(known - {"stain"} - set(value or {}))
    if missing:
        raise RecipeError(f"{where}: augmentation lacks {', '.join(missing)}")
    return Augmentation(**value)


@dataclass(frozen=True)
class ModelSettings:
    """What a trained model's config says about how it sees an image and post-processes it:
    the typed settings the inference (:mod:`nucseg_utils.inference`), the tiled runs and
    ``NucleusModel`` read. A field's default is what a model file without the key stands for
    (an older file: no ``target_diameter`` is native scale, no ``decoder_filters`` the
    :data:`LEGACY` decoder). ``postprocessing`` holds the post-processing's settings,
    ``other`` the rest of the config (epoch, val_loss, profile, ...)."""
    backbone: str = Network.backbone
    targets: tuple = Network.targets
    decoder_filters: tuple = tuple(LEGACY["decoder_filters"])
    input_mode: str = Network.input_mode
    input_size: int = Network.input_size
    normalization: str = Network.normalization
    target_diameter: float | None = None    # a file without it: images at native scale
    scale_limits: tuple = Inference.scale_limits
    size_probe: float | None = None         # ... and no first look at another scale
    tta: bool = Inference.tta
    diameter: float | None = None           # the nuclei's size (native px) a user gave
    tta_scales: tuple | None = None         # test-time scaling (none unless a study sets it)
    train_splits: tuple = ()
    postprocessing: PostprocessSettings = PostprocessSettings()
    other: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict) -> "ModelSettings":
        """The settings of a model file's config (or of a profile's flat dict): a key it
        lacks, or holds as None, takes the field's default."""
        names = {f.name for f in fields(cls)} - {"other", "postprocessing"}
        pp = {config_key(f.name) for f in fields(PostprocessSettings)}
        known = {k: (tuple(v) if isinstance(v, list) else v)
                 for k, v in config.items() if k in names and v is not None}
        return cls(**known, postprocessing=PostprocessSettings.from_config(config),
                   other={k: v for k, v in config.items() if k not in names | pp})

    @classmethod
    def of(cls, settings: "ModelSettings | dict") -> "ModelSettings":
        """``settings`` as they are, or those of a config dict (:meth:`from_config`): what
        the functions that take a model's settings call where they are entered."""
        return settings if isinstance(settings, cls) else cls.from_config(settings)


def network_of(settings: "Network | Recipe | dict") -> Network:
    """The network settings of a recipe, as they are, or of a flat dict (a profile, or a
    model file's config, which holds no ``encoder_weights``): a key it lacks takes its
    :data:`LEGACY` value, else the default."""
    if isinstance(settings, Network):
        return settings
    if isinstance(settings, Recipe):
        return settings.network
    values = {f.name: settings.get(f.name, LEGACY.get(f.name, f.default))
              for f in fields(Network)}
    return Network(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def recipe_of(settings: "Recipe | dict", where: str = "profile") -> Recipe:
    """``settings`` as a :class:`Recipe`: a recipe as it is, a flat dict (a profile, what a
    run.json recorded) read by :meth:`Recipe.from_flat` (a RecipeError names an unknown or
    missing key). Functions that take a recipe call this once where they are entered, and
    read typed fields from then on."""
    return settings if isinstance(settings, Recipe) else Recipe.from_flat(settings, where)
