"""Check this repository against Colab's software stack, outside CI: ``make colab-check``.

The Makefile target builds ``.venv-colab`` with Colab's versions of what this project cannot
choose on Colab (:data:`COLAB_STACK`: TensorFlow, tf-keras, Keras, NumPy), with Python 3.13
when the machine has it (Colab's), and runs this script in it. The script then does what a
Colab session does, in order, and says PASS or FAIL for each step:

1. ``stack``: the venv holds Colab's versions (else the check is meaningless, and stops);
2. ``install``: :func:`nucseg_utils.colab.install_missing`, the set-up cell's install
   (this package, segmentation-models==1.0.1 and whatever else is missing), and then the
   TensorFlow, tf-keras, Keras and NumPy versions are the same as before: the install must
   leave Colab's own alone;
3. ``imagenet``: builds the paper's U-Net with ImageNet weights; where there is no internet
   (this project's machines), the download must fail with the ModelError that says what to do;
   with internet the weights load;
4. ``train``: one epoch of one step of the paper profile, cut to 64-px inputs and batches of 4
   in micro-batches of 2, on a small synthetic set, with the copy to a stand-in Drive folder;
   then one accumulated step in mixed_float16, forced on the CPU (the GPU path's code);
5. ``predict``: loads the committed ``models/cpu/model.npz`` and predicts one synthetic image.

    python colab/check_colab_stack.py [--steps stack,install,imagenet,train,predict]

Exit code 0 when every step passed. Nothing here needs a GPU, Drive or Kaggle.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # as the set-up cell does on Colab

# Colab's versions of what its runtime brings and this project must not replace
COLAB_STACK = {"tensorflow": "2.20.", "tf-keras": "2.20.", "keras": "3.13.", "numpy": "2.1."}
COLAB_PYTHON = "3.13"
STEPS = ("stack", "install", "imagenet", "train", "predict")


def versions() -> dict:
    out = {}
    for name in COLAB_STACK:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def step_stack() -> str:
    got = versions()
    wrong = {k: v for k, v in got.items() if not (v or "").startswith(COLAB_STACK[k])}
    py = platform.python_version()
    note = ("" if py.startswith(COLAB_PYTHON) else
            f"; Python {py} here, Colab has {COLAB_PYTHON}: same packages, another interpreter")
    if wrong:
        raise RuntimeError(f"not Colab's stack: {wrong} (expected {COLAB_STACK}); "
                           f"run `make colab-check`, which installs it")
    return ", ".join(f"{k} {v}" for k, v in got.items()) + f", Python {py}{note}"


def step_install() -> str:
    from nucseg_utils import colab
    before = versions()
    t0 = time.time()
    installed = colab.install_missing(REPO)
    after = versions()
    if before != after:
        changed = {k: f"{before[k]} -> {after[k]}" for k in before if before[k] != after[k]}
        raise RuntimeError(f"the set-up's install changed Colab's packages: {changed}")
    import segmentation_models  # noqa: F401 - the install made it importable
    what = " ".join(installed) if installed else "nothing (all present already)"
    return (f"installed {what} in {time.time() - t0:.0f} s; tensorflow, tf-keras, keras, "
            f"numpy unchanged ({', '.join(f'{k} {v}' for k, v in after.items())})")


def step_imagenet() -> str:
    from nucseg_utils import model
    from nucseg_utils.core import profiles
    prof = profiles.get_profile("paper")
    t0 = time.time()
    try:
        net = model.build_model(prof)
    except model.ModelError as err:
        msg = str(err)
        for needed in ("could not download the imagenet weights of the resnet152 encoder",
                       "encoder_weights=None", "Colab"):
            if needed not in msg:
                raise RuntimeError(f"the ModelError lacks {needed!r}: {msg}") from None
        return f"offline: refused cleanly in {time.time() - t0:.0f} s with ModelError: {msg}"
    return (f"online: the ImageNet weights were downloaded and loaded "
            f"({net.count_params() / 1e6:.1f} M parameters)")


def step_train() -> str:
    import numpy as np

    from nucseg_utils import colab, training
    from nucseg_utils.core import profiles
    from nucseg_utils.data import synthetic
    with tempfile.TemporaryDirectory(prefix="colab-check-") as tmp:
        tmp = Path(tmp)
        root = synthetic.make_dataset(tmp / "data", n_train=6, n_test=3, seed=0,
                                      shapes=((96, 96), (128, 96)))
        prof = profiles.get_profile("paper", encoder_weights=None, input_size=64,
                                    batch_size=4, micro_batch=2, epochs=1, steps_per_epoch=1)
        t0 = time.time()
        hist = training.train(prof, tmp / "run", root=root, progress=False,
                              sync_to=tmp / "drive")
        info = __import__("json").loads((tmp / "run" / "run.json").read_text())
        on_drive = sorted(p.name for p in (tmp / "drive").iterdir())
        if on_drive != sorted(colab.TRAINING_FILES) or not np.isfinite(hist["loss"]).all():
            raise RuntimeError(f"training left {on_drive} on the stand-in Drive, history "
                               f"{hist.to_dict('records')}")
        line = (f"paper profile at 64 px, batch 4 = {info['accumulation_steps']} micro-batches "
                f"of 2, {'mixed_float16' if info['mixed_precision_used'] else 'float32'} "
                f"(no GPU here): loss {hist['loss'].iloc[0]:.4f}, val_loss "
                f"{hist['val_loss'].iloc[0]:.4f} in {time.time() - t0:.0f} s; the training "
                f"files were copied to the stand-in Drive folder")
    # the GPU path's code: mixed precision forced on the CPU, one accumulated step
    t0 = time.time()
    net = training.build_training_model(prof, mixed=True)
    rng = np.random.default_rng(0)
    x = rng.random((4, 64, 64, 3), dtype=np.float32)
    y = (rng.random((4, 64, 64, 1)) > 0.5).astype(np.float32)
    logs = training.AccumulatingStep(net, 2)(x, y)
    if not np.isfinite(logs["loss"]):
        raise RuntimeError(f"mixed precision step: {logs}")
    return (line + f"; mixed_float16 step ({type(net.optimizer).__name__}): loss "
            f"{logs['loss']:.4f} in {time.time() - t0:.0f} s")


def step_predict() -> str:
    import numpy as np

    from nucseg_utils.data import synthetic
    from nucseg_utils.inference import forward
    from nucseg_utils.inference.preprocessing import normalize
    from nucseg_utils.model import NucleusModel
    path = REPO / "models" / "cpu" / "model.npz"
    net = NucleusModel.load(path)
    config = net.config
    image, labels = synthetic.make_image(np.random.default_rng(7), (256, 320),
                                         look="fluorescence", channels=3)
    prob = forward.forward_pass(net, normalize(image[..., :3],
                                                        config["normalization"]), config)
    if prob.shape[:2] != image.shape[:2] or not (0 <= prob.min() <= prob.max() <= 1):
        raise RuntimeError(f"probabilities of shape {prob.shape}, range "
                           f"{prob.min()}..{prob.max()}")
    mask = prob[..., 0] > config.get("threshold", 0.5)
    inter = np.logical_and(mask, labels > 0).sum()
    iou = inter / max(1, np.logical_or(mask, labels > 0).sum())
    return (f"{path.relative_to(REPO)} ({config['backbone']}, {len(net.keras.get_weights())} "
            f"arrays) on a 256x320 synthetic image: probabilities {prob.shape}, mean "
            f"{prob[..., 0].mean():.4f}, foreground IoU with the true nuclei {iou:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default=",".join(STEPS),
                    help=f"comma-separated, of {', '.join(STEPS)} (default: all)")
    a = ap.parse_args(argv)
    steps = [s.strip() for s in a.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {unknown}")
    print(f"colab-check: {sys.executable} (Python {platform.python_version()}), "
          f"repository {REPO}", flush=True)
    failed = []
    for name in steps:
        t0 = time.time()
        try:
            detail = globals()[f"step_{name}"]()
        except Exception as err:  # noqa: BLE001 - report every step's failure, go on
            failed.append(name)
            print(f"FAIL {name} ({time.time() - t0:.0f} s): {type(err).__name__}: {err}",
                  flush=True)
            traceback.print_exc(limit=3)
            if name == "stack":
                break
            continue
        print(f"PASS {name} ({time.time() - t0:.0f} s): {detail}", flush=True)
    print(f"colab-check: {len(steps) - len(failed)} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
