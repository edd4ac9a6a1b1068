"""Numbers that are never reused, and the window that refuses a message seen before.

Sender side (session numbers): numbers are handed out from blocks reserved on disk before use.
After a crash the counter resumes at the end of the last reserved block, so a number is skipped,
never reused. The counter also never starts below the time in microseconds: a node whose data
folder was lost (a new disk, a reinstall) starts above every number it sent before, instead of
below the ones its peers remember (its sessions refused as superseded until it passes them).

Receiver side: per session, the highest counter seen and a bitmap of the WINDOW below it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gossiprec.crypto.files import write_atomic

WINDOW = 1_024
# The largest number a header may carry (msgpack's signed 64 bits).
MAX_SEQ = 2**63 - 1
FULL = (1 << WINDOW) - 1


class SequenceCounter:
    """Monotonic sequence numbers, reserved `block` at a time in a durable file."""

    def __init__(self, path: Path, block: int = 1_024, *, now: float | None = None) -> None:
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self._path = path
        self._block = block
        self._lock = threading.Lock()
        stored = int(path.read_text().strip()) if path.exists() else 0
        # Everything below the stored limit may have been used; the clock floor covers a lost
        # folder (a node sends far fewer than a million messages a second).
        floor = int((time.time() if now is None else now) * 1_000_000)
        self._next = max(stored, floor)
        self._limit = stored

    def next(self) -> int:
        with self._lock:
            if self._next >= self._limit:
                self._limit = self._next + self._block
                write_atomic(self._path, str(self._limit).encode())
            value = self._next
            self._next += 1
            return value


class ReplayWindow:
    """The counters accepted in one session: the highest and a bitmap of the WINDOW below it.

    In memory only: a session lives no longer than the receiver's prekey, which a restart
    replaces (crypto/prekey.py), so nothing of an earlier run can be opened again.
    """

    def __init__(self) -> None:
        self._top = -1  # highest counter accepted; -1 before the first
        self._bits = 0  # bit i set: counter top - i was accepted (bit 0 is top itself)

    def is_fresh(self, counter: int) -> bool:
        if not 0 <= counter <= MAX_SEQ:
            return False
        if counter > self._top:
            return True
        age = self._top - counter
        return age < WINDOW and not (self._bits >> age) & 1

    def commit(self, counter: int) -> None:
        if counter > self._top:
            # A jump past the window forgets it all: no shift by (counter - top) bits, which a
            # peer could make as large as it likes.
            shift = counter - self._top
            self._bits = 1 if shift >= WINDOW else ((self._bits << shift) | 1) & FULL
            self._top = counter
        else:
            self._bits |= 1 << (self._top - counter)
