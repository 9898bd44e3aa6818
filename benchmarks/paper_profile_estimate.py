"""An ESTIMATE (not a measurement) of what the ``paper`` profile needs on a Colab T4.

    python benchmarks/paper_profile_estimate.py [--out benchmarks/paper_profile_estimate.md]
                                                [--util-fp32 0.4] [--util-fp16 0.2]

Nothing here runs on a GPU: the network is only built (ResNet-152 U-Net, 256x256, random
weights), on the CPU, and counted.

- **Memory per micro-batch.** Every layer's output is kept for the backward pass, so the sum of
  the layers' output sizes (per image) x micro-batch x bytes per value is the activation
  memory; the backward pass (gradients of the activations, cuDNN workspaces) raises the peak to
  about 2-3 times that. Weights, their gradients, Adam's two moments and the accumulated
  gradients add 5 x parameters x 4 bytes, and the CUDA context about 0.4 GB.
- **Time per epoch.** The multiply-adds of the convolutions (2 FLOPs each) give the forward
  FLOPs per image; a training step costs about 3 times the forward pass, validation 1 time.
  Divided by a T4's peak (8.1 TFLOPS fp32; 65 TFLOPS fp16 on its tensor cores) times an assumed
  utilisation (``--util-fp32``, ``--util-fp16``). The defaults are a little below what
  NVIDIA publishes for ResNet-50 on a T4 (DeepLearningExamples, PyTorch ResNet50 v1.5: about
  420 images/s in fp32 and 1,190 in mixed precision, inference at batch 32-128, i.e. about
  43% and 15% of the peaks at 8.2 GFLOP per 224-px image): training in Keras is assumed to
  do no better. As a check of the FLOP count, the training step measured on this project's
  2-core CPU (1.28 s per ResNet-152 image at 256 px) implies a plausible CPU rate.
- **Input pipeline.** The one part measured here: CPU seconds (process time, so the number
  holds on a busy machine) of ``PatchSampler.batch`` for the paper profile on random images
  of the sizes DSB2018's stage1_train has. It runs ahead of the GPU step
  (``augmentation.prefetch``: Keras' ``OrderedEnqueuer``, one worker thread).
- **Checkpoint sizes.** ``checkpoint.npz`` holds the float32 weights and Adam's two moments;
  ``model.npz`` the float16 weights, compressed.

It prints the numbers and writes them as Markdown (default ``benchmarks/paper_profile_estimate.md``).
"""
from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np

# common first: it puts the repository on sys.path for nucseg_utils
from common import REPO

from nucseg_utils.core import profiles  # (sets the Keras environment variables)
from nucseg_utils.core.settings import recipe_of
from nucseg_utils.model import tf_setup
from nucseg_utils.training import split_ids
from nucseg_utils.training.augmentation import PatchSampler

T4_MEMORY_GB = 15.0          # 15,360 MiB on the card; TensorFlow can allocate about 14.7 GB
T4_PEAK_TFLOPS = {"fp32": 8.1, "mixed_float16": 65.0}
CUDA_CONTEXT_GB = 0.4
BACKWARD_FACTOR = (2.0, 3.0)  # peak / stored activations, low and high
# DSB2018 image counts (the paper trains on stage1_train + stage1_test, split 70:30)
N_IMAGES = {"stage1_train": 670, "stage1_test": 65}
MICRO_BATCHES = (4, 8, 16, 32)
GB = 1e9
CPU_STEP_SECONDS_PER_IMAGE = 1.282  # measured here: ResNet-152 U-Net at 256 px, 2 cores
# (height, width): number of stage1_train images of that size (the common ones)
DSB_SIZES = {(256, 256): 334, (256, 320): 112, (520, 696): 92, (360, 360): 91,
             (1024, 1024): 16, (512, 640): 13, (603, 1272): 6, (260, 347): 5}


def count_network(profile: dict) -> dict:
    """Parameters, output values per image (summed over layers) and forward FLOPs per image
    of the profile's U-Net at its input size, built with random weights."""
    tf_setup()
    # imported here: segmentation_models imports TensorFlow (seconds), after tf_setup has
    # set its environment
    import segmentation_models as sm
    s = int(profile["input_size"])
    net = sm.Unet(profile["backbone"], encoder_weights=None, classes=len(profile["targets"]),
                  activation="sigmoid", input_shape=(s, s, 3))
    values, flops, convs = 0, 0, 0
    for layer in net.layers:
        if layer.__class__.__name__ == "InputLayer":
            continue
        outs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        for t in outs:
            values += math.prod(int(d) for d in t.shape[1:])
        if layer.__class__.__name__ == "Conv2D":
            convs += 1
            kh, kw = layer.kernel_size
            c_in = int(layer.input.shape[-1]) // getattr(layer, "groups", 1)
            h, w, c_out = (int(d) for d in layer.output.shape[1:])
            flops += 2 * kh * kw * c_in * c_out * h * w
    return {"params": int(net.count_params()), "values_per_image": int(values),
            "forward_flops": int(flops), "layers": len(net.layers), "convs": convs}


def measure_pipeline(profile: dict, n_batches: int = 3, seed: int = 0) -> dict:
    """CPU seconds per batch of the paper's input pipeline on random images of DSB2018's
    sizes (one of each size, drawn with the sizes' frequencies)."""
    rng = np.random.default_rng(seed)
    images, labels, weights = [], [], []
    for (h, w), n in DSB_SIZES.items():
        images.append(rng.random((h, w, 3), dtype=np.float32))
        lab = np.zeros((h, w), np.int32)
        for k in range(1, 30):
            y, x = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 12))
            lab[y:y + 12, x:x + 12] = k
        labels.append(lab)
        weights.append(n)
    sampler = PatchSampler(images, labels, profile, weights)
    sampler.batch(0)  # warm-up
    t0 = time.process_time()
    for step in range(1, n_batches + 1):
        sampler.batch(step)
    sec = (time.process_time() - t0) / n_batches
    return {"seconds_per_batch": sec, "batch": int(profile["batch_size"]), "n_batches": n_batches}


def split_sizes(profile: dict) -> tuple[int, int]:
    n = sum(N_IMAGES[s] for s in profile["train_splits"])
    t = recipe_of(profile).training
    train, val = split_ids([f"{i:04d}" for i in range(n)], t.val_fraction, t.split_draw_seed())
    return len(train), len(val)


def estimate(counts: dict, profile: dict, util: dict, pipeline: dict | None = None) -> dict:
    n_train, n_val = split_sizes(profile)
    batch = int(profile["batch_size"])
    steps = math.ceil(n_train / batch)
    p = counts["params"]
    fixed_gb = (5 * p * 4) / GB + CUDA_CONTEXT_GB  # weights, grads, Adam m & v, accumulators
    memory = []
    for precision, nbytes in (("fp32", 4), ("mixed_float16", 2)):
        for mb in MICRO_BATCHES:
            act = counts["values_per_image"] * mb * nbytes / GB
            lo, hi = (fixed_gb + act * f for f in BACKWARD_FACTOR)
            memory.append({"precision": precision, "micro_batch": mb, "activations_gb": act,
                           "peak_low_gb": lo, "peak_high_gb": hi,
                           "fits": "yes" if hi < T4_MEMORY_GB else
                           ("maybe" if lo < T4_MEMORY_GB else "no")})
    train_flops = steps * batch * 3 * counts["forward_flops"]
    val_flops = n_val * counts["forward_flops"]
    timing = []
    for precision, peak in T4_PEAK_TFLOPS.items():
        rate = peak * 1e12 * util[precision]
        sec = (train_flops + val_flops) / rate
        step = batch * 3 * counts["forward_flops"] / rate
        timing.append({"precision": precision, "peak_tflops": peak, "utilisation": util[precision],
                       "seconds_per_step": step, "seconds_per_epoch": sec,
                       "hours_per_run": sec * int(profile["epochs"]) / 3600})
    ckpt_gb = 3 * p * 4 / GB
    every = int(profile.get("checkpoint_every") or 1)
    return {"n_train": n_train, "n_val": n_val, "steps": steps, "fixed_gb": fixed_gb,
            "memory": memory, "timing": timing, "checkpoint_gb": ckpt_gb,
            "model_gb": p * 2 / GB, "drive_copies": math.ceil(int(profile["epochs"]) / every),
            "checkpoint_every": every, "pipeline": pipeline,
            "cpu_gflops": 3 * counts["forward_flops"] / CPU_STEP_SECONDS_PER_IMAGE / 1e9}


def report(profile: dict, counts: dict, est: dict, build_seconds: float) -> str:
    """The Markdown report: the network and data, memory, time, checkpoints, caveats."""
    mb = profile.get("micro_batch") or profile["batch_size"]
    return "\n".join(network_lines(profile, counts, est) + memory_lines(profile, est, mb) +
                     time_lines(profile, est) + checkpoint_lines(profile, est, mb, build_seconds))


def network_lines(profile: dict, counts: dict, est: dict) -> list[str]:
    p = counts["params"]
    return [
        "# The `paper` profile on a Colab T4: an estimate",
        "",
        "**This is an estimate, not a measurement.** Nothing here ran on a GPU: the network was "
        "built on a CPU and counted by `benchmarks/paper_profile_estimate.py`, and the T4 "
        "numbers are its published peaks times an assumed utilisation.",
        "",
        f"Network: U-Net, {profile['backbone']} encoder, {profile['input_size']}x"
        f"{profile['input_size']} input, {len(profile['targets'])} output(s): "
        f"{p / 1e6:.1f} M parameters, {counts['layers']} layers ({counts['convs']} convolutions), "
        f"{counts['values_per_image'] / 1e6:.1f} M output values per image summed over the "
        f"layers, {counts['forward_flops'] / 1e9:.1f} GFLOP per image forward "
        f"(2 FLOPs per multiply-add, convolutions only).",
        "",
        f"Data: {' + '.join(profile['train_splits'])} = {est['n_train'] + est['n_val']} images, "
        f"split {1 - profile['val_fraction']:.0%}:{profile['val_fraction']:.0%} -> "
        f"{est['n_train']} training images, {est['steps']} steps of {profile['batch_size']} per "
        f"epoch, {est['n_val']} validation images.",
        "",
    ]


def memory_lines(profile: dict, est: dict, mb: int) -> list[str]:
    lines = [
        "## Memory per micro-batch on a T4 (15 GB)",
        "",
        f"Stored activations = output values per image x micro-batch x bytes (4 in fp32, 2 in "
        f"mixed_float16); the peak is {BACKWARD_FACTOR[0]:g}-{BACKWARD_FACTOR[1]:g} times that "
        f"during the backward pass, plus {est['fixed_gb']:.1f} GB for weights, gradients, Adam's "
        f"moments, the accumulated gradients and the CUDA context.",
        "",
        "| precision | micro-batch | activations (GB) | peak, estimated (GB) | fits in 15 GB |",
        "|---|---:|---:|---:|---|",
    ]
    for r in est["memory"]:
        lines.append(f"| {r['precision']} | {r['micro_batch']} | {r['activations_gb']:.1f} | "
                     f"{r['peak_low_gb']:.1f}-{r['peak_high_gb']:.1f} | {r['fits']} |")
    lines += [
        "",
        f"The profile uses micro-batches of {mb} ({profile['batch_size'] // mb} accumulation "
        f"steps per batch of {profile['batch_size']}), "
        f"{'mixed_float16 on a GPU' if profile.get('mixed_precision') else 'float32'}.",
        "",
    ]
    return lines


def time_lines(profile: dict, est: dict) -> list[str]:
    lines = [
        "## Time per epoch on a T4",
        "",
        f"A training step costs about 3 forward passes (forward + backward), validation one: "
        f"{est['steps']} x {profile['batch_size']} x 3 + {est['n_val']} = "
        f"{est['steps'] * profile['batch_size'] * 3 + est['n_val']} image-forward-passes per "
        f"epoch.",
        "",
        "| precision | T4 peak (TFLOPS) | assumed utilisation | s per step of "
        f"{profile['batch_size']} | s per epoch | hours for {profile['epochs']} epochs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in est["timing"]:
        lines.append(f"| {r['precision']} | {r['peak_tflops']:g} | {r['utilisation']:.0%} | "
                     f"{r['seconds_per_step']:.2f} | {r['seconds_per_epoch']:.0f} | "
                     f"{r['hours_per_run']:.1f} |")
    lines += [
        "",
        "The utilisations are assumptions: NVIDIA publishes about 420 (fp32) and 1,190 (mixed "
        "precision) images/s for ResNet-50 inference on a T4 (DeepLearningExamples, PyTorch "
        "ResNet50 v1.5, batch 32-128), about 43% and 15% of the peaks at 8.2 GFLOP per image; "
        "Keras training is assumed to do a little worse. Check of the FLOP count: the training "
        "step measured on this project's 2-core CPU (1.28 s per image) implies "
        f"{est['cpu_gflops']:.0f} GFLOP/s there, a plausible rate for two cores.",
    ]
    pipe = est.get("pipeline")
    if pipe:
        per = pipe["seconds_per_batch"]
        fastest = min(r["seconds_per_step"] for r in est["timing"])
        lines += [
            "",
            f"**Input pipeline (measured here, CPU time):** `PatchSampler.batch` makes a batch "
            f"of {pipe['batch']} paper-profile samples (resize to {profile['input_size']} px, "
            f"rotation, shift, shear, zoom, flips) from random images of DSB2018's sizes in "
            f"{per:.2f} CPU s ({per / pipe['batch'] * 1000:.0f} ms per image; mean of "
            f"{pipe['n_batches']} batches). It runs in one worker thread beside the step; "
            + ("it keeps up with the estimated GPU step." if per < fastest else
               f"that is slower than the estimated mixed-precision GPU step ({fastest:.2f} s), "
               f"so on Colab's 2 vCPUs the input pipeline, not the T4, may set the pace: "
               f"{per * est['steps']:.0f} s of sampling per epoch."),
        ]
    return lines


def checkpoint_lines(profile: dict, est: dict, mb: int, build_seconds: float) -> list[str]:
    return [
        "",
        "## Checkpoints on Drive",
        "",
        f"`checkpoint.npz` (float32 weights + Adam's two moments): about "
        f"{est['checkpoint_gb']:.2f} GB; `model.npz` (float16 weights, compressed): at most "
        f"{est['model_gb']:.2f} GB. Copied to Drive every {est['checkpoint_every']} epochs, "
        f"a {profile['epochs']}-epoch run replaces the checkpoint on Drive "
        f"{est['drive_copies']} times: about {est['drive_copies'] * est['checkpoint_gb']:.0f} GB "
        f"in Drive's trash at most (every epoch it would be "
        f"{profile['epochs'] * est['checkpoint_gb']:.0f} GB).",
        "",
        "## Caveats",
        "",
        "- The utilisations are assumptions, and the 2-3x backward factor a rule of thumb; "
        "TensorFlow's allocator, cuDNN's algorithm choice and XLA can move both either way. "
        "Measure on a T4 (`nvidia-smi`, the seconds per epoch in `history.csv`) before relying "
        "on them.",
        "- Batch normalisation sees micro-batches: its statistics are those of "
        f"{mb} images, not {profile['batch_size']}. The Jaccard loss of segmentation_models is "
        "computed over a whole batch, so the average of the micro-batches' losses is close to, "
        "not equal to, the loss of the full batch.",
        "",
        f"Counted on {platform.machine()} with Python {platform.python_version()} "
        f"(building the network took {build_seconds:.0f} s).",
        "",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "paper_profile_estimate.md"))
    ap.add_argument("--util-fp32", type=float, default=0.35,
                    help="assumed fraction of the T4's fp32 peak reached (default 0.35)")
    ap.add_argument("--util-fp16", type=float, default=0.12,
                    help="assumed fraction of the T4's fp16 tensor-core peak (default 0.12)")
    a = ap.parse_args(argv)
    profile = profiles.get_profile("paper")
    t0 = time.time()
    counts = count_network(profile)
    build_seconds = time.time() - t0
    pipeline = measure_pipeline(profile)
    est = estimate(counts, profile, {"fp32": a.util_fp32, "mixed_float16": a.util_fp16},
                   pipeline)
    text = report(profile, counts, est, build_seconds)
    print(text)
    Path(a.out).write_text(text)
    print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
