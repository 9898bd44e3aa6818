"""Many images on a Dask cluster: the prediction of :mod:`nucseg_utils.predict`, one task per
image, on worker processes of this machine or of many.

In: a :class:`nucseg_utils.model.NucleusModel` loaded from a file (each worker loads that file
once), the images (a folder, a DSB split folder or zip, or a list of files:
:func:`open_sources`), an output folder and :class:`nucseg_utils.predict.PredictOptions`; and a
cluster, only when asked: ``workers=N`` starts a ``distributed.LocalCluster`` of N worker
processes (one thread each) on this machine for the run, ``scheduler="tcp://HOST:8786"``
connects to a running one. Both go through the same code.
Out: the files of :func:`nucseg_utils.predict.predict_folder`, byte for byte, whatever the
number of workers and the order in which they finish: each image is one task that reads,
predicts and writes it with predict's own per-image functions (:func:`predict.predict_one`,
:func:`predict.write_one`: atomic files, the done-marker last), and ``summary.csv`` and
``submission.csv`` are assembled at the end, in id order, from the done-markers and label
files, as predict_folder does. The result is predict's :class:`PredictResult`.

- **Resume**: images that are done (their done-marker and files exist) are skipped, as by
  predict_folder; a run interrupted (Ctrl-C, a lost client) cancels its tasks and a second run
  does the rest. A worker killed in the middle of an image leaves no half-written file (every
  file is renamed into place when complete): the scheduler gives its task to another worker
  (up to ``distributed.scheduler.allowed-failures`` times, 3 by default), or the rerun does it.
- **Errors** of one image (an undecodable file, anything its task raises) are reported with its
  name and recorded in ``summary.csv``; the others go on.
- **Progress**: one bar over the finished tasks (``tqdm`` over ``distributed.as_completed``),
  in images per second.
- **Big images** (over :data:`nucseg_utils.predict.TILE_ABOVE` pixels, or all with
  ``PredictOptions(tile=N)``) are split across the workers by tiles: this process plans each
  one (its statistics and scale), reads its windows and stitches the labels that come back,
  one task per tile (:func:`cluster_windows`, :func:`predict_big_distributed`), so a whole
  slide uses the whole cluster; the outputs are the serial tiled run's.
- **Measured** (``benchmarks/REPORT.md``, section 7, on a 2-core machine): 24 stage1_test
  images with TTA, 1 worker 0.83x and 2 workers 0.85x the serial predict's images/s; one
  2048-px image by tiles, 1 worker 0.85x and 2 workers 0.80x the serial tiles/s, every file
  identical. Serial already keeps both cores busy (the engine's threads, and a writer thread
  beside the network), so workers pay on machines with more cores, or on many machines.
- **The model** is loaded once per worker process, at its first task, and kept in that
  process (a per-process cache keyed by the model file, its fingerprint, engine and
  settings); every worker runs the engine the client resolved.

Starting a cluster by hand, on one machine or several (the workers need nucseg installed and
must see the images and the output folder at the same paths, e.g. on a shared file system)::

    dask scheduler                                            # prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 2 --nthreads 1     # on every machine
    nucseg predict --scheduler tcp://HOST:8786 --images DIR --out OUT

On a SLURM or PBS cluster, ``dask-jobqueue`` (not a dependency of nucseg: ``pip install
dask-jobqueue``) submits the workers as batch jobs and gives the scheduler's address::

    from dask_jobqueue import SLURMCluster        # or PBSCluster
    cluster = SLURMCluster(cores=4, processes=1, memory="8GB", walltime="02:00:00")
    cluster.scale(jobs=10)                        # ten jobs, one worker process each
    predict_distributed(model, source, out, scheduler=cluster.scheduler_address)

Give each worker one thread (``--nthreads 1``): the engines use the cores themselves.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nucseg_utils import data, predict
from nucseg_utils.core.progress import progress as progress_bar
from nucseg_utils.data.dsb import DataError
from nucseg_utils.predict.folder import PredictOptions, PredictResult


# --------------------------------------------------------------------------- the images
class FileList(data.FolderImages):
    """A list of image files as a source of images (ids: the file stems, which must be
    unique), as :class:`nucseg_utils.data.FolderImages` reads a folder."""

    def __init__(self, paths):
        files = [Path(p) for p in paths]
        if not files:
            raise DataError("no image files given")
        for p in files:
            if not p.is_file():
                raise DataError(f"{p}: no such file")
        self.name = "files"
        self.source = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
        self._files = {}
        for p in files:
            if p.stem in self._files:
                raise DataError(f"{p}: has the same name as {self._files[p.stem]}; the image "
                                f"id would be ambiguous, rename one of them")
            self._files[p.stem] = p


def open_sources(images):
    """The images to predict: a path (:func:`nucseg_utils.data.open_images`: a folder, a DSB
    split folder or zip, one file) or a list of image files (:class:`FileList`)."""
    if isinstance(images, (list, tuple)):
        return FileList(images)
    return data.open_images(images)


def _source_spec(source):
    """How a worker opens the same images: ("files", paths) or ("path", path); None when the
    source cannot be opened again from a path (a split read from inside another zip): then
    the client sends each image's bytes with its task."""
    if isinstance(source, FileList):
        return ("files", [str(p) for p in source._files.values()])
    where = Path(str(source.source))
    if "!" not in str(where) and where.exists():
        return ("path", str(where))
    return None


class _OneImage:
    """One image's bytes as a source (the tasks of a source that cannot be reopened)."""

    def __init__(self, sid: str, name: str, blob: bytes):
        self.ids, self._sid, self._name, self._blob = [sid], sid, name, blob

    def image_name(self, sid):
        return self._name

    def image_file(self, sid):
        import io
        return io.BytesIO(self._blob)


# --------------------------------------------------------------------------- on a worker
@dataclass(frozen=True)
class _Job:
    """What every task of a run shares (sent to the workers): the model file, its
    fingerprint, engine and settings, the images, the output folder and options."""
    model_path: str
    fingerprint: str | None
    engine: str
    config: str  # JSON, sorted keys
    source: tuple | None
    out: str
    options: PredictOptions
    verbose: bool = False


_MODELS: dict = {}   # per worker process: {(model file, fingerprint, engine, config): model}
_SOURCES: dict = {}  # per worker process: {source spec: opened source}


def worker_model(job: _Job):
    """The job's model, loaded once in this process."""
    key = (job.model_path, job.fingerprint, job.engine, job.config)
    if key not in _MODELS:
        from nucseg_utils.core import quiet
        from nucseg_utils.model.network import NucleusModel
        with quiet.tensorflow_logs(job.verbose):
            model = NucleusModel.load(job.model_path, engine=job.engine)
        if model.fingerprint != job.fingerprint:
            raise RuntimeError(f"{job.model_path}: the model file on this worker is not the "
                               f"one the run was started with (another fingerprint)")
        config = json.loads(job.config)
        if json.dumps(model.config, sort_keys=True, default=str) != job.config:
            model = model.with_settings(**config)
        _MODELS[key] = model
    return _MODELS[key]


def _worker_source(spec):
    key = json.dumps(spec)
    if key not in _SOURCES:
        _SOURCES[key] = FileList(spec[1]) if spec[0] == "files" else data.open_images(spec[1])
    return _SOURCES[key]


def segment_task(job: _Job, sid: str, blob: tuple | None = None) -> tuple[str, str, object]:
    """One image, on a worker: ("done", id, its summary row), ("skipped", id, None) when it
    was done already, or ("failed", id, the reason naming its file). ``blob``: (name, bytes)
    of the image when the worker cannot open the source itself."""
    out, opts = Path(job.out), job.options
    if not opts.overwrite and predict.is_done(out, sid, opts.formats):
        return ("skipped", sid, None)
    name = blob[0] if blob else sid
    try:
        model = worker_model(job)
        source = _OneImage(sid, *blob) if blob else _worker_source(job.source)
        name = source.image_name(sid)
        row = predict.write_one(predict.predict_one(model, source, sid, opts), model,
                                out, opts)
    except DataError as err:
        return ("failed", sid, " ".join(str(err).split()))
    except Exception as err:  # noqa: BLE001 - one image's failure must not stop the others
        return ("failed", sid, " ".join(f"{name}: {type(err).__name__}: {err}".split()))
    return ("done", sid, row)



def window_task(job: _Job, plane, tile, plan, method: str, tta: bool):
    """One tile of a big image, on a worker: :func:`nucseg_utils.big.segment_window` with the
    job's model (its labels as uint32, the window they cover)."""
    from nucseg_utils import big
    lab, seen = big.segment_window(worker_model(job), plane, tile, plan, method, tta)
    return np.asarray(lab, np.uint32), seen


def model_job(model, out="", options: PredictOptions | None = None, source=None,
               verbose: bool = False) -> _Job:
    """The :class:`_Job` of ``model`` (loaded from a file, which every worker loads)."""
    if model.path is None:
        raise ValueError("a distributed run needs a model loaded from a file "
                         "(NucleusModel.load(path)): the workers load that file")
    return _Job(str(Path(model.path).resolve()), model.fingerprint, model.engine,
                json.dumps(model.config, sort_keys=True, default=str), source, str(out),
                options or PredictOptions(), verbose)


def cluster_windows(client, job, ahead: int | None = None):
    """A ``windows`` function for :func:`nucseg_utils.big.predict_big` that gives each tile to
    the cluster of ``client`` (``job``: a :class:`_Job`, or its future scattered to the
    workers): this process reads a tile's window, sends its pixels with the task, and takes
    the labels back in the tiles' order, ``ahead`` tasks in flight (default: twice the
    workers' threads), so that the client holds at most that many windows."""
    def windows(model, lazy, plan, todo, method, tta):
        from collections import deque
        run = uuid.uuid4().hex[:8]
        n = ahead or max(2, 2 * sum(client.nthreads().values()))
        queue, tiles = deque(), iter(todo)

        def submit():
            t = next(tiles, None)
            if t is not None:
                plane = lazy.read(*t.window)
                [where] = client.scatter([plane], hash=False)
                queue.append((t, plane, client.submit(
                    window_task, job, where, t, plan, method, tta,
                    key=f"nucseg-{run}-tile-{t.name}", pure=False)))

        for _ in range(n):
            submit()
        try:
            while queue:
                t, plane, future = queue.popleft()
                lab, seen = future.result()
                submit()
                yield t, plane, lab, seen
        finally:
            client.cancel([f for _, _, f in queue])
    return windows


def predict_big_distributed(model, image, out, *, workers: int | None = None,
                            scheduler: str | None = None, verbose: bool = False,
                            **kwargs):
    """:func:`nucseg_utils.big.predict_big` with its tiles segmented on a Dask cluster
    (``workers=N``: a local cluster of N processes for the call; ``scheduler``: a running
    one), the plan and the stitching in this process (:func:`cluster_windows`): the same
    outputs, byte for byte, as the serial call. ``kwargs``: those of predict_big (tile,
    overlap, tta, method, formats, overwrite, ...)."""
    from nucseg_utils import big
    job = model_job(model, out, verbose=verbose)
    with cluster_client(workers, scheduler) as client:
        [where] = client.scatter([job], broadcast=True, hash=False)
        return big.predict_big(model, image, out, windows=cluster_windows(client, where),
                               **kwargs)


# --------------------------------------------------------------------------- on the client
@contextlib.contextmanager
def cluster_client(workers: int | None = None, scheduler: str | None = None):
    """A ``distributed.Client``: of a ``LocalCluster`` of ``workers`` processes (one thread
    each) started for the block and closed after it, or of the running cluster at
    ``scheduler`` (left running). ValueError unless exactly one is given: nothing starts a
    cluster unless asked."""
    if (workers is None) == (scheduler is None):
        raise ValueError("give either workers=N (a local cluster of N processes) or "
                         "scheduler='tcp://HOST:PORT' (a running one)")
    from distributed import Client, LocalCluster
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


def _log_stderr(message: str):
    tqdm.write(message, file=sys.stderr)


def predict_distributed(model, source, out, options: PredictOptions | None = None, *,
                        workers: int | None = None, scheduler: str | None = None, ids=None,
                        checked: predict.Checked | None = None, progress: bool = True,
                        verbose: bool = False, log=_log_stderr) -> PredictResult:
    """:func:`nucseg_utils.predict.predict_folder` on a Dask cluster (see the module
    docstring): ``workers=N`` for a local cluster of N processes, or ``scheduler`` the address
    of a running one. ``source``: what :func:`open_sources` opens (or its result); ``model``
    must come from a file (:meth:`NucleusModel.load`), which every worker loads. ``verbose``
    shows the workers' TensorFlow and OpenVINO start-up lines."""
    if (workers is None) == (scheduler is None):
        raise ValueError("give either workers=N (a local cluster of N processes) or "
                         "scheduler='tcp://HOST:PORT' (a running one)")
    if not hasattr(source, "image_file"):
        source = open_sources(source)
    out = Path(out).resolve()
    opts = (options or PredictOptions()).resolved(model)
    predict.record_settings(out, *predict.run_settings(model, source, opts), opts.overwrite)
    ids = list(source.ids if ids is None else ids)
    checked = checked or predict.check_inputs(source, opts.channel, ids)
    failed = dict(checked.failed)
    for message in list(failed.values()) + list(checked.notes.values()):
        log(message)
    tiled = {sid for sid in checked.ok if predict.is_tiled(opts, checked.sizes.get(sid))}
    skipped = [sid for sid in checked.ok if not opts.overwrite and predict.is_done(
        out, sid, predict.tiled_formats(opts.formats) if sid in tiled else opts.formats)]
    todo = [sid for sid in checked.ok if sid not in set(skipped)]
    spec = _source_spec(source)
    job = model_job(model, out, opts, spec, verbose)
    done = set()
    if todo:
        with cluster_client(workers, scheduler) as client:
            done = _ClusterRun(client, job, model, source, log, failed, skipped).run(
                todo, tiled, spec, progress)
    summary = predict.finish_folder(out, source, ids, failed, opts)
    return PredictResult(out, [s for s in checked.ok if s in done], skipped, failed, summary)


@dataclass
class _ClusterRun:
    """One call of :func:`predict_distributed` on its cluster: what its steps share, and
    what they found (the ids done, failed with their message, or done meanwhile by another
    run)."""
    client: object
    job: _Job
    model: object
    source: object
    log: Callable
    failed: dict
    skipped: list
    done: set = field(default_factory=set)

    def run(self, todo: list, tiled: set, spec, progress: bool) -> set:
        """Submit one task per image of ordinary size, then segment the big ones here with
        their tiles on the cluster (:func:`cluster_windows`), and collect the tasks as they
        finish; the ids done."""
        from distributed import as_completed
        [job_future] = self.client.scatter([self.job], broadcast=True, hash=False)
        futures = self._submit([s for s in todo if s not in tiled], spec, job_future)
        bar = progress_bar(total=len(todo), unit="img", disable=not progress,
                           desc=f"predict{' (TTA)' if self.job.options.tta else ''}")
        try:
            for sid in [s for s in todo if s in tiled]:
                bar.set_postfix_str(f"{sid}: tiles on the cluster")
                self._tiled_here(sid, job_future)
                bar.set_postfix_str("")
                bar.update()
            for future in as_completed(futures):
                self._collect(futures[future], future)
                bar.update()
        except BaseException:
            self.client.cancel(list(futures))
            raise
        finally:
            bar.close()
        return self.done

    def _submit(self, ids: list, spec, job_future) -> dict:
        """{future: id}: one task per image; the image's bytes travel with it unless the
        workers can open the source themselves (``spec``)."""
        run = uuid.uuid4().hex[:8]  # task keys unique per run: a rerun never reuses old results
        futures = {}
        for sid in ids:
            blob = None
            if spec is None:
                with self.source.image_file(sid) as f:
                    blob = (self.source.image_name(sid), f.read())
            futures[self.client.submit(segment_task, job_future, sid, blob,
                                       key=f"nucseg-{run}-{sid}", pure=False)] = sid
        return futures

    def _tiled_here(self, sid: str, job_future) -> None:
        """A big image planned and stitched in this process, its tiles on the cluster."""
        try:
            predict.segment_tiled(self.model, self.source, sid, opts=self.job.options,
                                  out=self.job.out, log=self.log,
                                  windows=cluster_windows(self.client, job_future))
        except DataError as err:
            self._failed(sid, " ".join(str(err).split()))
        except Exception as err:  # noqa: BLE001 - e.g. a tile's workers died too often
            self._failed(sid, self._message(sid, err))
        else:
            self.done.add(sid)

    def _collect(self, sid: str, future) -> None:
        """What one image's task found."""
        try:
            status, _, value = future.result()
        except Exception as err:  # noqa: BLE001 - e.g. its workers died too often
            status, value = "failed", self._message(sid, err)
        if status == "failed":
            self._failed(sid, value)
        elif status == "skipped":  # done meanwhile by another run
            self.skipped.append(sid)
        else:
            self.done.add(sid)

    def _message(self, sid: str, err: Exception) -> str:
        return " ".join(f"{predict.source_name(self.source, sid)}: {type(err).__name__}: "
                        f"{err}".split())

    def _failed(self, sid: str, message: str) -> None:
        self.failed[sid] = message
        self.log(message)
