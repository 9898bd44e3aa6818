"""6. Streaming prediction: ``nucseg predict``'s peak memory on 200 images of 1024x1024
against one image's, and an interrupted run resumed to the same per-image files."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

# common first: it puts the repository on sys.path for nucseg_utils
from common import REPO, Result, fmt, md_table
from context import Context

from nucseg_utils import predict as predict_mod
from nucseg_utils.core import runs
from nucseg_utils.data.synthetic import make_image
from nucseg_utils.inference.scale import label_diameter

NAME = "streaming"
TITLE = "6. Streaming prediction: memory and resuming"
NEEDS_MODEL = True
SKIPPED_TARGETS = ()
MEMORY_FACTOR_TARGET = 2.0          # peak memory of 200 images <= this x that of one (#13)

# `nucseg predict` in a child process that reports its own peak resident memory on exit:
# VmHWM (ru_maxrss would include the parent's peak, inherited through fork and exec)
PREDICT_CHILD = (
    "import resource, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job ignores it\n"
    "from nucseg_utils.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "finally:\n"
    "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
    "    print('MAXRSS_KIB', hwm[0].split()[1] if hwm else\n"
    "          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n")


def run_predict(model_path, images, out, *extra, stop_after: int | None = None):
    """Run `nucseg predict --no-tta` on ``images`` in a child process; returns (exit code,
    wall s, peak RSS MiB). ``stop_after``: interrupt it (SIGINT, as Ctrl-C) once that many
    images are done."""
    argv = [sys.executable, "-c", PREDICT_CHILD, "predict", "--model", str(model_path),
            "--images", str(images), "--out", str(out), "--no-tta", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if stop_after is not None:
        done = Path(out) / "done"
        while proc.poll() is None:
            if done.is_dir() and len(list(done.glob("*.json"))) >= stop_after:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    found = re.findall(r"MAXRSS_KIB (\d+)", stderr)
    if not found:
        raise RuntimeError(f"nucseg predict failed (exit {proc.returncode}):\n{stderr[-2000:]}")
    return proc.returncode, wall, int(found[-1]) / 1024


def image_files_digest(out, ids=None) -> dict:
    """{relative path: sha256} of the per-image outputs of images ``ids`` (None: of every
    image, and any temporary file left beside them): not the folder-wide tables, nor the
    done-markers (they record the input file's path, which differs between folders)."""
    out = Path(out)
    if ids is None:
        files = [p for p in sorted(out.rglob("*"))
                 if p.is_file() and p.parent != out and p.parent.name != "done"]
    else:
        files = [p for sid in ids for p in predict_mod.output_paths(out, sid).values()
                 if p.exists()]
    return {str(p.relative_to(out)): runs.file_fingerprint(p) for p in files}


def synthetic_folder(ctx: Context, work: Path, n: int, size: int):
    """``work/images``: 10 distinct seeded synthetic images repeated under ``n`` file names;
    of the drawn images (a mean nucleus radius of 5-20 px each) those whose nuclei are near
    the model's size, as after rescaling (so the network sees each image once at ~1x).
    Returns (the folder, the model's nucleus diameter, the number of images drawn)."""
    _, config = ctx.model()
    target = config.get("target_diameter") or 20
    rng = np.random.default_rng(ctx.seed)
    distinct, drawn = [], 0
    while len(distinct) < min(10, n):
        img, lab = make_image(rng, (size, size), "fluorescence", channels=3)
        drawn += 1
        if 0.8 * target <= label_diameter(lab) <= 1.25 * target or drawn > 200:
            distinct.append(img)
    folder = work / "images"
    folder.mkdir()
    for i in range(n):
        iio.imwrite(folder / f"img{i:03d}.png", distinct[i % len(distinct)])
    return folder, target, drawn


def memory(ctx: Context, res: Result, work: Path, folder: Path, n: int, size: int):
    """Peak memory and time of `nucseg predict` on one image and on all ``n``; returns
    (peak MiB of one, wall s of one, peak MiB of all, wall s of all, their ratio)."""
    one = work / "one"
    one.mkdir()
    shutil.copy(folder / "img000.png", one / "img000.png")
    ctx.log(f"streaming: 1 image of {size}x{size}")
    _, wall_one, rss_one = run_predict(ctx.model_path, one, work / "out-one")
    ctx.log(f"streaming: {n} images of {size}x{size}")
    code, wall_all, rss_all = run_predict(ctx.model_path, folder, work / "out-all")
    factor = rss_all / rss_one
    res.add(NAME, f"peak RSS, 1 image of {size}x{size}", rss_one, "MiB",
            "`nucseg predict --no-tta`, whole process")
    res.add(NAME, f"peak RSS, {n} images of {size}x{size}", rss_all, "MiB",
            f"exit code {code}")
    res.add(NAME, f"wall time, {n} images of {size}x{size}", wall_all, "s",
            f"{n / wall_all:.2f} images/s including start-up")
    res.verdict(f"peak memory of {n} images <= {MEMORY_FACTOR_TARGET:g}x one image's",
                f"{factor:.2f}x ({rss_all:.0f} vs {rss_one:.0f} MiB)",
                factor <= MEMORY_FACTOR_TARGET, f"{factor / MEMORY_FACTOR_TARGET:.2f}x")
    return rss_one, wall_one, rss_all, wall_all, factor


def resume(ctx: Context, res: Result, work: Path, folder: Path, k: int) -> dict:
    """`nucseg predict` on ``k`` images interrupted (SIGINT, as Ctrl-C) after half of them,
    then run again; its per-image files compared with those of the uninterrupted run."""
    part = work / "part"
    part.mkdir()
    for i in range(k):
        shutil.copy(folder / f"img{i:03d}.png", part / f"img{i:03d}.png")
    ctx.log(f"streaming: {k} images, interrupted, then resumed")
    code_int, _, _ = run_predict(ctx.model_path, part, work / "out-part",
                                 stop_after=max(1, k // 2))
    done_before = len(list((work / "out-part" / "done").glob("*.json")))
    code_res, _, _ = run_predict(ctx.model_path, part, work / "out-part")
    ref = image_files_digest(work / "out-all", [f"img{i:03d}" for i in range(k)])
    got = image_files_digest(work / "out-part")
    same = got == ref
    leftovers = [p for p in got if ".tmp" in p]
    res.add(NAME, "interrupted run: exit code", code_int, "", "SIGINT after "
            f"{max(1, k // 2)} of {k} images were done")
    res.add(NAME, "interrupted run: images done before the interrupt", done_before, "")
    res.add(NAME, "resumed run: per-image outputs identical to the uninterrupted run's",
            int(same), "", f"{len(got)} files, {len(leftovers)} temporary files left")
    interrupted = code_int != 0 and done_before < k
    res.verdict("an interrupted run resumes and finishes with the same outputs",
                f"{'identical' if same else 'different'} ({len(got)} files)" +
                ("" if interrupted else "; the first run was not interrupted"),
                same and code_res == 0 and interrupted,
                "outputs differ" if interrupted else "no interruption happened")
    return dict(k=k, code_int=code_int, code_res=code_res, done_before=done_before,
                same=same, files=len(got), leftovers=len(leftovers))


def describe(n, size, target, drawn, mem, r: dict) -> list:
    """The report's paragraphs and table; ``mem``: what :func:`memory` returned, ``r``:
    what :func:`resume` returned."""
    rss_one, wall_one, rss_all, wall_all, factor = mem
    return [
        f"`nucseg predict --no-tta` (the default engine, every output format) in a child "
        f"process, on {n} seeded synthetic fluorescence images of {size}x{size} (10 "
        f"distinct images with nuclei of 0.8-1.25x the model's {target} px, {drawn} drawn, "
        f"repeated under {n} names), then on one of them alone; the peak "
        f"resident memory is the child's own high-water mark (`VmHWM`) (TensorFlow, the "
        f"model and the images included). The command streams: it holds the image being "
        f"predicted and the one being written, whatever the number of images.",
        "",
        *md_table(["images", "peak RSS MiB", "wall s", "images/s (with start-up)"],
                  [[1, fmt(rss_one), fmt(wall_one), fmt(1 / wall_one)],
                   [n, fmt(rss_all), fmt(wall_all), fmt(n / wall_all)]]),
        "",
        f"{n} images take **{factor:.2f}x** the memory of one. Interrupted with SIGINT "
        f"(Ctrl-C) after {r['done_before']} of {r['k']} images were done (exit code "
        f"{r['code_int']}), the same command run again finished (exit code {r['code_res']}) "
        f"and its per-image files ({r['files']}: label PNG and TIFF, ROI zip, overlay, "
        f"measurements) are byte-identical to those of the uninterrupted run: "
        f"**{'yes' if r['same'] else 'no'}**; temporary files left: {r['leftovers']}.",
    ]


def run(ctx: Context) -> Result:
    res = Result()
    n, size, k = (ctx.sizes[x] for x in ("stream_images", "stream_size", "resume_images"))
    work = Path(tempfile.mkdtemp(prefix="nucseg-bench-stream-"))
    try:
        folder, target, drawn = synthetic_folder(ctx, work, n, size)
        mem = memory(ctx, res, work, folder, n, size)
        resumed = resume(ctx, res, work, folder, k)
        res.md += describe(n, size, target, drawn, mem, resumed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res
