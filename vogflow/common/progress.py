"""Progress for long loops: a live bar on a terminal, a few plain lines in logs (DVC, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Count work done; draw a tqdm bar on a TTY, else print a line at a tenth of the total at
    most every ``every`` seconds.

    Logs read by people (a DVC run, CI) get at most about ten compact lines, never a redrawn bar,
    and none for a loop that ends within ``every`` seconds (its caller prints a summary).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "it",
        stream: TextIO | None = None,
        enabled: bool = True,
        every: float = 5.0,
    ) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._next_report = 0.1
        self._every = every
        self._last = self.start
        self._bar = None
        self.enabled = enabled
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        due = self.done / self.total >= self._next_report - 1e-9 and now - self._last >= self._every
        if self.enabled and due:
            self._last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else float("inf")
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            print(
                f"{self.desc}: {self.done}/{self.total} {self.unit} "
                f"({rate:.1f} {self.unit}/s, eta {format_seconds(eta)})",
                file=self.stream,
                flush=True,
            )
            while self._next_report <= self.done / self.total:
                self._next_report += 0.1

    def close(self) -> float:
        """Stop; return the elapsed seconds."""
        if self._bar is not None:
            self._bar.close()
        return time.perf_counter() - self.start

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
