"""Training progress on stderr: a tqdm bar on a terminal, a few plain lines in a log file.

A progress bar redraws itself with carriage returns, which a terminal overwrites and a log file keeps:
3000 sinusoid iterations left about 3000 bar frames in ``make demo``'s log. When the stream is not a
terminal, :class:`ProgressLines` prints one short line each time another tenth of the run has passed
since its last line, and at least every ``every_s`` seconds (so a slow run still shows it is alive),
plus the last iteration.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class ProgressLines:
    """``meta-iterations 300/3000 (10%) | 41.2 it/s | 0:07 elapsed | 1:05 left | post_update/loss=0.512``"""

    def __init__(self, total: int, initial: int = 0, stream: TextIO | None = None, desc: str = "meta-iterations",
                 every_s: float = 60.0, clock=time.monotonic):
        self.total, self.n, self.desc = int(total), int(initial), desc
        self.stream = sys.stderr if stream is None else stream
        self.every_n = max(1, math.ceil(self.total / 10))
        self.every_s = float(every_s)
        self._clock = clock
        self._start_n, self._start_t = self.n, clock()
        self._last_n, self._last_t = self.n, self._start_t
        self._postfix = ""

    def set_postfix(self, values: dict) -> None:
        self._postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        if self.n - self._last_n >= self.every_n or now - self._last_t >= self.every_s or self.n >= self.total:
            self._print(now)

    def _print(self, now: float) -> None:
        self._last_n, self._last_t = self.n, now
        elapsed = now - self._start_t
        done = self.n - self._start_n
        parts = [f"{self.desc} {self.n}/{self.total} ({100 * self.n // max(self.total, 1)}%)"]
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} it/s" if rate >= 1 else f"{1 / rate:.3g} s/it")
            parts.append(f"{_clock(elapsed)} elapsed")
            parts.append(f"{_clock(max(self.total - self.n, 0) / rate)} left")
        if self._postfix:
            parts.append(self._postfix)
        print(" | ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        pass


def progress(total: int, initial: int = 0, stream: TextIO | None = None, desc: str = "meta-iterations"):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else :class:`ProgressLines`. Both
    take ``update(n)``, ``set_postfix(dict)`` and ``close()``."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=stream)
    return ProgressLines(total, initial, stream, desc)
