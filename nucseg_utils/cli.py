"""The ``nucseg`` command line: the same functions as the notebooks, for people who script.

    nucseg score SOLUTION.csv SUBMISSION.csv [--json] [--per-image FILE]
    nucseg train --profile cpu|release|paper|smoke [--out RUN_DIR] [--resume | --overwrite] [...]
    nucseg predict [--model MODEL] --images PATH [PATH ...] --out DIR [--tta/--no-tta]
                   [--formats ...] [--pixel-size UM] [--channel N] [--overwrite] [--engine E]
                   [--tile N] [--workers N | --scheduler ADDRESS]
    nucseg evaluate [--model MODEL] [--split SPLIT] [--tta/--no-tta] [--out DIR] [--engine E]
    nucseg report --profile cpu|smoke        (run every notebook, refresh figures/)
    nucseg publish --run runs/cpu            (copy a run's model to models/<profile> + results)
                   [--validation-only]       (or only add its validation rows to the levers)
    nucseg synthetic [--out DIR]             (write the built-in synthetic set)
    nucseg export [--model MODEL] [--out FILE.zip] [--weights both|keras_hdf5|...] [--overwrite]
                                             (the model as a BioImage Model Zoo package)

``python -m nucseg_utils ...`` works too. Each command imports the modules it needs when it
runs, not at the top of this file, so that ``nucseg --help`` and ``nucseg score`` start without
the libraries other commands need. TensorFlow is only imported when a model is loaded or
trained. Errors about data, models or submissions are printed
as one line naming the file, with exit code 2; ``predict`` reports an image it cannot use in
one line naming the file, writes the others, and exits with 1.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

from nucseg_utils import __version__
from nucseg_utils.core import quiet, runs
from nucseg_utils.core.profiles import PROFILES, TRAIN_OPTIONS
from nucseg_utils.model import engines
from nucseg_utils.model.network import (
    CPU_MODEL,
    DEFAULT_MODEL,
    REPO,
    control_changes,
    model_file,
)
from nucseg_utils.postprocessing.methods import METHODS


def _add_tta(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tta", dest="tta", action="store_true", default=None,
                   help="8-fold test-time augmentation (default: the model's setting)")
    g.add_argument("--no-tta", dest="tta", action="store_false")


def _option(parse):
    """``parse`` for argparse, its ValueError's message shown as the option's error."""
    if parse in (int, float, str):
        return parse

    def option(text):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return option


def _formats(text: str) -> tuple[str, ...]:
    from nucseg_utils.predict.folder import parse_formats
    try:
        return parse_formats(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _pixel_size(text: str) -> float:
    from nucseg_utils.exports.files import check_pixel_size
    try:
        return check_pixel_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _number(cast, ok, words: str):
    """An argparse type: ``cast(text)`` when ``ok`` holds for it, else the error "must be
    ``words``, got ``text``"."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {words}, got {text}")
        return value
    return parse


_positive = _number(int, lambda v: v >= 1, "a whole number >= 1")
_positive_float = _number(float, lambda v: v > 0, "a number > 0")
_probability = _number(float, lambda v: 0 < v < 1, "a probability between 0 and 1")
_channel = _number(int, lambda v: v >= 0, "a channel number 0, 1, 2, ...")


def _model_path(text: str) -> str:
    """A model file, or the name of a committed model (``release``, ``cpu``) as its file."""
    return str(model_file(text))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nucseg",
                                 description=__doc__.split("\n\n")[0].replace("``", ""))
    ap.add_argument("--version", action="version", version=f"nucseg {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_add_score, _add_train, _add_predict_and_evaluate, _add_report_and_publish,
                _add_synthetic_and_export):
        add(sub)
    return ap


def _add_score(sub):
    p = sub.add_parser("score", help="score a Kaggle submission against a solution CSV")
    p.add_argument("solution")
    p.add_argument("submission")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--per-image", metavar="FILE", help="write per-image scores to this CSV")


def _add_train(sub):
    p = sub.add_parser("train", help="train a model with a profile")
    p.add_argument("--profile", default="cpu", choices=list(PROFILES))
    p.add_argument("--out", help="run folder (default runs/<profile>; layout in "
                   "nucseg_utils/core/runs.py)")
    p.add_argument("--data", help="data root (default: $NUCSEG_DATA, else ./data)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="train from scratch into a run folder that holds a model already")
    p.add_argument("--synthetic", action="store_true", help="train on the built-in synthetic set")
    for name, typ in TRAIN_OPTIONS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=_option(typ),
                       help="override the profile's value")
    p.add_argument("--stain", type=float, help="stain augmentation of the stained-tissue "
                   "images, its strength (0.3: each stain's amount scaled by up to +-30%%)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_predict_and_evaluate(sub):
    for name, helptext in (("predict", "segment images (a folder, a DSB split folder or zip)"),
                           ("evaluate", "predict and score a split with ground truth")):
        p = sub.add_parser(name, help=helptext)
        (_add_predict_only if name == "predict" else _add_evaluate_only)(p)
        _add_tta(p)
        p.add_argument("--engine", choices=engines.CHOICES,
                       help="what runs the network (default: $NUCSEG_ENGINE, else auto: "
                            "TensorFlow on a GPU, else the first that runs here of: "
                            + "; ".join(f"{e.name}: {e.description}" for e in sorted(
                                engines.ENGINES.values(), key=lambda e: (e.auto is None,
                                                                         e.auto or 0)))
                            + ")")
        p.add_argument("--postprocess", choices=list(METHODS),
                       help="post-processing (default: the model's): " + "; ".join(
                           f"{m.name}: {m.description}" for m in METHODS.values()))
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--verbose", action="store_true",
                       help="show TensorFlow's and OpenVINO's own log lines")


def _add_predict_only(p):
    """The options of ``nucseg predict`` that ``evaluate`` has not."""
    p.add_argument("--model", default=str(DEFAULT_MODEL), type=_model_path,
                   help="model file, or the name of a committed model, release or cpu "
                        "(default: release, trained on every labelled stage-1 image)")
    p.add_argument("--images", required=True, nargs="+", metavar="PATH",
                   help="a folder of images, a DSB split folder or zip, or image "
                        "files")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the folder the results go to (made if missing; an "
                        "interrupted run in it resumes)")
    _add_controls(p)
    p.add_argument("--formats", type=_formats,
                   help="comma-separated outputs per image, from labels-png (needed "
                        "for submission.csv), tiff, rois, overlay, measurements, "
                        "ome-zarr (the image with its nuclei), geojson (outlines with "
                        "measurements, for QuPath) (default: the first five)")
    p.add_argument("--pixel-size", type=_pixel_size, metavar="UM",
                   help="micrometres per pixel (default: a TIFF's own, else none)")
    p.add_argument("--channel", type=_channel, metavar="N",
                   help="segment channel N (0-based) of multi-channel images")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the images already done in --out")
    p.add_argument("--tile", type=_positive, metavar="N",
                   help="segment every image tile by tile, with tiles of N px and "
                        "nuclei stitched across them (default: only images over "
                        "4096x4096 px, with tiles of 1024 px at the model's scale); "
                        "a tiled image gets the same files but a label PNG")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=_positive, metavar="N",
                   help="predict on N worker processes of this machine (a Dask "
                        "LocalCluster); the same files as one process")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="predict on a running Dask cluster (tcp://HOST:8786; see "
                        "nucseg_utils/predict/distributed.py for `dask scheduler`, `dask "
                        "worker` and SLURM/PBS)")


def _add_evaluate_only(p):
    """The options of ``nucseg evaluate`` that ``predict`` has not."""
    p.add_argument("--model", default=str(CPU_MODEL), type=_model_path,
                   help="model file (default: the committed cpu model, whose test "
                        "split stage1_test is untouched)")
    p.add_argument("--split", help="the split to score (default: the model's test "
                   "split, stage2_test_final for a model trained on stage1_test, else "
                   "stage1_test); a split the model trained on is refused")
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--json", action="store_true")


@functools.cache
def _default_settings() -> dict:
    """The default model's post-processing settings, read once, for --help ({} when its file
    cannot be read)."""
    from nucseg_utils.model.network import read_config
    from nucseg_utils.postprocessing import settings
    try:
        return settings(read_config(DEFAULT_MODEL))
    except Exception:  # noqa: BLE001 - --help must work even without the model file
        return {}


def _model_default(key: str) -> str:
    """A setting of the default model, for --help ("?" when its file cannot be read)."""
    value = _default_settings().get(key)
    return "?" if value is None else f"{value:g}"


def _add_controls(p):
    """What a user turns when an image comes out wrong (nucseg predict)."""
    g = p.add_argument_group("controls (each overrides the model's setting; what it does to a "
                             "failing image in CONTRIBUTING.md)")
    g.add_argument("--diameter", type=_positive_float, metavar="PX",
                   help="the nuclei's diameter in pixels: every image is rescaled so that "
                        "they reach the size the model was trained on, without measuring "
                        "them (default: measured on each image)")
    g.add_argument("--threshold", type=_probability, metavar="P",
                   help="nucleus probability above which a pixel is nucleus; lower it when "
                        "faint nuclei are missed, raise it when background is taken "
                        "(default: the model's, " + _model_default("threshold") + " for the "
                        "release model; the paper's method uses Otsu's instead)")
    g.add_argument("--min-size", type=_positive, metavar="PX",
                   help="smallest nucleus kept, in pixels (default: the model's, "
                        + _model_default("min_size") + ")")
    g.add_argument("--min-area", type=_positive_float, metavar="UM2",
                   help="smallest nucleus kept, in square micrometres (needs --pixel-size)")
    g.add_argument("--exclude-on-edges", action="store_true",
                   help="drop the nuclei that touch the image's border (cut by the field of "
                        "view)")


def _controls(a) -> dict:
    """The model settings nucseg predict's controls set (none when none is given)."""
    import math

    from nucseg_utils.core.profiles import SettingsError
    min_size = a.min_size
    if a.min_area is not None:
        if not a.pixel_size:
            raise SettingsError("--min-area needs --pixel-size (micrometres per pixel)")
        if min_size is None:
            min_size = max(1, math.ceil(a.min_area / a.pixel_size ** 2))
    return control_changes(a.diameter, a.threshold, min_size, a.exclude_on_edges)


def _add_report_and_publish(sub):
    p = sub.add_parser("report", help="run every notebook with papermill; refresh figures/")
    p.add_argument("--profile", default="cpu", choices=list(PROFILES))
    p.add_argument("--run", help="run folder (default runs/report-<profile>)")
    p.add_argument("--data")
    p.add_argument("--synthetic", action="store_true", help="use the synthetic set even if "
                   "the DSB data is present")
    p.add_argument("--retrain", action="store_true",
                   help="train the model instead of loading the committed one")
    p.add_argument("--figures", help="where to write figures (default figures/ for real data)")

    p = sub.add_parser("publish", help="copy a finished run's model to models/ and write its "
                       "results (its test split, TTA on and off)")
    p.add_argument("--run", default="runs/cpu")
    p.add_argument("--out", help="the model's folder (default models/<the run's profile>)")
    p.add_argument("--split", help="the test split (default: the model's, as for evaluate)")
    p.add_argument("--data")
    p.add_argument("--validation-only", action="store_true",
                   help="judge a candidate on the validation images only: add its rows to "
                        "OUT's lever table, leave OUT's model alone, never touch the test split")
    p.add_argument("--rescore", action="store_true",
                   help="score the model already published in OUT on its test split again and "
                        "rewrite its results files (its post-processing and levers kept; no "
                        "run folder needed)")


def _add_synthetic_and_export(sub):
    p = sub.add_parser("synthetic", help="write the built-in synthetic nuclei set")
    p.add_argument("--out", help="folder (default: the cache)")
    p.add_argument("--train", type=int, default=24)
    p.add_argument("--test", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("info", help="what a model file holds: its network, its settings (which "
                       "of them calibration chose) and its published scores")
    p.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), type=_model_path,
                   help="model file (default: the committed release model)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p = sub.add_parser("export", help="write a model as a BioImage Model Zoo package (.zip for "
                       "bioimage.io, deepImageJ, bioimageio.core), validated")
    p.add_argument("--model", default=str(DEFAULT_MODEL), type=_model_path,
                   help="model file (default: the committed release model)")
    p.add_argument("--out", help="the .zip to write (default "
                   "runs/bioimageio/nucseg-<model folder>.bioimageio.zip)")
    p.add_argument("--weights", default="both",
                   choices=["both", "keras_hdf5", "tensorflow_saved_model_bundle"],
                   help="weight formats in the package (default both: Keras HDF5 and the "
                        "TensorFlow SavedModel that deepImageJ runs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true")



def cmd_score(a) -> int:
    from nucseg_utils.evaluation import metrics
    if a.per_image and Path(a.per_image).resolve() in (Path(a.solution).resolve(),
                                                       Path(a.submission).resolve()):
        raise FileExistsError(f"{a.per_image}: is the solution or the submission; not "
                              f"overwriting it with the per-image table")
    summary, table = metrics.score_csv(a.solution, a.submission)
    if a.per_image:
        runs.write_table(table, a.per_image)
    if a.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    print(f"DSB score  {summary['dsb']:.4f}  over {summary['images']} images")
    print(f"objects at IoU > 0.5: precision {summary['precision']:.4f}  recall "
          f"{summary['recall']:.4f}  F1 {summary['f1']:.4f}")
    if summary.get("missing_images"):
        print(f"{summary['missing_images']} image(s) of the solution are missing from the "
              f"submission and were scored as empty predictions")
    return 0


def cmd_train(a) -> int:
    from nucseg_utils import data, training
    from nucseg_utils.core import profiles
    from nucseg_utils.data import synthetic

    # options not given keep the profile's value; encoder_weights is set below ("none": None)
    overrides = {k: getattr(a, k) for k in profiles.TRAIN_OPTIONS
                 if k != "encoder_weights" and getattr(a, k) is not None}
    if a.stain is not None:
        overrides["augmentation"] = {"stain": a.stain}  # merged into the profile's
    prof = profiles.get_profile(a.profile, **overrides)
    if a.encoder_weights is not None:
        prof["encoder_weights"] = None if a.encoder_weights.lower() == "none" \
            else a.encoder_weights
    root = a.data
    if a.synthetic:
        root = synthetic.ensure_synthetic()
        print(f"Training on the built-in SYNTHETIC set at {root}")
    else:
        try:
            root = data.find_data_root(root, prof["train_splits"][0])
        except data.DataError:
            if a.profile != "smoke" or a.data:  # data named by the user: never swap it
                raise
            root = synthetic.ensure_synthetic()
            print(f"No DSB2018 data found: training on the built-in SYNTHETIC set at {root}")
    out = Path(a.out or Path("runs") / a.profile)
    layout = runs.RunLayout(out)
    if not (a.resume or a.overwrite) and any(f.exists()
                                             for f in (layout.model, layout.checkpoint)):
        raise FileExistsError(f"{out}: holds a trained model already; use --resume to continue "
                              f"it, --overwrite to train it again from scratch, or another --out")
    t0 = time.time()
    hist = training.train(prof, out, root=root, resume=a.resume, progress=not a.quiet)
    best = hist.loc[hist["val_loss"].idxmin()] if len(hist) else None
    print(f"trained {len(hist)} epochs in {time.time() - t0:.0f} s -> {layout.model}"
          + (f" (best epoch {int(best['epoch'])}, val_loss {best['val_loss']:.4f}, "
             f"val_iou {best['val_iou']:.3f})" if best is not None else ""))
    return 0


def cmd_predict(a) -> int:
    from nucseg_utils import predict
    from nucseg_utils.model.network import NucleusModel
    from nucseg_utils.predict import distributed

    def log(message):
        from tqdm.auto import tqdm
        tqdm.write(f"nucseg predict: {message}", file=sys.stderr)

    source = distributed.open_sources(a.images[0] if len(a.images) == 1 else a.images)
    # the images are checked from their headers before the model is loaded
    checked = predict.check_inputs(source, a.channel)
    if not checked.ok:
        for message in checked.failed.values():
            log(message)
        log(f"none of the {len(source.ids)} image(s) can be segmented; nothing written")
        return 1
    _check_postprocess(a.model, a.postprocess)
    changes = _controls(a)
    with quiet.tensorflow_logs(a.verbose):
        model = NucleusModel.load(a.model, engine=a.engine)
    if changes:
        model = model.with_settings(**changes)
    options = predict.PredictOptions(formats=a.formats or predict.DEFAULT_FORMATS, tta=a.tta,
                                     method=a.postprocess, channel=a.channel,
                                     pixel_size=a.pixel_size, overwrite=a.overwrite,
                                     tile=a.tile)
    if a.workers or a.scheduler:
        res = distributed.predict_distributed(model, source, a.out, options,
                                              workers=a.workers, scheduler=a.scheduler,
                                              checked=checked, progress=not a.quiet,
                                              verbose=a.verbose, log=log)
    else:
        res = predict.predict_folder(model, source, a.out, options, checked=checked,
                                     progress=not a.quiet, log=log)
    out = Path(a.out)
    ok = len(res.done) + len(res.skipped)
    tiled = [predict.is_tiled(options, checked.sizes.get(s)) for s in checked.ok]
    places = (_places(options.formats) if not all(tiled) else []) + (
        _places(predict.tiled_formats(options.formats)) if any(tiled) else [])
    written = list(dict.fromkeys(places)) + ["summary.csv"] + (
        ["submission.csv"] if (out / "submission.csv").is_file() and "labels-png" in
        options.formats and not all(tiled) else [])
    print(f"nucseg predict: {ok} image(s), {res.nuclei} nuclei ({len(res.done)} segmented now, "
          f"{len(res.skipped)} done before) with {runs.shown(a.model)} ({model.engine}) -> {out}: "
          f"{', '.join(written)}")
    if res.failed:
        print(f"{len(res.failed)} image(s) could not be segmented (see above and "
              f"{out / 'summary.csv'})")
        return 1
    return 0


def _places(formats) -> list[str]:
    from nucseg_utils.exports.files import output_paths
    return list(dict.fromkeys(f"{p.parent.name}/" for p in output_paths(".", "x",
                                                                      formats).values()))


def _check_postprocess(model_path, method: str | None) -> None:
    """Refuse a ``--postprocess`` that needs outputs the model does not have."""
    from nucseg_utils.core.profiles import SettingsError
    from nucseg_utils.model.network import read_config
    if method is None:
        return
    targets = read_config(model_path)["targets"]
    if METHODS[method].channels > len(targets):
        raise SettingsError(f"{model_path}: the '{method}' post-processing needs a model of "
                            f"{METHODS[method].channels} outputs; this one has "
                            f"{len(targets)} ({', '.join(targets)})")


def cmd_evaluate(a) -> int:
    from nucseg_utils import evaluation
    _check_postprocess(a.model, a.postprocess)
    with quiet.tensorflow_logs(a.verbose):
        s = evaluation.evaluate(a.model, a.split, a.data, a.out, tta=a.tta,
                                method=a.postprocess, progress=not a.quiet, engine=a.engine,
                                command=" ".join(["nucseg"] + sys.argv[1:]))
    if a.json:
        print(json.dumps(s, indent=2, default=float))
        return 0
    n, r = s["native"], s["resized_256"]
    print(f"{s['split']} ({s['dataset']}), {s['images']} images, TTA {'on' if s['tta'] else 'off'}"
          f", post-processing {s['postprocess']}")
    print(f"DSB at native resolution {n['dsb']:.4f}   (resized to 256x256, the paper's way: "
          f"{r['dsb']:.4f})")
    print(f"objects at IoU > 0.5: precision {n['precision']:.4f} recall {n['recall']:.4f} "
          f"F1 {n['f1']:.4f}; pixel accuracy {n['pixel_accuracy']:.4f}")
    for m, v in sorted(n["by_modality"].items()):
        print(f"  {m:13s} {v['dsb']:.4f}  ({v['images']} images)")
    return 0


def cmd_report(a) -> int:
    from nucseg_utils import report
    return report.run_all(profile=a.profile, run_dir=a.run, data_root=a.data,
                          synthetic=a.synthetic, retrain=a.retrain, figures_dir=a.figures)


def cmd_publish(a) -> int:
    from nucseg_utils.exports import publishing
    if a.rescore:
        if a.out is None:
            print("nucseg publish: error: --rescore needs --out, the published model's folder "
                  "(e.g. models/cpu)", file=sys.stderr)
            return 2
        res = publishing.rescore_model(a.out, a.data)
        print((Path(a.out) / "results.md").read_text())
        for key, dsb in res["dsb_before"].items():
            print(f"{key}: DSB {dsb:.4f} before, {res['evaluations'][key]['native']['dsb']:.4f} now")
        return 0
    if a.out is None:
        a.out = str(REPO / "models" / publishing.run_profile(a.run))
    res = publishing.publish_model(a.run, a.out, a.split, a.data,
                                   validation_only=a.validation_only)
    if a.validation_only:
        print((Path(a.out) / "ablation.md").read_text())
    else:
        print((Path(a.out) / "results.md").read_text())
    return 0 if res else 1


def cmd_synthetic(a) -> int:
    from nucseg_utils.data import synthetic
    root = synthetic.make_dataset(Path(a.out) if a.out else synthetic.default_synthetic_root(),
                                  n_train=a.train, n_test=a.test, seed=a.seed)
    print(f"synthetic set (not real data) at {root}")
    return 0


def cmd_info(a) -> int:
    import json

    from nucseg_utils.exports import publishing
    info = publishing.model_info(a.model)
    if a.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(f"{info['file']} (fingerprint {info['fingerprint']})")
    for part in ("network", "inference", "training"):
        print(f"  {part}: " + ", ".join(f"{k} {v}" for k, v in info[part].items()))
    print("  trained on: " + (", ".join(info["train_splits"]) or "(not recorded)"))
    print("  post-processing (calibrated: chosen on validation images by nucseg publish; "
          "recipe: the profile's or the default):")
    for k, v in info["postprocessing"].items():
        was = (f"; the recipe's {v['recipe']}" if v["from"] == "calibrated"
               and v["recipe"] is not None and v["recipe"] != v["value"] else "")
        print(f"    {k} {v['value']} ({v['from']}{was})")
    for key, s in info.get("scores", {}).items():
        print(f"  scored ({key}): DSB {s['dsb']:.4f} on {s['split']} ({s['images']} images)")
    return 0


def cmd_export(a) -> int:
    from nucseg_utils.exports import modelzoo
    model = Path(a.model)
    out = Path(a.out) if a.out else (Path("runs") / "bioimageio" /
                                     f"nucseg-{model.resolve().parent.name}.bioimageio.zip")
    weights = modelzoo.WEIGHT_FORMATS if a.weights == "both" else (a.weights,)

    def log(message):
        if not a.quiet:
            print(f"nucseg export: {message}", file=sys.stderr)

    res = modelzoo.export_package(model, out, weights=weights, overwrite=a.overwrite, log=log)
    print(f"{model} -> {res.path} ({res.size / 1e6:.1f} MB; weights: {', '.join(res.weights)}); "
          f"bioimageio.spec: {res.status}"
          + (f", {len(res.warnings)} warning(s):" if res.warnings else ""))
    for w in res.warnings:
        print(f"  {w}")
    return 0


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from nucseg_utils import data, model
    from nucseg_utils.core.profiles import SettingsError
    from nucseg_utils.core.settings import RecipeError
    from nucseg_utils.data import rle
    from nucseg_utils.evaluation import metrics
    from nucseg_utils.exports import modelzoo
    known = (data.DataError, metrics.ScoreError, model.ModelError, engines.EngineError,
             rle.RLEError, modelzoo.ExportError, SettingsError, RecipeError,
             FileNotFoundError, FileExistsError)
    try:
        return {"score": cmd_score, "train": cmd_train, "predict": cmd_predict,
                "evaluate": cmd_evaluate, "report": cmd_report, "publish": cmd_publish,
                "synthetic": cmd_synthetic, "export": cmd_export, "info": cmd_info}[a.command](a)
    except known as err:
        print(f"nucseg {a.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nucseg {a.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
