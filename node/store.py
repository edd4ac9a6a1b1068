"""The node's local store: interactions, the peer table and counters, in one SQLite file.

Interactions are committed with synchronous=FULL before `add_interactions` returns, so an
acknowledged interaction survives kill -9 (and power loss). Peer rows and counters are
bookkeeping and use the cheaper NORMAL sync per write.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gossiprec.node.errors import StoreError
from gossiprec.node.types import IntArray

SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    user INTEGER NOT NULL, item INTEGER NOT NULL, time INTEGER NOT NULL,
    item_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user, item, item_id)
);
CREATE TABLE IF NOT EXISTS peers (
    node_id BLOB PRIMARY KEY, state TEXT NOT NULL, last_seen REAL NOT NULL,
    messages_in INTEGER NOT NULL DEFAULT 0, messages_out INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0, bytes_out INTEGER NOT NULL DEFAULT 0,
    trust REAL NOT NULL DEFAULT 1.0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, row INTEGER NOT NULL, features TEXT NOT NULL DEFAULT '[]'
);
"""


@dataclass(frozen=True)
class PeerRow:
    node_id: bytes
    state: str
    last_seen: float
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    trust: float = 1.0


class Store:
    def __init__(self, path: Path) -> None:
        # Interactions are private: the folder and the file are the node's user's alone (SQLite
        # gives its -wal and -shm files the database file's mode).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._upgrade()
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _upgrade(self) -> None:
        """A store from before string item ids: its interactions keep their rows, id ''."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(interactions)")]
        if columns and "item_id" not in columns:
            self._db.executescript(
                "BEGIN; ALTER TABLE interactions RENAME TO interactions_v1;" + SCHEMA +
                "INSERT INTO interactions (user, item, time) "
                "SELECT user, item, time FROM interactions_v1 ORDER BY rowid;"
                "DROP TABLE interactions_v1; COMMIT;"
            )  # fmt: skip

    # -- interactions ----------------------------------------------------------------------------

    def add_interactions(
        self,
        users: IntArray,
        items: IntArray,
        times: IntArray,
        ids: Sequence[str] | None = None,
        new_ids: Sequence[tuple[str, int]] = (),
    ) -> int:
        """Store new (user, item row, item id) interactions durably, with the item ids met for
        the first time, (id, row), in the same transaction; returns how many were new. Repeats
        are no-ops; two ids sharing a row stay two interactions."""
        ids = ids if ids is not None else [""] * len(users)
        rows = [(int(u), int(i), int(t), item_id)
                for u, i, t, item_id in zip(users, items, times, ids, strict=True)]  # fmt: skip
        with self._durable("interactions") as changes:
            self._db.executemany("INSERT OR IGNORE INTO items (id, row) VALUES (?, ?)", new_ids)
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO interactions (user, item, time, item_id) "
                "VALUES (?, ?, ?, ?)", rows
            )  # fmt: skip
            changes.append(self._db.total_changes - before)
        return changes[0]

    def add_items(self, entries: list[tuple[str, int, str]]) -> None:
        """Store catalogue entries (id, row, features as JSON) durably, replacing older ones."""
        with self._durable("catalogue entries"):
            self._db.executemany("INSERT OR REPLACE INTO items (id, row, features) VALUES "
                                 "(?, ?, ?)", entries)  # fmt: skip

    def items(self) -> list[tuple[str, int, str]]:
        with self._lock:
            return self._db.execute("SELECT id, row, features FROM items ORDER BY rowid").fetchall()

    @contextlib.contextmanager
    def _durable(self, what: str) -> Iterator[list[int]]:
        """One synchronous=FULL transaction: once it is left, its writes survive kill -9 and
        power loss, and only then may the caller acknowledge them."""
        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                with self._transaction("BEGIN IMMEDIATE", what):
                    changes: list[int] = []
                    yield changes
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")

    @contextlib.contextmanager
    def _transaction(self, begin: str, what: str) -> Iterator[None]:
        """BEGIN ... COMMIT, or ROLLBACK and a StoreError that keeps SQLite's reason (a failed
        COMMIT may have ended the transaction already: then there is nothing to roll back)."""
        try:
            self._db.execute(begin)
            yield
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise StoreError(
                f"could not store {what} ({error}); nothing of this write was kept. Fix: free "
                "disk space on the node's data folder, then retry (repeats are no-ops)."
            ) from error

    def interactions(self) -> tuple[IntArray, IntArray, IntArray]:
        with self._lock:
            rows = self._db.execute("SELECT user, item, time FROM interactions ORDER BY rowid")
            table = np.array(rows.fetchall(), dtype=np.int64).reshape(-1, 3)
        return table[:, 0], table[:, 1], table[:, 2]

    def count_interactions(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM interactions").fetchone()[0])

    # -- peers and counters ----------------------------------------------------------------------

    def save_peers(self, peers: list[PeerRow]) -> None:
        with self._lock, self._transaction("BEGIN", "the peer table"):
            self._db.executemany(
                "INSERT OR REPLACE INTO peers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        p.node_id,
                        p.state,
                        p.last_seen,
                        p.messages_in,
                        p.messages_out,
                        p.bytes_in,
                        p.bytes_out,
                        p.trust,
                    )
                    for p in peers
                ],
            )

    def peers(self) -> list[PeerRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM peers ORDER BY node_id").fetchall()
        return [PeerRow(bytes(r[0]), *r[1:]) for r in rows]

    def add_counters(self, deltas: dict[str, int]) -> None:
        with self._lock, self._transaction("BEGIN", "counters"):
            self._db.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                list(deltas.items()),
            )

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters").fetchall())
