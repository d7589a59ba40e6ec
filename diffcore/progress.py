"""A dependency-free progress line: step / total, named figures, rate; one line on stderr."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", unit: str = "step", enabled: bool = True, stream=None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.n = 0
        self.t0 = self._last = time.perf_counter()
        self._last_pct = -1

    def update(self, n: int = 1, **fields) -> None:
        self.n += n
        if not self.enabled:
            return
        now = time.perf_counter()
        pct = int(100 * self.n / max(self.total, 1))
        # a terminal gets a live line; a log file one line per 10%
        if (self.tty and now - self._last >= 0.2) or (not self.tty and pct // 10 > self._last_pct // 10) or self.n == self.total:
            self._last, self._last_pct = now, pct
            rate = self.n / max(now - self.t0, 1e-9)
            extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            line = f"{self.desc} {self.n}/{self.total} ({pct}%)  {extra}  {rate:.3g} {self.unit}s/s"
            self.stream.write(("\r" + line + " " * 4) if self.tty else line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
