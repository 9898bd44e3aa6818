"""A run folder mirrored to another folder (Google Drive on Colab), file by file, atomically.

In: a local run folder and the folder that mirrors it.
Out: the files copied (:func:`sync_run`, local -> mirror; only what changed since the last
copy, recorded in the local folder's ``.synced.json``) or restored (:func:`restore_run`,
mirror -> a new session's empty local folder). Training calls :func:`sync_run` after every
full checkpoint when :data:`SYNC_ENV` names the mirror.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nucseg_utils.core import runs
from nucseg_utils.core.runs import RunLayout

# The paper runner trains into a run folder on the runtime's own disk (fast, and rewritten
# freely) and copies it to Drive at a bounded cadence: training calls sync_run after every full
# checkpoint when this variable names the Drive folder, and the runner after every notebook.
SYNC_ENV = "NUCSEG_SYNC_DIR"
SYNC_MANIFEST = ".synced.json"  # in the local folder: (size, mtime) of each file when copied
# written by training, in this order: the checkpoint last, so that a copy cut short leaves
# Drive with the previous checkpoint and (at worst) newer history, which resume truncates
TRAINING_FILES = RunLayout.TRAINING_FILES


def _run_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative, sorted), without hidden ones: the manifest and
    the temporary files of atomic writes."""
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".")
                                             for part in p.relative_to(folder).parts))


def _stat(path: Path):
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _copy_atomic(src: Path, dst: Path):
    """Copy ``src`` to a temporary name beside ``dst``, then rename it onto ``dst``: a reader
    (or a session that dies half-way) sees the old file or the new one, never a part."""

    with runs.atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _read_manifest(local: Path) -> dict:
    try:
        return json.loads((local / SYNC_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _write_manifest(local: Path, manifest: dict):
    with runs.atomic_path(local / SYNC_MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def sync_run(local, drive, names=None) -> list[str]:
    """Copy the run folder ``local`` to ``drive`` (on Google Drive), file by file and
    atomically (a temporary name on Drive, then a rename); returns the files copied.

    ``names`` (paths relative to ``local``, copied in that order) limits the copy, e.g. to
    :data:`TRAINING_FILES`; by default every file, recursively, ``checkpoint.npz`` last. A file unchanged since it was
    last copied (same size and modification time, recorded in ``local/.synced.json``) and
    still on Drive is skipped, so a 0.8 GB checkpoint is copied only when it was rewritten:
    Drive keeps every replaced file in its trash.
    """
    local, drive = Path(local), Path(drive)
    if local.resolve() == drive.resolve():
        return []
    if names is None:  # the checkpoint last, as in TRAINING_FILES
        names = sorted(_run_files(local), key=lambda n: (n == RunLayout.CHECKPOINT, n))
    names = [n for n in names if (local / n).is_file()]
    manifest = _read_manifest(local)
    copied = []
    for name in names:
        src, dst = local / name, drive / name
        before = _stat(src)
        if manifest.get(name) == before and dst.is_file():
            continue
        _copy_atomic(src, dst)
        manifest[name] = before
        copied.append(name)
        _write_manifest(local, manifest)  # after each file: a cut-short sync resumes here
    return copied


def restore_run(drive, local) -> list[str]:
    """Bring a run folder back from ``drive`` to ``local`` before a new session resumes it;
    returns the files copied.

    Copies go one way, local -> Drive, so a local folder that has a checkpoint is at least as
    new as Drive's: then only files missing locally are restored. A local folder without one
    (a new session: the runtime's disk starts empty) takes Drive's whole folder, overwriting,
    since Drive's files were copied together with its checkpoint. The copies are atomic, and
    recorded as in sync, so the next :func:`sync_run` does not copy them back.
    """
    local, drive = Path(local), Path(drive)
    if not drive.is_dir() or local.resolve() == drive.resolve():
        return []
    take_all = ((drive / RunLayout.CHECKPOINT).is_file()
                and not (local / RunLayout.CHECKPOINT).is_file())
    manifest = _read_manifest(local) if not take_all else {}
    restored = []
    for name in _run_files(drive):
        if (local / name).is_file() and not take_all:
            continue
        _copy_atomic(drive / name, local / name)
        manifest[name] = _stat(local / name)
        restored.append(name)
    if restored:
        _write_manifest(local, manifest)
    return restored
