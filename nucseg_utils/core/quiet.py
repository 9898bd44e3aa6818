"""Quiet start-up: TensorFlow's, absl's and CUDA's own log lines kept off the console.

In: the block of code that first imports TensorFlow and builds a model (or converts it for
OpenVINO).
Out: the same, with what the C++ libraries wrote to the process' standard error during the
block held back: dropped, or shown when ``verbose``. A CPU-only machine otherwise sees lines
such as ``E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)``, which read as a failure
and are not one. Python's own warnings and errors raised in the block are not affected: an
exception leaves the block as usual, with what was held back printed first so nothing that
explains it is lost.

The libraries write to file descriptor 2 directly, below Python's ``sys.stderr``, so the
descriptor itself is pointed at a temporary file for the block.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile


@contextlib.contextmanager
def tensorflow_logs(verbose: bool = False):
    """Run the block with the process' standard error captured, and what Python prints
    (``segmentation_models`` announces its framework on import); show both only if
    ``verbose`` (or if the block raises)."""
    if verbose:
        yield
        return
    logging.getLogger("absl").setLevel(logging.ERROR)
    fd = 2  # where the C++ libraries write, whatever Python's sys.stderr is
    try:
        os.fstat(fd)
    except OSError:  # no standard error at all: nothing to hold back
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    printed = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), fd)
        failed = True
        try:
            with contextlib.redirect_stdout(printed):
                yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(printed.getvalue() + held.read().decode(errors="replace"))
                sys.stderr.flush()
