"""Benchmark: how fast `status` answers while the node trains.

Two daemons (`gossiprec node run`, separate processes) on one broker each hold half of ML-100K,
so every merged model starts another epoch over ~50,000 interactions: the node trains without
pause. This process asks one of them for its status at a steady rate and records the latency of
each whole request (connect, ask, reply) as a user's `gossiprec status` would see it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gossiprec.crypto.authority import Authority
from gossiprec.node.control import request
from gossiprec.node.errors import ControlError
from gossiprec.node.identity import init_node
from gossiprec.sim.broker import Mosquitto
from gossiprec.sim.movielens import load_ml100k

DAEMON_ENV = {"GOSSIPREC_GOSSIP_PERIOD": "0.5", "GOSSIPREC_GOSSIP_HEARTBEAT": "1",
              "GOSSIPREC_TRAIN_PERIOD": "0.1"}  # fmt: skip
INGEST_BATCH = 5_000


def bench_status(duration: float, rate: float) -> dict[str, Any]:
    dataset = load_ml100k()
    with Mosquitto() as broker, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        processes, sockets = [], []
        authority = Authority.create(folder / "ca", "bench")
        for index in range(2):
            init_node(folder / f"n{index}", broker.url, dataset.n_items, authority)
        for index in range(2):
            node_dir = folder / f"n{index}"
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "gossiprec.cli", "node", "run", "--config",
                 str(node_dir / "node.toml")], env={**os.environ, **DAEMON_ENV},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            sockets.append(node_dir / "control.sock")
        try:
            return asyncio.run(_measure(sockets, dataset.users, dataset.items, duration, rate))
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)


async def _ready(socket: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await request(socket, "status")
            return
        except ControlError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _measure(sockets: list[Path], users: Any, items: Any, duration: float,
                   rate: float) -> dict[str, Any]:  # fmt: skip
    for index, socket in enumerate(sockets):
        await _ready(socket)
        mine = np.flatnonzero(users % len(sockets) == index)
        for start in range(0, len(mine), INGEST_BATCH):
            take = mine[start : start + INGEST_BATCH]
            rows = np.stack([users[take], items[take]], axis=1).tolist()
            await request(socket, "ingest", 30.0, rows=rows)
    target = sockets[0]
    before = await request(target, "status")
    latencies = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        asked = time.perf_counter()
        await request(target, "status")
        latencies.append(time.perf_counter() - asked)
        await asyncio.sleep(max(0.0, 1 / rate - latencies[-1]))
    after = await request(target, "status")
    ms = np.array(latencies) * 1_000
    result: dict[str, Any] = {
        "requests": len(ms),
        "interactions_on_node": after["interactions"],
        "training_steps_during": after["training_steps"] - before["training_steps"],
        "merges_during": after["model_version"] - before["model_version"],
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "goal_ms": 200.0,
    }
    return result
