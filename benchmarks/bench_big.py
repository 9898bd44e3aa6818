"""7. Big images and many: tiled prediction against untiled on stage1_test, a seam test with
a known answer, a mosaic of stage1 images the size of a slide (wall time, peak memory, nuclei
found against planted), the Dask path's throughput with 1 and 2 workers against the serial
predict, and the network's achieved GFLOP/s against the CPU's peak.

Run by ``run_benchmarks.py`` (``--only big``) or alone::

    .venv/bin/python benchmarks/bench_big.py [--quick] [--only tiled,seams,mosaic,dask,flops]
                                             [--mosaic 20000] [--tile 128]

Sizes (``ctx.sizes``, with these defaults): ``big_tile`` (the forced tile of the tiled-vs-
untiled comparison, 128 px), ``big_seam_images`` and ``big_seam_size`` (3 synthetic images of
768 px), ``big_mosaic`` (20000 px a side; 2048 quick) and ``big_mosaic_tta`` (False: the
model's 8-fold TTA took about 6 s a tile on 2 cores, so the full mosaic's tiles would take
hours with it; ``--mosaic-tta`` turns it on), ``big_small_mosaic`` (2048 px; 1024 quick: the
same mosaic, smaller, segmented with and without TTA, so the report shows that the peak
memory does not grow with the image, and what TTA adds to it; and split by tiles across 1 and
2 Dask workers against the serial run), ``big_dask_images`` (24; 4 quick).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

# common first: it puts the repository on sys.path for nucseg_utils
from common import REPO, Result, cpu_name, fmt, md_table
from context import Context

from nucseg_utils import big, predict
from nucseg_utils.data import synthetic
from nucseg_utils.evaluation import metrics

NAME = "big"
TITLE = "7. Big images and many: tiles, seams, a slide-sized mosaic, Dask"
NEEDS_MODEL = True
SKIPPED_TARGETS = ()
DSB_TOLERANCE = 0.002        # tiled DSB within this of untiled (issue 23)
MOSAIC_GB_TARGET = 3.0       # peak memory of the 20,000 x 20,000 mosaic (issue 23)
DEFAULTS = dict(big_tile=128, big_seam_images=3, big_seam_size=768, big_mosaic=20000,
                big_mosaic_tta=False, big_small_mosaic=2048, big_dask_images=24)
QUICK = dict(big_tile=128, big_seam_images=1, big_seam_size=384, big_mosaic=2048,
             big_mosaic_tta=False, big_small_mosaic=1024, big_dask_images=4)

# predict_big of a TIFF in a child process that reports its peak resident memory (VmHWM)
MOSAIC_CHILD = (
    "import json, sys, time\n"
    "from nucseg_utils import big\n"
    "from nucseg_utils.model import NucleusModel\n"
    "t0 = time.perf_counter()\n"
    "model = NucleusModel.load(sys.argv[1])\n"
    "t1 = time.perf_counter()\n"
    "res = big.predict_big(model, sys.argv[2], sys.argv[3], tta=sys.argv[4] == 'tta',\n"
    "                      progress=False)\n"
    "t2 = time.perf_counter()\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
    "print('RESULT', json.dumps({'load_s': t1 - t0, 'predict_s': t2 - t1,\n"
    "      'hwm_kib': int(hwm[0].split()[1]), 'summary': res.summary}))\n")


def _size(ctx, key):
    quick = ctx.sizes.get("predict_images") is not None  # a --quick run
    return ctx.sizes.get(key, (QUICK if quick else DEFAULTS)[key])


def _labels(out, sid):
    import zarr
    return zarr.open_group(str(Path(out) / "labels" / f"{sid}.ome.zarr"), mode="r")["labels/nuclei/0"][:]


def differing_nuclei(a: np.ndarray, b: np.ndarray) -> int:
    """Nuclei of ``a`` and of ``b`` that have no pixel-identical twin in the other."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    both = (a > 0) & (b > 0)
    pairs, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    area_a, area_b = np.bincount(a.ravel()), np.bincount(b.ravel())
    same = (counts == area_a[pairs[0]]) & (counts == area_b[pairs[1]])
    return int((len(np.unique(a)) - 1) + (len(np.unique(b)) - 1) - 2 * same.sum())


# --------------------------------------------------------------------------- 1. tiled
def tiled_vs_untiled(ctx: Context, res: Result, work: Path) -> list:
    tile = _size(ctx, "big_tile")
    model, config = ctx.model()
    samples = ctx.test_samples(ctx.sizes.get("predict_images"))
    method = config.get("postprocess", "paper")
    untiled, _ = ctx.labels("tta", method)
    tiled, differ, t_tiled = {}, 0, 0.0
    for i, s in enumerate(samples):
        t0 = time.perf_counter()
        big.predict_big(model, s.image, work / "tiled", sid=s.id, tile=tile, tta=True,
                        formats=("ome-zarr",), progress=False)
        t_tiled += time.perf_counter() - t0
        tiled[s.id] = _labels(work / "tiled", s.id)
        differ += differing_nuclei(untiled[s.id], tiled[s.id])
        ctx.log(f"big: tiled {i + 1}/{len(samples)} {s.image.shape[:2]}")
    n_untiled = sum(int(len(np.unique(untiled[s.id])) - 1) for s in samples)
    d_untiled = metrics.dataset_scores([(s.labels, untiled[s.id]) for s in samples])["dsb"]
    d_tiled = metrics.dataset_scores([(s.labels, tiled[s.id]) for s in samples])["dsb"]
    identical = sum(np.array_equal(untiled[s.id] > 0, tiled[s.id] > 0) and
                    differing_nuclei(untiled[s.id], tiled[s.id]) == 0 for s in samples)
    res.add(NAME, "stage1_test DSB, untiled (TTA)", d_untiled, "", f"{len(samples)} images")
    res.add(NAME, f"stage1_test DSB, tiled {tile} px (TTA)", d_tiled, "",
            "automatic overlap")
    res.add(NAME, "nuclei that differ, tiled vs untiled", differ, "",
            f"of {n_untiled} untiled nuclei; no pixel-identical twin")
    res.add(NAME, "images with identical labels, tiled vs untiled", identical, "")
    res.add(NAME, f"tiled {tile} px prediction time", t_tiled, "s", "all images, TTA")
    gap = abs(d_tiled - d_untiled)
    res.verdict(f"tiled DSB ({tile}-px tiles) within {DSB_TOLERANCE} of untiled",
                f"{d_tiled:.4f} vs {d_untiled:.4f}", gap <= DSB_TOLERANCE,
                f"{gap - DSB_TOLERANCE:.4f}")
    return [f"Tiled against untiled on the {len(samples)} stage1_test images (8-fold TTA, "
            f"the model's post-processing), with tiles forced to {tile} px (the automatic "
            f"overlap; most images hold several tiles): DSB **{d_tiled:.4f}** tiled against "
            f"**{d_untiled:.4f}** untiled; {identical} of {len(samples)} label images "
            f"identical; {differ} nuclei (of {n_untiled}) without a pixel-identical twin in "
            f"the other; {t_tiled:.0f} s to predict them tiled.", ""]


# --------------------------------------------------------------------------- 2. seams
def seam_test(ctx: Context, res: Result, work: Path) -> list:
    tile = _size(ctx, "big_tile")
    n, size = _size(ctx, "big_seam_images"), _size(ctx, "big_seam_size")
    model, _ = ctx.model()
    rng = np.random.default_rng(ctx.seed)
    crossing = cut = lost = 0
    for i in range(n):
        img, truth = synthetic.make_image(rng, (size, size), "fluorescence", channels=3)
        untiled = model.postprocess(model.predict_probabilities(img))
        big.predict_big(model, img, work / "seams", sid=f"seam{i}", tile=tile,
                        formats=("ome-zarr",), progress=False)
        tiled = _labels(work / "seams", f"seam{i}")
        for k in range(1, int(truth.max()) + 1):
            ys, xs = np.nonzero(truth == k)
            if ys.size == 0 or (ys.min() // tile == ys.max() // tile and
                                xs.min() // tile == xs.max() // tile):
                continue  # inside one core
            crossing += 1
            one = _one_label(untiled[ys, xs])
            if one is None:
                continue  # the model itself does not find it as one nucleus
            found = _covering(tiled[ys, xs])
            if len(found) > 1:
                cut += 1
            elif not found:
                lost += 1
        ctx.log(f"big: seams {i + 1}/{n}")
    res.add(NAME, "planted nuclei crossing a tile border", crossing, "",
            f"{n} synthetic images of {size} px, {tile}-px tiles")
    res.add(NAME, "of them cut or doubled by the tiles", cut, "",
            "one label untiled, several (each >= 10 % of it) tiled")
    res.add(NAME, "of them lost by the tiles", lost, "", "one label untiled, none tiled")
    res.verdict("seam test: planted nuclei across tile borders, zero cut, zero doubled",
                f"{cut} cut or doubled, {lost} lost of {crossing}", cut == 0 and lost == 0,
                f"{cut + lost} nuclei")
    return [f"Seam test: {n} seeded synthetic fluorescence image(s) of {size} px with their "
            f"true nuclei, {tile}-px tiles: of the {crossing} nuclei that cross a tile "
            f"border, those the untiled prediction finds as one label are found tiled as "
            f"several (cut, or a nucleus doubled, whose second copy shows as a second label) "
            f"**{cut}** times and lost **{lost}** times.", ""]


def _one_label(values) -> int | None:
    """The one label covering these pixels (>= 10 % of them, IoU aside), or None."""
    found = _covering(values)
    return found[0] if len(found) == 1 else None


def _covering(values) -> list:
    v, c = np.unique(values[values > 0], return_counts=True)
    return list(v[c >= 0.1 * values.size])


# --------------------------------------------------------------------------- 3. a mosaic
def write_mosaic(ctx: Context, path: Path, side: int) -> tuple[int, int]:
    """A BigTIFF of ``side`` x ``side`` (grey, 8-bit, 256-px tiles) whose 256 x 256 cells are
    the stage1_test fluorescence images of that size, in turn; returns (the side written,
    the true nuclei planted)."""
    cells = [s for s in ctx.test_samples() if s.image.shape[:2] == (256, 256)
             and s.labels is not None]
    cells = [s for s in cells if s.image.std(axis=-1).mean() < 0.02]  # grey (fluorescence)
    grey = [np.round(s.image.mean(axis=-1) * 255).astype(np.uint8) for s in cells]
    counts = [int(len(np.unique(s.labels)) - 1) for s in cells]
    n = side // 256
    order = [(r * n + c) % len(cells) for r in range(n) for c in range(n)]
    import tifffile
    tifffile.imwrite(path, (grey[i] for i in order), shape=(n * 256, n * 256),
                     dtype=np.uint8, tile=(256, 256), bigtiff=True, compression="zlib")
    return n * 256, sum(counts[i] for i in order)


def mosaic_file(ctx: Context, work: Path, side: int) -> tuple[Path, int, int]:
    """The mosaic of ``side`` px in ``work`` (written once): (its path, its side, the
    nuclei planted)."""
    path, note = work / f"mosaic{side}.tif", work / f"mosaic{side}.json"
    if not note.exists():
        ctx.log(f"big: writing a {side} x {side} mosaic")
        note.write_text(json.dumps(write_mosaic(ctx, path, side)))
    made, planted = json.loads(note.read_text())
    return path, made, planted


def _segment_mosaic(ctx: Context, path: Path, out: Path, tta: bool) -> tuple[dict, float]:
    """predict_big of the mosaic in a child process: (its report, the wall time)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MOSAIC_CHILD, str(ctx.model_path), str(path),
                           str(out), "tta" if tta else "no-tta"], cwd=REPO,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    found = re.findall(r"^RESULT (.*)$", done.stdout, re.M)
    if done.returncode or not found:
        raise RuntimeError(f"the mosaic run failed (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    return json.loads(found[-1]), wall


def mosaic(ctx: Context, res: Result, work: Path) -> list:
    """The slide-sized mosaic, and the same mosaic smaller with and without TTA (peak memory
    against the image's size)."""
    rows, big_gb = [], None
    runs_ = [(_size(ctx, "big_mosaic"), bool(_size(ctx, "big_mosaic_tta")))]
    small = _size(ctx, "big_small_mosaic")
    runs_ += [(small, False), (small, True)]
    for side, tta in runs_:
        path, side, planted = mosaic_file(ctx, work, side)
        ctx.log(f"big: segmenting the {side} x {side} mosaic in a child process"
                f"{' (TTA)' if tta else ''}")
        out, wall = _segment_mosaic(ctx, path, work / f"mosaic-out-{side}-{tta}", tta)
        s, gb = out["summary"], out["hwm_kib"] / 2 ** 20
        how = f"mosaic {side} x {side}{', TTA' if tta else ''}"
        res.add(NAME, f"{how}: wall time", wall, "s",
                f"child process, model load {out['load_s']:.0f} s included")
        res.add(NAME, f"{how}: peak RSS", gb * 1024, "MiB", "VmHWM")
        res.add(NAME, f"{how}: nuclei found", s["nuclei"], "",
                f"{planted} planted (the cells' true nuclei)")
        res.add(NAME, f"{how}: tiles", s["tiles"], "",
                f"tile {s['tile']} px, overlap {s['overlap']} px, factor {s['factor']:.3f}")
        rows.append([f"{side:,} x {side:,}", "8-fold" if tta else "none",
                     f"{wall / 60:.1f}", f"{out['load_s']:.0f}", f"{gb:.2f}",
                     f"{planted:,}", f"{s['nuclei']:,}",
                     f"{s['tiles']} of {s['tile']} px", f"{s['overlap']}",
                     f"{s['factor']:.3f}", f"{s['too_large']}"])
        res.verdict(f"a {side} x {side} mosaic{' with TTA' if tta else ''} in under "
                    f"{MOSAIC_GB_TARGET:g} GB", f"{gb:.2f} GB", gb < MOSAIC_GB_TARGET,
                    f"{gb - MOSAIC_GB_TARGET:.2f} GB")
        big_gb = gb if big_gb is None else big_gb
    return ["BigTIFF mosaics of the stage1_test grey 256 x 256 images (their true nuclei "
            "planted, cell after cell) segmented by `big.predict_big` with the default "
            "tile, each in a child process that reports its peak resident memory (VmHWM):",
            "", *md_table(["mosaic", "TTA", "wall (min)", "model load (s)", "peak RSS (GB)",
                           "nuclei planted", "nuclei found", "tiles", "overlap (px)",
                           "factor", "too large"], rows), "",
            "The peak memory is set by the tile, not by the image: the slide-sized mosaic "
            "and the small one peak alike without TTA, and TTA adds the network's batch of 4 "
            "variants of a window.", ""]


# --------------------------------------------------------------------------- 4. Dask
def dask_throughput(ctx: Context, res: Result, work: Path) -> list:
    from distributed import LocalCluster

    from nucseg_utils.predict import distributed
    n = _size(ctx, "big_dask_images")
    model, _ = ctx.model()
    folder = work / "dask-images"
    folder.mkdir()
    for s in ctx.test_samples(n):
        iio.imwrite(folder / f"{s.id}.png", np.round(s.image * 255).astype(np.uint8))
    opts = predict.PredictOptions(tta=True)
    source = distributed.open_sources(folder)
    t0 = time.perf_counter()
    predict.predict_folder(model, source, work / "serial", opts, progress=False)
    serial = n / (time.perf_counter() - t0)
    rows, rates = [["serial (`predict_folder`)", fmt(serial), "1"]], {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            warm = work / f"warm{workers}"  # each worker loads the model, not timed
            distributed.predict_distributed(model, source, warm, opts, ids=source.ids[:workers],
                                            scheduler=cluster.scheduler_address,
                                            progress=False)
            t0 = time.perf_counter()
            distributed.predict_distributed(model, source, work / f"dask{workers}", opts,
                                            scheduler=cluster.scheduler_address,
                                            progress=False)
            rates[workers] = n / (time.perf_counter() - t0)
        same = _same_files(work / "serial", work / f"dask{workers}")
        rows.append([f"Dask, {workers} worker process{'es' if workers > 1 else ''}",
                     fmt(rates[workers]), f"{rates[workers] / serial:.2f}"])
        res.add(NAME, f"Dask {workers} worker(s): images/s", rates[workers], "img/s",
                f"{rates[workers] / serial:.2f}x serial; files identical: {same}")
    res.add(NAME, "serial predict: images/s", serial, "img/s", f"{n} stage1_test images, TTA")
    return [f"Throughput on {n} stage1_test images (8-fold TTA, every output), the model "
            f"loaded beforehand in every process (worker start-up not timed), on "
            f"{os.cpu_count()} cores:", "", *md_table(["how", "images/s", "x serial"], rows),
            "", *dask_tiles(ctx, res, work)]


def dask_tiles(ctx: Context, res: Result, work: Path) -> list:
    """One big image (the small mosaic) split by tiles across 1 and 2 workers against the
    serial tiled run: tiles/s and identical outputs."""
    from distributed import Client, LocalCluster

    from nucseg_utils.predict import distributed
    path, side, _ = mosaic_file(ctx, work, _size(ctx, "big_small_mosaic"))
    model, _ = ctx.model()
    kw = dict(tta=False, progress=False, formats=big.BIG_FORMATS)
    t0 = time.perf_counter()
    serial = big.predict_big(model, path, work / "tiles-serial", **kw)
    t_serial = time.perf_counter() - t0
    n = len(serial.plan.tiles())
    rows = [["serial (`big.predict_big`)", f"{n / t_serial:.2f}", "1", "-"]]
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.run(_warm_worker, distributed.model_job(model))  # not timed
            t0 = time.perf_counter()
            distributed.predict_big_distributed(model, path, work / f"tiles-dask{workers}",
                                                scheduler=cluster.scheduler_address, **kw)
            wall = time.perf_counter() - t0
        same = _same_files(work / "tiles-serial", work / f"tiles-dask{workers}")
        rows.append([f"Dask, {workers} worker process{'es' if workers > 1 else ''}",
                     f"{n / wall:.2f}", f"{t_serial / wall:.2f}", "yes" if same else "**no**"])
        res.add(NAME, f"one {side}-px image by tiles, Dask {workers} worker(s): tiles/s",
                n / wall, "tile/s", f"{t_serial / wall:.2f}x serial; files identical: {same}")
    res.add(NAME, f"one {side}-px image by tiles, serial: tiles/s", n / t_serial, "tile/s",
            f"{n} tiles, no TTA")
    return [f"One big image split across the workers by tiles: the {side} x {side} mosaic "
            f"({n} tiles, no TTA; the client plans the image, reads the windows and "
            f"stitches, the workers segment the windows):", "",
            *md_table(["how", "tiles/s", "x serial", "outputs identical to serial"], rows), ""]


def _warm_worker(job):
    """Load the model in a worker before the timing (as its first tile would)."""
    from nucseg_utils.predict import distributed
    distributed.worker_model(job)


def _same_files(a: Path, b: Path) -> bool:
    import filecmp
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()
                   and p.name != "predict.json")
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


# --------------------------------------------------------------------------- 5. FLOP/s
def conv_flops_per_pixel(network, side: int = 256) -> float:
    """Multiply-adds x 2 of every convolution of the network per input pixel (from the
    output shapes of its Conv2D layers on a ``side`` x ``side`` input); the rest (batch
    norm, activations, additions, upsampling) is left out."""
    import tensorflow as tf
    convs = [layer for layer in network.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    probe = tf.keras.Model(network.input, [layer.output for layer in convs])
    outs = probe(np.zeros((1, side, side, 3), np.float32), training=False)
    total = 0.0
    for layer, out in zip(convs, outs):
        kh, kw = layer.kernel_size
        cin = int(layer.input.shape[-1]) // getattr(layer, "groups", 1)
        total += 2.0 * kh * kw * cin * int(out.shape[-1]) * int(out.shape[1]) * int(out.shape[2])
    return total / (side * side)


def peak_gflops() -> tuple[float, str]:
    """This CPU's float32 peak (cores x clock x FLOPs a cycle from its vector units), and how
    it was counted."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) if text else set()
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    ghz = re.search(r"@ ([\d.]+)GHz", cpu_name())
    mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
    clock = float(ghz.group(1)) if ghz else (float(mhz[0]) / 1000 if mhz else 2.0)
    cores = os.cpu_count() or 1
    return cores * clock * per_cycle, (f"{cores} cores x {clock:.2f} GHz x {per_cycle} "
                                       f"float32 FLOPs a cycle (two FMA units)")


def flops(ctx: Context, res: Result, work: Path) -> list:
    model, _ = ctx.model()
    per_px = conv_flops_per_pixel(model.keras)
    batch = np.random.default_rng(0).random((4, 512, 512, 3)).astype(np.float32)
    model.forward(batch)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.forward(batch)
        times.append(time.perf_counter() - t0)
    achieved = per_px * batch.shape[0] * 512 * 512 / min(times) / 1e9
    peak, how = peak_gflops()
    res.add(NAME, "network FLOPs per pixel", per_px, "FLOP", "convolutions, 2 per multiply-add")
    res.add(NAME, f"achieved ({model.engine}, 4 x 512 x 512)", achieved, "GFLOP/s")
    res.add(NAME, "CPU float32 peak", peak, "GFLOP/s", how)
    res.add(NAME, "achieved / peak", achieved / peak, "")
    return [f"The network does {per_px / 1e3:.1f} kFLOP per pixel at the model's scale "
            f"(its convolutions, counted from their output shapes). A forward pass of "
            f"4 x 512 x 512 with {model.engine} runs at **{achieved:.0f} GFLOP/s**, "
            f"{100 * achieved / peak:.0f} % of this CPU's float32 peak of {peak:.0f} GFLOP/s "
            f"({how}; a nominal clock, so the fraction is approximate).", ""]


PARTS = {"tiled": tiled_vs_untiled, "seams": seam_test, "mosaic": mosaic,
         "dask": dask_throughput, "flops": flops}


def run(ctx: Context, only=None) -> Result:
    res = Result()
    work = Path(tempfile.mkdtemp(prefix="nucseg-bench-big-"))
    try:
        for name, part in PARTS.items():
            if only and name not in only:
                continue
            ctx.log(f"big: {name}")
            res.md += part(ctx, res, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main(argv=None):
    from common import DEFAULT_MODEL
    from context import FULL
    from context import QUICK as QUICK_CONTEXT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help=f"comma-separated parts of: {', '.join(PARTS)}")
    ap.add_argument("--mosaic", type=int, help="the mosaic's side (px)")
    ap.add_argument("--mosaic-tta", action="store_true",
                    help="segment the big mosaic with TTA (about 8x slower)")
    ap.add_argument("--tile", type=int, help="the forced tile of the tiled comparison")
    ap.add_argument("--data")
    a = ap.parse_args(argv)
    sizes = {**(QUICK_CONTEXT if a.quick else FULL), **(QUICK if a.quick else DEFAULTS)}
    if a.mosaic:
        sizes["big_mosaic"] = a.mosaic
    if a.tile:
        sizes["big_tile"] = a.tile
    if a.mosaic_tta:
        sizes["big_mosaic_tta"] = True
    ctx = Context(a.model, sizes, a.data)
    res = run(ctx, a.only.split(",") if a.only else None)
    print("\n".join(res.md))
    for r in res.rows:
        print(f"{r['item']}: {fmt(r['value'], 4)} {r['unit']} {r['note']}")
    for v in res.verdicts:
        print(f"target: {v['target']}: {v['measured']} -> {v['verdict']}")


if __name__ == "__main__":
    main()
