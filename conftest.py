"""Root pytest configuration.

nbval executes the notebooks as they are and cannot pass papermill parameters, so the test
suite sets the two documented overrides that :class:`nucseg_utils.report.Context` reads: the
``smoke`` profile on the built-in synthetic set, in a fresh run folder; and a cache folder
of the session's own (engines.cache_dir).
"""
import os
import shutil
import tempfile

_MADE: list[str] = []  # the temporary folders this process made (the others are inherited)


def _temporary(var: str, prefix: str):
    if not os.environ.get(var):
        os.environ[var] = tempfile.mkdtemp(prefix=prefix)
        _MADE.append(os.environ[var])


def pytest_configure(config):
    os.environ.setdefault("NUCSEG_PROFILE", "smoke")
    os.environ.setdefault("NUCSEG_SYNTHETIC", "1")
    _temporary("NUCSEG_RUN_DIR", "nucseg-nbval-")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # the OpenVINO conversions of this session (shared by the workers, the notebooks' kernels
    # and the subprocesses), not the user's cache
    _temporary("NUCSEG_CACHE", "nucseg-cache-")


def pytest_unconfigure(config):
    # the process that made them (pytest-xdist's controller, after its workers) removes them
    for folder in _MADE:
        shutil.rmtree(folder, ignore_errors=True)
