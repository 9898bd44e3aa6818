"""The run folder and safe file writing.

A run folder (``runs/<name>/``) is the only hand-over between notebooks and commands: the
model, the training history, predictions, tables and ``run.json`` (what made them). Every
file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written model, table or figure behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the file's suffix (libraries pick a format from it).
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def write_table(df, path) -> Path:
    """Write a pandas table as CSV (and Markdown beside it when ``path`` ends in .csv)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    if path.suffix == ".csv":
        write_text(path.with_suffix(".md"), to_markdown(df) + "\n")
    return path


def to_markdown(df) -> str:
    """A GitHub Markdown table, floats to 4 decimals (no extra dependency)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def file_fingerprint(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file (first 16 hex digits), or of a folder's file names and sizes."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(path)}:{p.stat().st_size}\n".encode())
    else:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def library_versions() -> dict:
    """Versions of the libraries that decide the numbers (those not installed are omitted)."""
    from importlib import metadata
    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "scikit-image", "tensorflow", "tf-keras",
                 "segmentation-models", "pandas", "matplotlib", "nucseg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def machine() -> dict:
    return {"cores": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.machine()}


def update_run_json(run_dir, **fields) -> dict:
    """Merge ``fields`` into ``run_dir/run.json`` (created if missing) and return it."""
    path = Path(run_dir) / "run.json"
    info = read_json(path) if path.exists() else {"created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    info.update(fields)
    info.setdefault("versions", library_versions())
    info.setdefault("machine", machine())
    write_json(path, info)
    return info
