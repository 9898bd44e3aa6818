"""Progress that reads well where it goes: a tqdm bar on a terminal, plain lines in a log.

In: what a tqdm bar takes (an iterable or a ``total``, ``desc``, ``unit``, ``initial``,
``disable``, ``leave``).
Out: :func:`progress`: tqdm's bar when standard error is a terminal or in a notebook's
kernel (tqdm's widget); otherwise
:class:`Lines`, which writes one line such as ``predict (TTA): 12/65 images (18%), 0:41
elapsed`` at most every :data:`EVERY` seconds and when it ends, with no carriage returns or
cursor escapes in the log (``nucseg ... > run.log 2>&1``, a background job, a notebook run by
papermill).
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

__all__ = ["EVERY", "Lines", "progress"]

EVERY = 30.0  # seconds between two progress lines in a log


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Lines:
    """A progress bar's interface (``update``, ``set_postfix``, ``set_postfix_str``,
    ``close``, iteration) that writes plain lines to ``file``."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it",
                 initial: int = 0, disable: bool = False, file=None, every: float = EVERY,
                 **_):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.every = total, int(initial), every
        self.file = file or sys.stderr
        self.start = self.last = time.monotonic()
        self.postfix, self.closed = "", False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __len__(self):
        return self.total or 0

    def _line(self) -> str:
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        return (f"{self.desc}: {done} {self.unit}{share}, "
                f"{_clock(time.monotonic() - self.start)} elapsed{post}")

    def _write(self):
        if not self.disable:
            print(self._line(), file=self.file, flush=True)
        self.last = time.monotonic()

    def update(self, n: int = 1):
        self.n += n
        if time.monotonic() - self.last >= self.every:
            self._write()

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = ""):
        self.postfix = text

    def close(self):
        if not self.closed:
            self.closed = True
            self._write()


def _in_notebook() -> bool:
    """Whether this runs in an IPython kernel (a notebook), where tqdm draws a widget."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython and hasattr(ipython, "get_ipython") else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress(iterable=None, **kwargs):
    """A tqdm bar on a terminal, else :class:`Lines` (see the module docstring)."""
    stream = kwargs.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)() or _in_notebook():
        return tqdm(iterable, **kwargs)
    return Lines(iterable, **kwargs)
