"""Progress reporting: a tqdm bar on a terminal, a few plain log lines otherwise (CI, Prefect, DVC logs)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def log(msg: str) -> None:
    """One progress/summary line on stderr (stdout stays clean for machine-readable output)."""
    print(msg, file=sys.stderr, flush=True)


class Progress:
    """Counts work done; renders as tqdm on a TTY, else logs at most every `every_s` seconds and at the end."""

    def __init__(self, total: int, desc: str, unit: str = "it", every_s: float = 10.0):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done = 0
        self.start = self._last = time.perf_counter()
        self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True) if sys.stderr.isatty() else None

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            rate = self.done / max(now - self.start, 1e-9)
            log(f"{self.desc}: {self.done}/{self.total} {self.unit} ({rate:.1f} {self.unit}/s)")

    def close(self) -> float:
        """Finish the bar; return elapsed seconds."""
        if self._bar is not None:
            self._bar.close()
        return time.perf_counter() - self.start

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

