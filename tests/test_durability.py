"""Writes that a full disk can fail but never corrupt: files, checkpoints, the store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gossiprec.crypto.files import write_atomic
from gossiprec.node.checkpoint import load_latest, previous_path, save_checkpoint
from gossiprec.node.errors import StoreError
from gossiprec.node.store import Store


def test_short_writes_are_completed_not_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = []

    def at_most_1000(fd: int, data: Any) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:1000]))

    monkeypatch.setattr(os, "write", at_most_1000)
    write_atomic(tmp_path / "f", b"x" * 5_500)
    assert (tmp_path / "f").read_bytes() == b"x" * 5_500
    assert len(calls) == 6


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_atomic(tmp_path / "f", b"old")

    def disk_full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "f", b"new")
    assert (tmp_path / "f").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_checkpoint_that_does_not_read_back_never_replaces_the_last_good_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.npz"
    save_checkpoint(path, {"a": np.ones(3000, np.float32)}, {"version": 1})
    save_checkpoint(path, {"a": np.full(3000, 2, np.float32)}, {"version": 2})
    assert load_latest(path)[1] == {"version": 2}
    assert previous_path(path).exists()  # the one before stays beside it

    real_write = os.write
    written: list[int] = []

    def fills_up(fd: int, data: Any) -> int:  # the disk fills after the first 1000 bytes
        if written:
            raise OSError(28, "No space left on device")
        written.append(real_write(fd, bytes(data[:1000])))
        return written[-1]

    monkeypatch.setattr(os, "write", fills_up)
    with pytest.raises(OSError):
        save_checkpoint(path, {"a": np.full(3000, 3, np.float32)}, {"version": 3})
    monkeypatch.undo()
    arrays, meta = load_latest(path)
    assert meta == {"version": 2} and set(arrays["a"].tolist()) == {2}

    path.write_bytes(path.read_bytes()[:100])  # truncated by something else: the previous one
    assert load_latest(path)[1] == {"version": 1}


def test_a_full_store_refuses_the_batch_whole_and_says_why(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    one = np.array([1], dtype=np.int64)
    assert store.add_interactions(one, one, one) == 1
    page_count = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {page_count}")  # the disk is full now
    users = np.arange(10, 10_010, dtype=np.int64)
    with pytest.raises(StoreError, match=r"database or disk is full.*nothing of this write"):
        store.add_interactions(users, users, users)
    assert store.count_interactions() == 1  # none of the refused batch, the earlier row kept
    store._db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    assert store.add_interactions(users, users, users) == 10_000
    store.close()
