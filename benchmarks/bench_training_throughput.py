"""4. Training throughput: images/s of the input pipeline (``PatchSampler.batch``) vs
Keras' ``ImageDataGenerator`` with the paper's arguments, of a training step of the cpu
profile's model, and of steps fed by ``augmentation.prefetch`` (as training feeds them) or
with each batch made in turn."""
from __future__ import annotations

import time

import numpy as np

# common first: it puts the repository on sys.path for nucseg_utils
from common import Result, fmt, md_table
from context import Context

from nucseg_utils import data as data_mod
from nucseg_utils import model as model_mod
from nucseg_utils.core.profiles import get_profile
from nucseg_utils.inference.preprocessing import normalize, resize_image, resize_labels
from nucseg_utils.training.augmentation import PatchSampler, prefetch

NAME = "training"
TITLE = "4. Training throughput"
NEEDS_MODEL = False
PIPELINE_RATIO_TARGET = 10.0        # pipeline images/s >= 10 x training-step images/s (#6)


def training_data(ctx: Context, n: int):
    """``n`` seeded random stage1_train samples."""
    split = data_mod.open_split("stage1_train", ctx.root)
    try:
        rng = np.random.default_rng([ctx.seed, 4])
        ids = sorted(rng.choice(split.ids, size=min(n, len(split)), replace=False).tolist())
        return [split.sample(s) for s in ids]
    finally:
        split.close()


def time_batches(make_batch, n_batches: int):
    """(images/s, seconds per batch, last batch, mean images per batch) of
    ``make_batch(step)``."""
    t0 = time.perf_counter()
    count = 0
    batch = None
    for step in range(n_batches):
        batch = make_batch(step)
        count += len(batch[0])
    dt = time.perf_counter() - t0
    return count / dt, dt / n_batches, batch, count / n_batches


def keras_generator(images, masks, batch_size: int, seed: int):
    """The paper's augmentation with Keras' ImageDataGenerator: one generator for images,
    one for masks, the same arguments and seed so both see the same transforms."""
    # imported here: TensorFlow takes seconds to import, and only this benchmark needs Keras'
    # generator (the tests of this module run without TensorFlow)
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    args = dict(rotation_range=90, width_shift_range=0.1, height_shift_range=0.1,
                shear_range=10, zoom_range=0.1, horizontal_flip=True, vertical_flip=True)
    gi, gm = ImageDataGenerator(**args), ImageDataGenerator(**args)
    fi = gi.flow(images, batch_size=batch_size, seed=seed, shuffle=True)
    fm = gm.flow(masks, batch_size=batch_size, seed=seed, shuffle=True)
    return zip(fi, fm)


def pipelines(ctx: Context, samples, labels, cpu: dict, paper: dict):
    """Times the three input pipelines; returns the table's rows, their images/s, the cpu
    profile's sampler and its last batch."""
    nb = ctx.sizes["pipeline_batches"]
    table = []
    # the project's pipeline, cpu profile (what training uses)
    cpu_imgs = [normalize(s.image, cpu["normalization"]) for s in samples]
    sampler = PatchSampler(cpu_imgs, labels, cpu)
    cpu_rate, cpu_sec, cpu_batch, cpu_n = time_batches(sampler.batch, nb)
    table.append(["nucseg PatchSampler.batch, cpu profile",
                  f"{cpu['input_size']}x{cpu['input_size']} crops, "
                  f"{'+'.join(cpu['targets'])}", fmt(cpu_n), fmt(cpu_rate),
                  fmt(1000 * cpu_sec)])
    # the project's pipeline, paper profile (whole image resized to 256, paper ranges)
    ctx.log("training: PatchSampler with the paper profile")
    pap_imgs = [normalize(s.image, paper["normalization"]) for s in samples]
    pap = dict(paper, batch_size=cpu["batch_size"])
    pap_rate, pap_sec, _, pap_n = time_batches(PatchSampler(pap_imgs, labels, pap).batch, nb)
    table.append(["nucseg PatchSampler.batch, paper profile",
                  "whole image to 256x256, mask", fmt(pap_n), fmt(pap_rate),
                  fmt(1000 * pap_sec)])
    # Keras ImageDataGenerator on the same images, resized to 256x256 beforehand
    ctx.log("training: Keras ImageDataGenerator")
    x = np.stack([resize_image(im, (256, 256)) for im in pap_imgs])
    y = np.stack([(resize_labels(lab, (256, 256)) > 0)[..., None] for lab in labels]
                 ).astype(np.float32)
    gen = keras_generator(x, y, cpu["batch_size"], ctx.seed)
    k_rate, k_sec, _, k_n = time_batches(lambda _step: next(gen), nb)
    table.append(["Keras ImageDataGenerator (paper's arguments)",
                  "pre-resized 256x256 image + mask", fmt(k_n), fmt(k_rate),
                  fmt(1000 * k_sec)])
    rates = {"PatchSampler cpu profile": cpu_rate, "PatchSampler paper profile": pap_rate,
             "Keras ImageDataGenerator paper arguments": k_rate}
    return table, rates, sampler, cpu_batch, cpu_sec


def training_step(ctx: Context, cpu: dict, sampler, first_batch):
    """(seconds of the first step, mean seconds of the next steps, the network) of
    ``train_on_batch`` on the cpu profile's model."""
    ctx.log("training: train_on_batch of the cpu profile's model")
    model_mod.tf_setup()
    net = model_mod.compile_model(model_mod.build_model(cpu), cpu)
    xb, yb = first_batch
    t0 = time.perf_counter()
    net.train_on_batch(xb, yb)
    first = time.perf_counter() - t0
    steps = ctx.sizes["train_steps"]
    batches = [sampler.batch(1000 + s) for s in range(steps)]  # made first: steps alone
    t0 = time.perf_counter()
    for xb, yb in batches:
        net.train_on_batch(xb, yb)
    return first, (time.perf_counter() - t0) / steps, net


def fed_steps(ctx: Context, net, sampler, steps: int) -> dict:
    """Mean seconds per training step when ``augmentation.prefetch`` makes the batches ahead
    (what training does) and when each step's batch is made in turn: the same batches."""
    out = {}
    for name, batches in (("made ahead (prefetch)", lambda: prefetch(sampler, 2000,
                                                                      2000 + steps)),
                          ("made in turn", lambda: sampler.batches(2000, 2000 + steps))):
        ctx.log(f"training: {steps} steps, batches {name}")
        t0 = time.perf_counter()
        for xb, yb in batches():
            net.train_on_batch(xb, yb)
        out[name] = (time.perf_counter() - t0) / steps
    return out


def describe(nb, n_samples, cpu, steps, first, table, step_rate, step_sec, ratio, share,
             fed):
    """The report's paragraphs and table."""
    return [
        f"Images per second of the input pipeline alone (one thread, {nb} batches, on "
        f"{n_samples} seeded random stage1_train images held in memory), and of a "
        f"training step (`train_on_batch`) of the cpu profile's model "
        f"({cpu['backbone']} U-Net, batch {cpu['batch_size']} x {cpu['input_size']}x"
        f"{cpu['input_size']}, {'+'.join(cpu['targets'])} targets, {steps} steps after one "
        f"untimed first step of {first:.1f} s). Keras' `ImageDataGenerator` gets the paper's "
        f"arguments (rotation_range=90, width/height_shift_range=0.1, shear_range=10, "
        f"zoom_range=0.1, horizontal and vertical flips) and the same images resized to "
        f"256x256 beforehand (not timed), with a second generator and the same seed for the "
        f"masks; nucseg's paper profile does the resize, rotation, shear, zoom, shift and "
        f"flips in one interpolation per sample, and also builds the targets.",
        "",
        *md_table(["pipeline", "what it makes", "images per batch", "images/s", "ms/batch"],
                  table),
        "",
        f"Training step: **{fmt(step_rate)} images/s** ({1000 * step_sec:.0f} ms per "
        f"batch). The cpu pipeline makes **{ratio:.1f}x** as many images per second as the "
        f"training step consumes: making a batch takes about {fmt(share, 2)}% of the time "
        f"of a step: " +
        ("it is not the bottleneck." if ratio >= PIPELINE_RATIO_TARGET else
         f"below the {PIPELINE_RATIO_TARGET:g}x margin this benchmark asks for."),
        "",
        f"Steps fed as training feeds them, the batches made ahead by "
        f"`augmentation.prefetch` (Keras' `OrderedEnqueuer`, one worker thread) while the "
        f"step runs: **{1000 * fed['made ahead (prefetch)']:.0f} ms per step**; each batch "
        f"made in turn before its step: {1000 * fed['made in turn']:.0f} ms; the step alone "
        f"(above): {1000 * step_sec:.0f} ms ({steps} steps each, the same batches).",
    ]


def run(ctx: Context) -> Result:
    res = Result()
    nb = ctx.sizes["pipeline_batches"]
    cpu = get_profile("cpu")
    paper = get_profile("paper")
    samples = training_data(ctx, ctx.sizes["train_images"])
    ctx.log(f"training: {len(samples)} stage1_train images")
    labels = [s.labels.astype(np.int32) for s in samples]
    table, rates, sampler, cpu_batch, cpu_sec = pipelines(ctx, samples, labels, cpu, paper)
    for name, rate in rates.items():
        res.add(NAME, f"input pipeline: {name}", rate, "images/s",
                f"{nb} batches of {cpu['batch_size']}, one thread")
    first, step_sec, net = training_step(ctx, cpu, sampler, cpu_batch)
    steps = ctx.sizes["train_steps"]
    fed = fed_steps(ctx, net, sampler, steps)
    for name, sec in fed.items():
        res.add(NAME, f"training step, batches {name}", 1000 * sec, "ms",
                f"mean of {steps} steps of {cpu['batch_size']}x{cpu['input_size']}^2")
    step_rate = cpu["batch_size"] / step_sec
    res.add(NAME, "training step (cpu profile model)", step_rate, "images/s",
            f"{1000 * step_sec:.0f} ms per step of {cpu['batch_size']}x{cpu['input_size']}^2;"
            f" mean of {steps}")
    res.add(NAME, "first training step (graph tracing)", first, "s")
    cpu_rate = rates["PatchSampler cpu profile"]
    ratio = cpu_rate / step_rate
    share = 100 * step_rate / cpu_rate
    res.add(NAME, "pipeline / training step", ratio, "x",
            f"the pipeline costs {share:.1f}% of a training step's time")
    res.verdict(f"input pipeline never the bottleneck (pipeline images/s >= "
                f"{PIPELINE_RATIO_TARGET:g}x training step images/s)",
                f"{ratio:.1f}x ({fmt(cpu_rate)} vs {fmt(step_rate)} images/s)",
                ratio >= PIPELINE_RATIO_TARGET,
                f"{PIPELINE_RATIO_TARGET / ratio:.2f}x",
                f"a batch takes {1000 * cpu_sec:.0f} ms to make and "
                f"{1000 * step_sec:.0f} ms to train on")
    res.md += describe(nb, len(samples), cpu, steps, first, table, step_rate, step_sec,
                       ratio, share, fed)
    return res
