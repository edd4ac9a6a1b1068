"""Sequence numbers that are never reused, and a replay window that survives restarts.

Sender side: numbers are handed out from blocks reserved on disk before use. After a crash the
counter resumes at the end of the last reserved block, so a number is skipped, never reused. The
counter also never starts below the time in microseconds: a node whose data folder was lost
(a new disk, a reinstall) starts above every number it sent before, instead of below the ones
its peers remember (and being refused as a replay until it passes them).

Receiver side: per sender, the highest number seen and a bitmap of the WINDOW numbers below it,
kept in SQLite and committed before a message is accepted.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gossiprec.crypto.files import write_atomic

WINDOW = 1_024
# What SQLite stores; a header with more is refused before any state changes.
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


@dataclass
class _Window:
    top: int  # highest sequence number accepted
    bits: int  # bit i set: number top - i was accepted (bit 0 is top itself)


class ReplayGuard:
    """Per-sender sliding window. `check` is pure; `commit` records acceptance durably."""

    def __init__(self, path: Path | None = None) -> None:
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replay_window "
            "(sender BLOB PRIMARY KEY, top INTEGER NOT NULL, bits BLOB NOT NULL)"
        )
        self._db.commit()
        self._lock = threading.Lock()
        self._windows: dict[bytes, _Window] = {
            bytes(sender): _Window(top, int.from_bytes(bits, "big"))
            for sender, top, bits in self._db.execute("SELECT sender, top, bits FROM replay_window")
        }

    def is_fresh(self, sender: bytes, seq: int) -> bool:
        if not 0 <= seq <= MAX_SEQ:
            return False
        window = self._windows.get(sender)
        if window is None or seq > window.top:
            return True
        age = window.top - seq
        return age < WINDOW and not (window.bits >> age) & 1

    def commit(self, sender: bytes, seq: int) -> None:
        with self._lock:
            window = self._windows.get(sender)
            if window is None:
                window = self._windows[sender] = _Window(seq, 1)
            elif seq > window.top:
                # A jump past the window forgets it all: no shift by (seq - top) bits, which a
                # peer could make as large as it likes.
                shift = seq - window.top
                window.bits = 1 if shift >= WINDOW else ((window.bits << shift) | 1) & FULL
                window.top = seq
            else:
                window.bits |= 1 << (window.top - seq)
            self._db.execute(
                "INSERT OR REPLACE INTO replay_window (sender, top, bits) VALUES (?, ?, ?)",
                (sender, window.top, window.bits.to_bytes(WINDOW // 8, "big")),
            )
            self._db.commit()

    def close(self) -> None:
        self._db.close()
