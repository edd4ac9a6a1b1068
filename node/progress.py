"""A dependency-free progress bar on stderr: redrawn in place on a terminal, sparse in logs."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """`with Progress(total, "training") as bar: bar.advance()`; silent when `enabled` is False."""

    def __init__(
        self, total: int, label: str, *, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self.note = ""
        self.enabled = enabled
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._start = time.monotonic()
        self._last_line = -1.0
        self._last_drawn = -1

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.enabled:
            self._draw(final=True)

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + steps)
        self.note = note or self.note
        self._draw()

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        # Off a terminal (CI logs), one line every 5 s is enough.
        if not self._tty and (
            self._last_drawn == self.done or (not final and now - self._last_line < 5.0)
        ):
            return
        self._last_line, self._last_drawn = now, self.done
        width = 30
        filled = width * self.done // self.total
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"{self.label} [{bar}] {self.done}/{self.total} {now - self._start:5.1f}s {self.note}"
        )
        end = "\n" if final or not self._tty else ""
        self._stream.write(("\r" if self._tty else "") + line + end)
        self._stream.flush()
