from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gossiprec.node.checkpoint import load_checkpoint, save_checkpoint
from gossiprec.node.errors import CheckpointError
from gossiprec.node.store import PeerRow, Store


def test_interactions_are_deduplicated_and_read_back_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    assert (
        store.add_interactions(np.array([1, 1, 2]), np.array([5, 6, 5]), np.array([9, 8, 7])) == 3
    )
    assert store.add_interactions(np.array([1, 3]), np.array([5, 1]), np.array([10, 11])) == 1
    users, items, times = store.interactions()
    assert users.tolist() == [1, 1, 2, 3] and items.tolist() == [5, 6, 5, 1]
    assert times.tolist() == [9, 8, 7, 11]
    assert store.count_interactions() == 4


def test_peers_and_counters_persist(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    store.save_peers([PeerRow(b"\x01" * 16, "alive", 12.5, 3, 4, 500, 600, 0.9)])
    store.add_counters({"rejected:replay": 2})
    store.add_counters({"rejected:replay": 1, "steps": 10})
    store.close()
    again = Store(tmp_path / "store.sqlite")
    assert again.peers() == [PeerRow(b"\x01" * 16, "alive", 12.5, 3, 4, 500, 600, 0.9)]
    assert again.counters() == {"rejected:replay": 3, "steps": 10}


INGESTER = """
import sys, numpy as np
from pathlib import Path
from gossiprec.node.store import Store
store = Store(Path(sys.argv[1]))
for i in range(100_000):
    store.add_interactions(np.array([i % 97]), np.array([i]), np.array([i]))
    print(i, flush=True)  # the acknowledgement: only after the commit returned
"""


def test_sigkill_loses_no_acknowledged_interaction(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    command = [sys.executable, "-c", INGESTER, str(path)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    ) as child:
        assert child.stdout is not None
        acknowledged = [int(child.stdout.readline()) for _ in range(300)]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    _, items, _ = Store(path).interactions()
    assert set(acknowledged) <= set(items.tolist())
    assert len(items) >= 300


def test_checkpoint_round_trips_atomically_and_privately(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    arrays = {"item_embedding": np.arange(12, dtype=np.float32).reshape(3, 4)}
    save_checkpoint(path, arrays, {"version": 7, "steps": 120})
    loaded, meta = load_checkpoint(path)
    assert np.array_equal(loaded["item_embedding"], arrays["item_embedding"])
    assert meta == {"version": 7, "steps": 120}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left behind


def test_a_damaged_checkpoint_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="move it aside"):
        load_checkpoint(path)


def test_a_new_store_is_private_to_the_nodes_user(tmp_path: Path) -> None:
    store = Store(tmp_path / "data" / "store.sqlite")
    one = np.array([1], dtype=np.int64)
    store.add_interactions(one, one, one)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    for path in (tmp_path / "data").iterdir():  # the database, its -wal and -shm
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    store.close()
