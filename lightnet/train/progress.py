"""Progress display of long loops: a tqdm bar on a terminal, plain lines in a redirected log.

A tqdm bar written to a file or pipe (``lightnet train ... 2> train.log``, a batch job) turns into one long line of
``\\r``-separated updates. :func:`progress_bar` gives a tqdm bar when ``stderr`` is a terminal and otherwise a
:class:`LineProgress`, which writes one complete line every ``every`` steps (and at the end)::

    train: 120/880 (14%) 0:00:31 elapsed, loss=0.4213, lr=1.00e-03, epoch=1
"""
from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, TextIO

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """The subset of tqdm's interface the trainers use (``update``, ``set_postfix``, ``close``), printing a line
    every ``every`` steps to ``file`` (default ``sys.stderr``)."""

    def __init__(self, total: int, desc: str = "", initial: int = 0, every: int | None = None,
                 disable: bool = False, file: TextIO | None = None) -> None:
        self.total, self.desc, self.n, self.disable = int(total), desc, int(initial), disable
        self.every = max(1, int(every) if every else max(1, self.total // 20))
        self.file = file
        self.postfix: dict[str, Any] = {}
        self._t0 = time.time()
        self._last_printed = self.n

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = dict(kwargs)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n % self.every == 0 or self.n == self.total:
            self._print()

    def _print(self) -> None:
        self._last_printed = self.n
        if self.disable:
            return
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        elapsed = timedelta(seconds=round(time.time() - self._t0))
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total}{pct} {elapsed} elapsed{extra}", file=self.file or sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.n != self._last_printed:
            self._print()


def progress_bar(total: int, desc: str, initial: int = 0, disable: bool = False, every: int | None = None,
                 stream: TextIO | None = None):
    """A tqdm bar if ``stream`` (default ``sys.stderr``) is a terminal, else a :class:`LineProgress` writing a line
    every ``every`` steps (default: every 5 % of ``total``)."""
    stream = stream or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=0.5, disable=disable,
                    file=stream)
    return LineProgress(total, desc=desc, initial=initial, every=every, disable=disable, file=stream)
