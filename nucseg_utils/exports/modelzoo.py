"""Sharing: a nucseg model as a BioImage Model Zoo package, for people who do not use nucseg.

In: a nucseg model file (``.npz``, :meth:`nucseg_utils.model.NucleusModel.load`); it stays the
project's own format, and the package is made from it.
Out: one ``.zip`` (what bioimage.io uploads, deepImageJ's "install from a local file" and
``bioimageio.core`` take; unzipped it is the package folder) holding

- ``rdf.yaml``: the description (bioimage.io model spec 0.5): the input (batch, y, x, RGB
  channel; any size from 96 px in steps of 32), the output (the probabilities of the
  network's channels: nucleus, the touching zone for two-channel models, and the distance to
  the edge for three-channel ones), the
  pre-processing the format can express (per-image percentile scaling, 1st-99.8th
  percentile, of all channels together, then a clip to [-0.5, 1.5]), authors, citations,
  licence, and nucseg's own config (under ``config.nucseg``);
- the network's weights in Keras HDF5 (``weights.h5``, reloads with
  ``tf.keras.models.load_model``) and as a TensorFlow SavedModel (``tf_saved_model.zip``, the
  format deepImageJ runs; signature ``serving_default``: ``raw`` -> ``probabilities``),
  float32, from the float16 weights of the ``.npz``;
- ``test_input.npy`` / ``test_output.npy``: a synthetic fluorescence image (1, 256, 256, 3)
  as read (float32 in [0, 1]) and the network's probabilities for it after the described
  pre-processing; the same as ``sample_input.png`` / ``sample_output.tif`` for people;
- ``cover.png``: that image, the probabilities, and the nuclei that ``nucseg predict`` finds;
- ``README.md`` (the documentation, under the name the format recommends): what runs where.
  The package holds the network and the part of the normalisation the format can describe.
  The rest of nucseg's prediction runs only in nucseg: inverting images with a bright
  background, rescaling every image so its nuclei are about ``target_diameter`` px across,
  the 8-fold test-time augmentation, and the seeded watershed that turns the
  probabilities into one label per nucleus (the format has no step for a seeded watershed).

The package is staged in a temporary folder and the zip written to a temporary name beside
``out``, renamed into place only once ``bioimageio.spec`` has validated it: an interrupted
export leaves no half package. ``bioimageio.spec`` is imported only here (``pip install
bioimageio.spec``; it is in requirements.txt).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg_utils import __version__
from nucseg_utils.core import quiet, runs
from nucseg_utils.core.settings import ModelSettings
from nucseg_utils.core.runs import REPO_URL as GIT_REPO
from nucseg_utils.data.synthetic import make_image
from nucseg_utils.evaluation import scoring
from nucseg_utils.exports.render import show_image, show_labels
from nucseg_utils.inference.preprocessing import (  # described in rdf.yaml
    CLIP,
    NORMALIZATIONS,
    PERCENTILES,
    background_is_bright,
    normalize,
)
from nucseg_utils.inference.scale import label_diameter
from nucseg_utils.model.network import NucleusModel, read_config, tf_setup
from nucseg_utils.postprocessing.methods import METHODS
from nucseg_utils.postprocessing.methods import settings as postprocess_settings

WEIGHT_FORMATS = ("keras_hdf5", "tensorflow_saved_model_bundle")
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
MIN_SIZE, STEP, HALO = 96, 32, 32  # input sizes 96 + 32 n; 32 px each side to drop when tiling
TEST_SIZE = 256
CHANNEL_NAMES = {"mask": "nucleus", "touching": "touching_zone", "distance": "centre_distance"}
CITATIONS = (
    ("Caicedo, J. C. et al. Nucleus segmentation across imaging experiments: the 2018 Data "
     "Science Bowl. Nature Methods 16, 1247-1253 (2019) (the training data, BBBC038)",
     "10.1038/s41592-019-0612-7"),
    ("Ronneberger, O., Fischer, P. & Brox, T. U-Net: convolutional networks for biomedical "
     "image segmentation. MICCAI 2015", "10.1007/978-3-319-24574-4_28"),
    ("He, K., Zhang, X., Ren, S. & Sun, J. Deep residual learning for image recognition. "
     "CVPR 2016 (the ResNet encoder)", "10.1109/CVPR.2016.90"),
)


class ExportError(Exception):
    """A package that cannot be written; the message names the file."""


@dataclass
class Exported:
    path: Path           # the .zip
    size: int            # bytes
    status: str          # bioimageio.spec's status: "valid-format" ("passed" needs a test
    #                      run of the weights, by bioimageio.core)
    warnings: list       # its warnings, one line each
    weights: tuple       # the weight formats in the package


# --------------------------------------------------------------------------- the test image
def sample_image(size: int = TEST_SIZE, target: float = 20.0):
    """A synthetic fluorescence image (uint8, (size, size, 3)) whose nuclei are about
    ``target`` px across (the size nucseg's models see), its labels, and the seed that made it.
    The first seed from 0 that fits is taken, so the image is always the same."""
    best = None
    for seed in range(200):
        image, labels = make_image(np.random.default_rng(seed), (size, size), "fluorescence",
                                   channels=3)
        d = label_diameter(labels) if labels.max() else 0.0
        if labels.max() >= 8 and abs(d - target) <= 0.2 * target:
            return image, labels, seed
        if labels.max() and (best is None or abs(d - target) < best[0]):
            best = (abs(d - target), image, labels, seed)
    return best[1], best[2], best[3]


def describe_preprocessing(settings: ModelSettings) -> str:
    """One sentence: the pre-processing of a model's settings that the package describes."""
    if settings.normalization == "unit":
        return "none: the network takes the image as read, scaled to [0, 1] (8-bit / 255)"
    return (f"per image, the 1st and {PERCENTILES[1]:g}th percentiles of all channels together "
            f"are mapped to 0 and 1 (scale_range), then values are clipped to "
            f"[{CLIP[0]:g}, {CLIP[1]:g}] (clip)")


# --------------------------------------------------------------------------- the package
def _check_output(out: Path, overwrite: bool) -> None:
    if out.suffix.lower() != ".zip":
        raise ExportError(f"{out}: the package is a .zip file; give a name ending in .zip")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give the name of the .zip to write")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists already; use --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        raise ExportError(f"{out}: cannot write there ({err.strerror or err})") from None


def _import_spec():
    try:  # lazy: importing bioimageio.spec takes ~1-1.6 s, and only `nucseg export` needs it
        import bioimageio.spec  # noqa: F401
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise ExportError("exporting needs bioimageio.spec: pip install "
                          "bioimageio.spec==0.5.14.3 (it is in requirements.txt)") from None
    try:  # its progress and debug messages would drown ours
        from loguru import logger
        logger.disable("bioimageio")
    except ImportError:
        pass
    return v0_5


def _zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
    return path


def _published(model_path: Path) -> dict:
    """``nucseg publish``'s results beside the model file when they are this very file's
    (:func:`nucseg_utils.exports.publishing.published_results`), else {}."""
    from nucseg_utils.exports.publishing import (
        published_results,  # lazy: cli.main imports this module
    )
    return published_results(model_path) or {}


def _results(model_path: Path) -> dict | None:
    """The published test scores of this very model file ({} or None when it has none)."""
    return _published(model_path).get("evaluations")


def _validation_results(model_path: Path) -> dict | None:
    """The published validation scores of a model with no untouched test set (the release
    model: ``results.json``'s ``validation``), when they are this very file's."""
    res = _published(model_path)
    if not res.get("validation"):
        return None
    return {**res["validation"], "train_splits": res.get("train_splits", []),
            "missing_test_split": res.get("missing_test_split")}


def _write_samples(stage: Path, image, prob) -> None:
    """The test tensors as images for people (the format asks for them): the image as an RGB
    PNG, the probabilities as a float32 TIFF (y, x, channel)."""
    # lazy: imageio and tifffile add ~0.1 s to every nucseg command (cli.main imports this)
    import imageio.v3 as iio
    import tifffile
    iio.imwrite(stage / "sample_input.png", np.asarray(image, np.uint8), extension=".png")
    tifffile.imwrite(stage / "sample_output.tif", np.asarray(prob, np.float32))


def _cover(path: Path, image, prob, labels) -> Path:
    from matplotlib.figure import Figure  # lazy: importing matplotlib takes ~0.5-0.7 s
    fig = Figure(figsize=(6, 6), dpi=80)
    axes = fig.subplots(2, 2)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.94, wspace=0.03,
                        hspace=0.1)
    show_image(axes[0, 0], image, "input (synthetic test image)")
    for ax, c, title in ((axes[0, 1], 0, "nucleus probability (package output)"),
                         (axes[1, 0], 1, "touching zone (package output)")):
        if c < prob.shape[-1]:
            ax.imshow(prob[..., c], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=8)
        ax.axis("off")
    show_labels(axes[1, 1], labels, f"nucseg predict: {int(labels.max())} nuclei")
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _doc_introduction(settings: ModelSettings, info: dict) -> list[str]:
    """The README's title and first paragraph (and the warning for a synthetic model)."""
    names = info["channel_names"]
    two = len(names) > 1
    lines = [
        f"# {info['name']}",
        "",
        f"A U-Net with a {settings.backbone} encoder that predicts, for every pixel of a "
        f"microscopy image, the probability that it belongs to a cell nucleus"
        + (" and the probability that it lies where two nuclei touch" if two else "")
        + (" and its distance to the nucleus' edge" if len(names) > 2 else "")
        + f". Made by [nucseg]({GIT_REPO}) {__version__} (`nucseg export`) from its model "
        f"file `{info['model_file']}` (fingerprint `{info['fingerprint']}`), trained on "
        f"{info['dataset']}.",
        "",
    ]
    if info["synthetic"]:
        lines += ["**This model was trained on nucseg's built-in SYNTHETIC set: it is for "
                  "testing the export only, not for real images.**", ""]
    return lines


def _doc_input_output(settings: ModelSettings, info: dict) -> list[str]:
    """The tensors of the package, and the head of the list of what it does not do."""
    names = info["channel_names"]
    two = len(names) > 1
    resize = settings.input_mode == "resize"
    return [
        "## Input and output",
        "",
        f"- input `{INPUT_ID}`: one RGB image, axes (batch, y, x, channel), float32; a grey "
        f"image is given as three equal channels. "
        + (f"It must be {settings.input_size} x {settings.input_size} px." if resize else
           f"Height and width {MIN_SIZE} + {STEP} n px (nucseg pads to a multiple of 32); a "
           f"consumer that predicts in tiles drops {HALO} px at each tile edge (the output's "
           f"`halo`)."),
        f"- pre-processing in the package: {describe_preprocessing(settings)}.",
        f"- output `{OUTPUT_ID}`: axes (batch, y, x, channel), float32 in [0, 1], the size of "
        f"the input; channel 0 `{names[0]}`: nucleus probability"
        + (f"; channel 1 `{names[1]}`: probability of the zone where two nuclei touch "
           f"(the seeds of the watershed below)" if two else "")
        + (f"; channel 2 `{names[2]}`: distance to the nucleus' edge as a fraction of "
           f"its largest, 1 at each centre" if len(names) > 2 else "") + ".",
        "",
        "## What runs where",
        "",
        "The package holds the network and the normalisation that the bioimage.io format can "
        "describe; a bioimage.io consumer (deepImageJ, bioimageio.core, ilastik, ...) gives "
        "the probability maps. `nucseg predict` does more around the network, and those "
        "steps are **not** in the package:",
        "",
    ]


def _doc_preprocessing_steps(settings: ModelSettings) -> list[str]:
    """The steps of nucseg's prediction before and around the network that the package lacks."""
    target = settings.target_diameter
    resize = settings.input_mode == "resize"
    steps = []
    if settings.normalization == "haematoxylin":
        steps.append("**Haematoxylin channel of stained tissue.** For a colour image of "
                     "stained tissue (H&E-like), nucseg gives the network the image's "
                     "haematoxylin channel (colour deconvolution with Ruifrok and Johnston's "
                     "H&E-DAB matrix, as scikit-image's `rgb2hed`), in all three channels, "
                     "in place of the colours. The format has no such step: unmix such "
                     "images yourself first (e.g. Fiji's Image > Color > Colour "
                     "Deconvolution, vector 'H&E DAB', then invert the haematoxylin image: "
                     "close to nucseg's optical density, not equal to it) and give the "
                     "package a three-channel copy of it.")
    if settings.normalization in ("percentile", "haematoxylin"):
        kinds = ("brightfield: its" if settings.normalization == "haematoxylin"
                 else "brightfield, H&E-stained tissue: its")
        steps.append("**Background inversion.** An image whose background is bright "
                     f"({kinds} median is above the middle of its "
                     "1st-99th percentile range) is inverted after the scaling (1 - value), "
                     "so that nuclei are always brighter than the background, as in training. "
                     "The format has no conditional step: invert such images yourself before "
                     "giving them to the package (e.g. Fiji's Edit > Invert).")
    if resize:
        steps.append(f"**Resizing.** nucseg resizes every image to {settings.input_size} x "
                     f"{settings.input_size} px and the probabilities back to the image's "
                     f"size.")
    if target:
        steps.append(f"**Rescaling to one nucleus size.** The network was trained on images "
                     f"rescaled so that nuclei are about {target:g} px across. nucseg "
                     f"estimates the nucleus size from a first prediction"
                     + (f" (first at {settings.size_probe:g} x scale, for large nuclei)"
                        if settings.size_probe else "")
                     + f", rescales the image by a factor in [{settings.scale_limits[0]:g}, "
                     f"{settings.scale_limits[1]:g}], predicts, and resizes the "
                     f"probabilities back to the native size. The package runs the network at "
                     f"the scale it is given: rescale your image so that nuclei are about "
                     f"{target:g} px across first.")
    if settings.tta:
        steps.append("**Test-time augmentation.** nucseg averages the probabilities of the 8 "
                     "rotations and flips of the image (each mapped back). The package makes "
                     "one prediction.")
    return steps


def _doc_labels_step(config: dict) -> str:
    """How nucseg turns the network's outputs into labels (not in the package), in the words
    of its post-processing method (:data:`nucseg_utils.postprocessing.METHODS`)."""
    pp = postprocess_settings(config)
    method = METHODS[pp["postprocess"]]
    if method.seeded:
        return (f"**{method.seeded.capitalize()} watershed (labels).** nucseg turns the "
                f"{_COUNT_WORDS.get(method.channels, method.channels)} channels into one "
                f"label per nucleus: {method.explain(pp)}. The bioimage.io format has no "
                f"seeded-watershed step, so the package ends at the network's outputs.")
    return (f"**Labels.** nucseg turns the probabilities into one label per nucleus with its "
            f"`{method.name}` post-processing (`nucseg_utils/postprocessing/methods.py`): "
            f"{method.explain(pp)}. The package ends at the probabilities.")


_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


def _doc_nucseg_itself(info: dict) -> list[str]:
    """How to get nucseg's labels: run nucseg on the model file."""
    return [
        "",
        "For the same labels as nucseg, run nucseg itself on the model file this package was "
        "made from:",
        "",
        "```bash",
        "pip install -r requirements.txt && pip install -e .   # in a clone of nucseg",
        f"nucseg predict --model {info['model_file']} --images my_images/ --out results/",
        "```",
        "",
        "which writes label images (PNG and ImageJ TIFF), ImageJ ROI sets, overlays and "
        "per-nucleus measurements.",
        "",
    ]


def _doc_validation(info: dict) -> list[str]:
    """The published scores of this very model file, when there are any."""
    lines = ["## Validation", ""]
    ev = info.get("results")
    if ev:
        split = next((e.get("split") for e in ev.values() if e.get("split")), "its test split")
        lines += ["Scored by `nucseg evaluate` with the exact Kaggle DSB2018 metric (mean over "
                  "IoU thresholds 0.50-0.95 of TP / (TP + FP + FN)), at native resolution, on "
                  f"`{split}`, which nothing was trained or tuned on, with nucseg's whole "
                  f"pipeline (the steps above), for this very model file (fingerprint "
                  f"`{info['fingerprint']}`):", "",
                  "| TTA | images | DSB score | object F1 at IoU 0.5 |", "|---|---|---|---|"]
        for key, e in sorted(ev.items(), key=lambda kv: not kv[1].get("tta")):
            n = e.get("native", {})
            if "dsb" in n:
                lines.append(f"| {'8-fold' if e.get('tta') else 'off'} | {e.get('images')} | "
                             f"{n['dsb']:.4f} | {n.get('f1', float('nan')):.4f} |")
        lines += ["", "The package alone (one pass at the scale it is given, no watershed) was "
                  "not scored: these numbers need the steps above.", ""]
    elif info.get("validation"):
        lines += _doc_validation_only(info["validation"], info["fingerprint"])
    else:
        lines += ["No published scores were found beside this model file. Measure them with "
                  f"`nucseg evaluate --model {info['model_file']}` (the exact Kaggle DSB2018 "
                  "metric at native resolution).", ""]
    return lines


def _doc_validation_only(v: dict, fingerprint: str) -> list[str]:
    """The validation scores per image type of a model with no untouched test set, and on
    which image types to trust it (:func:`nucseg_utils.evaluation.scoring.trust_statement`)."""
    lines = [f"This model learnt from every labelled image of DSB2018 stage 1 "
             f"({' + '.join(v['train_splits'])}), so no untouched DSB2018 test set is left "
             f"for it here (its test split, `{v.get('missing_test_split')}`, stage 2, is not "
             f"available). These are **validation** scores, on its {v['images']} held-out "
             f"images drawn by image type (which also chose its checkpoint and "
             f"post-processing: optimistic), with nucseg's whole pipeline, for this very "
             f"model file (fingerprint `{fingerprint}`): DSB {v['dsb']:.4f}, object F1 at "
             f"IoU 0.5 {v['f1']:.4f}.", "",
             runs.to_markdown(scoring.type_frame(v["by_type"])[
                 ["image type", "images", "DSB", "recall (IoU > 0.7)", "F1 (IoU > 0.7)"]],
                 digits=3)]
    lines += ["", "**On which images to trust it:**", ""]
    lines += [f"- {t}" for t in scoring.trust_statement(v["by_type"])] + [""]
    return lines


def _doc_test_tensors_and_licence(info: dict) -> list[str]:
    """What the test tensors are, the licence and what to cite."""
    return [
        "The test tensors check the package itself: `test_input.npy` is a synthetic "
        f"fluorescence image (nucseg's generator, seed {info['seed']}, not real data) as read "
        "(float32 in [0, 1]); `test_output.npy` is the network's output on it after the "
        "described pre-processing (its background is dark, so no inversion applies).",
        "",
        "## Licence and citation",
        "",
        "Code and weights: MIT (nucseg). "
        + ("Training data: nucseg's synthetic generator. " if info["synthetic"] else
           "Training data: DSB2018 stage 1 (BBBC038, CC0). ")
        + "Please cite the Data Science Bowl paper (Caicedo et al., Nature Methods 2019) when "
          "you use this model.",
        "",
    ]


def _documentation(settings: ModelSettings, config: dict, info: dict) -> str:
    """The package's README.md: what the network does, its tensors, the steps of nucseg's
    prediction that are not in the package (``config``: the model file's settings as saved,
    whose post-processing it words), the published scores, the licence."""
    steps = _doc_preprocessing_steps(settings) + [_doc_labels_step(config)]
    lines = _doc_introduction(settings, info) + _doc_input_output(settings, info)
    lines += [f"{i}. {s}" for i, s in enumerate(steps, 1)]
    lines += _doc_nucseg_itself(info) + _doc_validation(info)
    lines += _doc_test_tensors_and_licence(info)
    return "\n".join(lines)


def _weight_formats(weights, out: Path) -> tuple:
    """The weight formats asked for, in :data:`WEIGHT_FORMATS` order; ExportError for none or
    an unknown one."""
    unknown = [w for w in weights if w not in WEIGHT_FORMATS]
    weights = tuple(w for w in WEIGHT_FORMATS if w in weights)
    if unknown or not weights:
        raise ExportError(f"{out}: unknown or no weight format {unknown or ''}; choose from "
                          f"{', '.join(WEIGHT_FORMATS)}")
    return weights


def _package_info(model_path: Path, settings: ModelSettings) -> dict:
    """What the documentation and the description say about the model file."""
    fingerprint = runs.file_fingerprint(model_path)
    names = [CHANNEL_NAMES.get(t, str(t)) for t in settings.targets]
    dataset = settings.other.get("dataset") or "unknown data"
    synthetic = "synthetic" in str(dataset).lower()
    if synthetic:
        dataset = "nucseg's built-in synthetic set"
    info = {"model_file": model_path.name, "fingerprint": fingerprint, "channel_names": names,
            "dataset": dataset, "synthetic": synthetic,
            "results": _results(model_path),
            "validation": _validation_results(model_path)}
    backbone = str(settings.backbone)
    info["name"] = f"nucseg U-Net {backbone} nuclei" + (" (SYNTHETIC test)"
                                                       if info["synthetic"] else "")
    return info


def _test_size(settings: ModelSettings) -> int:
    """The side of the test image: the network's input size for a model that resizes."""
    return int(settings.input_size) if settings.input_mode == "resize" else TEST_SIZE


def _write_test_tensors(stage: Path, model, settings: ModelSettings, norm: str, info: dict):
    """The test tensors: a dark-background synthetic image as read, and the network's output
    after the described pre-processing (also as images for people). Sets ``info['seed']``;
    returns (image as read, output)."""
    image, _, seed = sample_image(_test_size(settings))
    info["seed"] = seed
    raw = image.astype(np.float32) / 255.0
    if norm != "unit" and background_is_bright(raw):  # cannot happen: fluorescence
        raise ExportError("the synthetic test image has a bright background")
    prob = model(normalize(raw, norm)[None], training=False).numpy().astype(np.float32)
    np.save(stage / "test_input.npy", raw[None])
    np.save(stage / "test_output.npy", prob)
    _write_samples(stage, image, prob[0])
    return raw, prob


def _write_cover_of_pipeline(stage: Path, model: NucleusModel, raw, prob) -> None:
    """cover.png: the test image, the package's output and the labels of nucseg's pipeline."""
    labels = model.postprocess(model.predict_probabilities(raw, tta=model.settings.tta))
    _cover(stage / "cover.png", raw, prob[0], labels)


def _weight_entries(v, tf, stage: Path, model, weights: tuple, info: dict) -> dict:
    """Write the network in each of ``weights``; their descriptions by format."""
    entries = {}
    if "keras_hdf5" in weights:
        with warnings.catch_warnings():  # "HDF5 is legacy": it is the format asked for
            warnings.filterwarnings("ignore", message=".*HDF5.*", category=UserWarning)
            model.save(stage / "weights.h5", include_optimizer=False)
        entries["keras_hdf5"] = v.KerasHdf5WeightsDescr(
            source=stage / "weights.h5", tensorflow_version=tf.__version__,
            comment=f"float32 copy of the float16 weights of nucseg's {info['model_file']} "
                    f"(fingerprint {info['fingerprint']})")
    if "tensorflow_saved_model_bundle" in weights:
        # one serving signature named like the tensors (raw -> probabilities); without
        # the per-layer traces, which take ten times longer to write (Keras reloads the
        # model from its config; the signature serves the others)
        serve = tf.function(lambda x: {OUTPUT_ID: model(x, training=False)},
                            input_signature=[tf.TensorSpec([None, None, None, 3],
                                                           tf.float32, name=INPUT_ID)])
        model.save(stage / "saved_model", save_format="tf", include_optimizer=False,
                   save_traces=False,
                   signatures={"serving_default": serve.get_concrete_function()})
        _zip_folder(stage / "saved_model", stage / "tf_saved_model.zip")
        entries["tensorflow_saved_model_bundle"] = \
            v.TensorflowSavedModelBundleWeightsDescr(
                source=stage / "tf_saved_model.zip", tensorflow_version=tf.__version__,
                parent="keras_hdf5" if "keras_hdf5" in entries else None,
                comment=f"tf.keras SavedModel, zipped; signature serving_default: "
                        f"{INPUT_ID} -> {OUTPUT_ID}")
    return entries


def _input_descr(v, stage: Path, settings: ModelSettings, norm: str):
    """The input tensor: RGB, any size from 96 px in steps of 32 (or the one size of a model
    that resizes), with the pre-processing the format can express."""
    if settings.input_mode == "resize":
        y_size = x_size = int(settings.input_size)
    else:
        y_size = v.ParameterizedSize(min=MIN_SIZE, step=STEP)
        x_size = v.ParameterizedSize(min=MIN_SIZE, step=STEP)
    pre = []
    if norm != "unit":  # percentile (haematoxylin: the same for images not stained)
        pre = [v.ScaleRangeDescr(kwargs=v.ScaleRangeKwargs(
                   axes=[v.AxisId("y"), v.AxisId("x"), v.AxisId("channel")],
                   min_percentile=PERCENTILES[0], max_percentile=PERCENTILES[1])),
               v.ClipDescr(kwargs=v.ClipKwargs(min=CLIP[0], max=CLIP[1]))]
    return v.InputTensorDescr(
        id=v.TensorId(INPUT_ID),
        description="RGB image (grey: three equal channels) as read, float32",
        axes=[v.BatchAxis(),
              v.SpaceInputAxis(id=v.AxisId("y"), size=y_size),
              v.SpaceInputAxis(id=v.AxisId("x"), size=x_size),
              v.ChannelAxis(channel_names=["r", "g", "b"])],
        test_tensor=v.FileDescr(source=stage / "test_input.npy"),
        sample_tensor=v.FileDescr(source=stage / "sample_input.png"),
        preprocessing=pre)


def _output_descr(v, stage: Path, settings: ModelSettings, names: list):
    """The output tensor: the probabilities, the size of the input (with a halo for tiling)."""
    resize = settings.input_mode == "resize"

    def out_axis(a):
        ref = v.SizeReference(tensor_id=v.TensorId(INPUT_ID), axis_id=v.AxisId(a))
        if resize:
            return v.SpaceOutputAxis(id=v.AxisId(a), size=ref)
        return v.SpaceOutputAxisWithHalo(id=v.AxisId(a), size=ref, halo=HALO)

    return v.OutputTensorDescr(
        id=v.TensorId(OUTPUT_ID),
        description="per-pixel probabilities: " + ", ".join(names),
        axes=[v.BatchAxis(), out_axis("y"), out_axis("x"),
              v.ChannelAxis(channel_names=list(names))],
        data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        test_tensor=v.FileDescr(source=stage / "test_output.npy"),
        sample_tensor=v.FileDescr(source=stage / "sample_output.tif"))


def _model_config(v, model, settings: ModelSettings, config: dict, info: dict):
    """The description's config: bioimage.io's fields and nucseg's own (``config``: the
    model file's settings as saved)."""
    backbone, names = str(settings.backbone), info["channel_names"]
    size = _test_size(settings)
    return v.Config(
        bioimageio=v.BioimageioConfig(
            architecture_type="U-Net",
            architecture_description=(
                f"segmentation_models 1.0.1 Unet('{backbone}', classes={len(names)}, "
                f"activation='sigmoid', decoder_filters="
                f"{tuple(settings.decoder_filters)}), "
                f"tf.keras"),
            modality="light microscopy (fluorescence, brightfield, H&E)",
            target_structure=["cell nucleus"],
            task="segmentation (per-pixel probabilities)",
            out_of_scope_use=(
                "Images whose nuclei are far from "
                f"{settings.target_diameter or 'the training'} px across, or "
                "bright-background images, without the steps the documentation "
                "lists; 3-D stacks; anything but cell nuclei."),
            model_parameter_count=int(model.count_params())),
        nucseg={"version": __version__, "model_file": info["model_file"],
                "model_fingerprint": info["fingerprint"],
                "model_config": json.loads(json.dumps(config, default=str)),
                "test_image": {"generator": "nucseg_utils.data.synthetic.make_image",
                               "look": "fluorescence", "seed": info["seed"],
                               "shape": [size, size, 3]}})


def _model_descr(v, stage: Path, model, nucleus: NucleusModel, info: dict, norm: str,
                 entries: dict):
    """The whole description (rdf.yaml) of the package staged in ``stage``."""
    settings = nucleus.settings
    backbone, names, dataset = (str(settings.backbone), info["channel_names"],
                                info["dataset"])
    description = (
        f"Cell nucleus segmentation in 2-D microscopy (fluorescence, brightfield, H&E): a "
        f"U-Net ({backbone} encoder) giving the probability of nucleus"
        + (" and of the zone where nuclei touch" if len(names) > 1 else "")
        + (" and the distance to the nucleus' edge" if len(names) > 2 else "")
        + f". Trained on {dataset}. nucseg (not this package) also inverts bright "
          "backgrounds, rescales nuclei to one size, averages 8 rotations/flips and "
          "separates nuclei with a watershed: see the documentation.")
    return v.ModelDescr(
        name=info["name"],
        description=description[:512],
        authors=[v.Author(name="the nucseg authors")],
        cite=[v.CiteEntry(text=t, doi=v.Doi(d)) for t, d in CITATIONS],
        license=v.LicenseId("MIT"),
        git_repo=v.HttpUrl(GIT_REPO),
        documentation=v.FileDescr(source=stage / "README.md"),
        covers=[v.FileDescr(source=stage / "cover.png")],
        tags=["nuclei", "nucleus", "segmentation", "instance-segmentation", "unet",
              backbone, "dsb2018", "2d", "fluorescence-light-microscopy",
              "brightfield-microscopy", "tensorflow", "keras", "nucseg"],
        inputs=[_input_descr(v, stage, settings, norm)],
        outputs=[_output_descr(v, stage, settings, names)],
        weights=v.WeightsDescr(**entries),
        version=__version__,
        config=_model_config(v, model, settings, nucleus.config, info),
    )


def export_package(model_path, out, weights=WEIGHT_FORMATS, overwrite: bool = False,
                   log=None) -> Exported:
    """Write the model file ``model_path`` as a BioImage Model Zoo package ``out`` (.zip).

    ``weights``: the formats to include (:data:`WEIGHT_FORMATS`; Keras HDF5 is the source of
    the others when present). Raises :class:`nucseg_utils.model.ModelError` for a model file
    that cannot be read, :class:`ExportError` for an output that cannot be written and
    ``FileExistsError`` when ``out`` exists and not ``overwrite``. Validated by
    ``bioimageio.spec`` before it is put in place.
    """
    log = log or (lambda message: None)
    model_path, out = Path(model_path), Path(out)
    weights = _weight_formats(weights, out)
    # the cheap checks first: the model file's config (ModelError names the file), the output
    norm = read_config(model_path).get("normalization", "unit")
    if norm not in NORMALIZATIONS:
        raise ExportError(f"{model_path}: normalization '{norm}' cannot be described in a "
                          f"bioimage.io package")
    _check_output(out, overwrite)
    v = _import_spec()
    log(f"loading {model_path}")
    # ModelError names the file (e.g. bad weights); the Keras model itself is exported
    with quiet.tensorflow_logs():  # TensorFlow's start-up lines, as nucseg predict
        nucleus = NucleusModel.load(model_path, engine="tensorflow")
        tf = tf_setup()
    model, settings = nucleus.keras, nucleus.settings
    info = _package_info(model_path, settings)

    with tempfile.TemporaryDirectory(prefix="nucseg-bioimageio-") as tmp:
        stage = Path(tmp)
        log("test image and its prediction")
        raw, prob = _write_test_tensors(stage, model, settings, norm, info)
        log("cover (nucseg's whole pipeline on the test image)")
        _write_cover_of_pipeline(stage, nucleus, raw, prob)
        runs.write_text(stage / "README.md", _documentation(settings, nucleus.config, info))
        log("weights: " + ", ".join(weights))
        with quiet.tensorflow_logs():  # the SavedModel writer's own lines
            entries = _weight_entries(v, tf, stage, model, weights, info)
        log("description")
        descr = _model_descr(v, stage, model, nucleus, info, norm, entries)
        log(f"package {out}")
        return write_package(descr, out)


def write_package(descr, out) -> Exported:
    """Zip a description and its files (``bioimageio.spec.save_bioimageio_package``) into
    ``out`` atomically: written under a temporary name beside it, validated, then renamed, so
    ``out`` is either the old file, or absent, or the whole valid package."""
    from bioimageio.spec import save_bioimageio_package  # lazy: ~1-1.6 s, as _import_spec
    out = Path(out)
    try:
        with runs.atomic_path(out) as tmp_zip:
            save_bioimageio_package(descr, output_path=tmp_zip, compression_level=1)
            status, messages = validate_package(tmp_zip)
            if status == "failed":
                raise ExportError(f"{out}: bioimageio.spec finds the package invalid: "
                                  + "; ".join(messages))
    except OSError as err:
        raise ExportError(f"{out}: cannot write the package ({err.strerror or err})") from None
    weights = tuple(w for w in WEIGHT_FORMATS if getattr(descr.weights, w, None) is not None)
    return Exported(out, out.stat().st_size, status, messages, weights)


def validate_package(path) -> tuple[str, list[str]]:
    """(status, warnings) of a package by ``bioimageio.spec``, with its file checks (hashes,
    test tensors against the axes, the cover and documentation). Status ``failed`` means
    invalid; the list then holds the errors."""
    _import_spec()
    from bioimageio.spec import InvalidDescr, load_description  # lazy: as _import_spec
    descr = load_description(os.fspath(path), perform_io_checks=True)
    summary = descr.validation_summary
    msgs = []
    for detail in summary.details:
        for e in detail.errors:
            msgs.append(f"error at {'.'.join(map(str, e.loc))}: {e.msg}")
        for w in detail.warnings:
            msgs.append(f"warning at {'.'.join(map(str, w.loc))}: {w.msg}")
    status = "failed" if isinstance(descr, InvalidDescr) else summary.status
    return status, msgs
