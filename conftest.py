"""Root pytest configuration.

nbval executes the notebooks as they are and cannot pass papermill parameters, so the test
suite sets the two documented overrides that :class:`nucseg_utils.report.Context` reads: the
``smoke`` profile on the built-in synthetic set, in a fresh run folder; and a cache folder
of the session's own (engines.cache_dir).
"""
import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("NUCSEG_PROFILE", "smoke")
    os.environ.setdefault("NUCSEG_SYNTHETIC", "1")
    os.environ.setdefault("NUCSEG_RUN_DIR", tempfile.mkdtemp(prefix="nucseg-nbval-"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    # the OpenVINO conversions of this session (shared by the workers, the notebooks' kernels
    # and the subprocesses), not the user's cache
    os.environ.setdefault("NUCSEG_CACHE", tempfile.mkdtemp(prefix="nucseg-cache-"))
