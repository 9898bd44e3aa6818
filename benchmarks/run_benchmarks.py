"""Benchmarks of the nucseg pipeline: how fast and how good, side by side, in one report.

    python benchmarks/run_benchmarks.py [--model models/cpu/model.npz] [--quick]
        [--only metric,postprocess,inference,training,quality,streaming,big] [--out DIR]
        [--data ROOT]

A full run (no ``--quick``, no ``--only``) rewrites ``benchmarks/REPORT.md`` and
``benchmarks/results.csv``; a ``--quick`` or ``--only`` run writes to ``runs/benchmarks_dev/``
unless ``--out`` says otherwise, so a development run never replaces the committed report.

One file per benchmark, each a section of the report (its docstring says what it measures):

1. ``metric``: ``bench_metric_speed.py``, the DSB metric's speed against a reference and
   StarDist, and their agreement.
2. ``postprocess``: ``bench_postprocessing.py``, ms per image of each post-processing method.
3. ``inference``: ``bench_inference.py``, the 8-fold TTA with each engine side by side,
   images/s as ``nucseg evaluate`` predicts, the end-to-end time, memory.
4. ``training``: ``bench_training_throughput.py``, the input pipeline against a training step.
5. ``quality``: ``bench_quality.py``, DSB per TTA and post-processing method.
6. ``streaming``: ``bench_streaming.py``, ``nucseg predict``'s memory and resuming.
7. ``big``: ``bench_big.py``, big images tiled against untiled, the seam test, a slide-sized
   mosaic's time and memory, one image's tiles and many images on Dask, the network's GFLOP/s.

A benchmark module has ``NAME``, ``TITLE``, ``NEEDS_MODEL`` (then also ``SKIPPED_TARGETS``,
reported as not measured when there is no model) and ``run(ctx) -> common.Result``: rows
``(section, item, value, unit, note)`` for results.csv, Markdown for the report and one
verdict per target. What they share is in ``common.py`` (formatting, memory, the machine,
writing the report) and ``context.py`` (the data, the model and the predictions).

The stage1_test probability maps (with and without TTA) are computed once and shared by
sections 2, 3 and 5; the inference timings are measured while computing them.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import tempfile
import time
from pathlib import Path

# each of these imports common first, which puts the repository on sys.path for nucseg_utils
import bench_big
import bench_inference
import bench_metric_speed
import bench_postprocessing
import bench_quality
import bench_streaming
import bench_training_throughput
import common
from common import DEFAULT_MODEL, REPO, Result, shown
from context import FULL, QUICK, Context

from nucseg_utils import data as data_mod
from nucseg_utils.core import runs

BENCHMARKS = (bench_metric_speed, bench_postprocessing, bench_inference,
              bench_training_throughput, bench_quality, bench_streaming, bench_big)
SECTIONS = tuple(b.NAME for b in BENCHMARKS)
TITLES = {b.NAME: b.TITLE for b in BENCHMARKS}
SECTION_FUNCS = {b.NAME: b.run for b in BENCHMARKS}
NEEDS_MODEL = tuple(b.NAME for b in BENCHMARKS if b.NEEDS_MODEL)
SHARED_PREDICTIONS = "predict stage1_test (shared by 2, 3, 5)"
DEFAULT_OUT = REPO / "benchmarks"
DEV_OUT = REPO / "runs" / "benchmarks_dev"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL.relative_to(REPO)),
                    help="model file (default: models/cpu/model.npz)")
    ap.add_argument("--quick", action="store_true",
                    help="few images and steps, for development (writes to runs/benchmarks_dev)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections ({','.join(SECTIONS)})")
    ap.add_argument("--out", help="output folder (default: benchmarks/ for a full run, "
                    "runs/benchmarks_dev/ for --quick or --only)")
    ap.add_argument("--data", help="data root (default: found like the rest of nucseg)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the perturbations and samples")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in only]
    return args


def write_outputs(out_dir, meta, results, walls):
    """REPORT.md and results.csv of these benchmarks in ``out_dir``; returns their paths."""
    return common.write_outputs(out_dir, meta, results, walls, TITLES)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_meta(args, argv, full: bool, model_path: Path, load_start: str) -> dict:
    """What the report says of the run before it starts: command, date, machine, model, data."""
    root = data_mod.find_data_root(args.data, "stage1_test")
    argv_shown = sys.argv[1:] if argv is None else list(argv)
    return {
        "command": " ".join(["python", "benchmarks/run_benchmarks.py"] + argv_shown),
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": runs.machine(), "cpu": common.cpu_name(), "nice": os.nice(0),
        "load_start": load_start, "model": shown(model_path), "data": data_mod.dataset_name(root),
        "full": full,
        "dev": None if full else
        ("--quick" if args.quick else f"only {','.join(args.sections)}"),
    }


def skipped(bench, model_path: Path) -> Result:
    """The result of a benchmark that needs a model when there is none."""
    r = Result()
    why = f"no model at {shown(model_path)}"
    r.md = [f"**Skipped**: {why}. Train one (`nucseg train --profile cpu`) or pass "
            f"`--model`."]
    r.add(bench.NAME, "skipped", float("nan"), "", why)
    for target in bench.SKIPPED_TARGETS:
        r.verdict(target, "-", None, why=why)
    return r


def run_all(ctx: Context, sections, model_path: Path):
    """Runs the benchmarks named in ``sections``; returns (results, wall s per section)."""
    results, walls = {}, {}
    for bench in BENCHMARKS:
        name = bench.NAME
        if name not in sections:
            continue
        if bench.NEEDS_MODEL and not ctx.has_model():
            results[name] = skipped(bench, model_path)
            continue
        if bench.NEEDS_MODEL and SHARED_PREDICTIONS not in walls:
            ctx.log("predicting stage1_test with and without TTA")
            t0 = time.perf_counter()
            ctx.predictions()
            walls[SHARED_PREDICTIONS] = time.perf_counter() - t0
        ctx.log(f"section {name}")
        t0 = time.perf_counter()
        results[name] = bench.run(ctx)
        walls[name] = time.perf_counter() - t0
    return results, walls


def main(argv=None) -> int:
    args = parse_args(argv)
    # a model's load is timed as a first load: its OpenVINO conversion made, not read from the
    # cache of an earlier run (engines.cache_dir), unless NUCSEG_CACHE says where to look
    os.environ.setdefault("NUCSEG_CACHE", tempfile.mkdtemp(prefix="nucseg-bench-cache-"))
    t_start = time.perf_counter()
    load_start = load_average()
    full = not args.quick and args.sections == list(SECTIONS)
    out_dir = Path(args.out) if args.out else (DEFAULT_OUT if full else DEV_OUT)
    model_path = Path(args.model)
    if not model_path.is_absolute() and not model_path.exists():
        model_path = REPO / model_path  # the default is relative to the repository
    ctx = Context(model_path, QUICK if args.quick else FULL, args.data, args.seed)
    meta = run_meta(args, argv, full, model_path, load_start)
    if ctx.has_model():
        meta["model_sha"] = runs.file_fingerprint(ctx.model_path)
    results, walls = run_all(ctx, args.sections, model_path)
    meta["versions"] = common.versions()
    meta["load_end"] = load_average()
    meta["wall"] = time.perf_counter() - t_start
    meta["timed_wall"] = meta["wall"] - sum(walls.get(s, 0.0) for s in common.UNTIMED)
    walls["total"] = meta["wall"]
    report, csv = write_outputs(out_dir, meta, results, walls)
    ctx.log(f"wrote {report} and {csv} in {meta['wall']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
