"""Benchmark: gossip rounds per node until every node is within a tolerance of the true mean."""

from __future__ import annotations

import random

import numpy as np

from gossiprec.gossip.averaging import mean_of, relative_error
from gossiprec.gossip.membership import MembershipConfig
from gossiprec.gossip.protocol import GossipConfig, GossipProtocol
from gossiprec.gossip.virtual import VirtualNetwork


def rounds_to_mean(n: int, strategy: str, target: float, *, drop: float = 0.0, seed: int = 0,
                   view: int = 256, limit: float = 600.0) -> dict[str, object]:  # fmt: skip
    """Virtual time over the in-memory path: random vectors, full codec, no crypto."""
    rng = np.random.default_rng(seed)
    membership = MembershipConfig(suspect_after=1e6, dead_after=2e6, view_size=view)
    config = GossipConfig(strategy=strategy, membership=membership)
    nodes = [
        GossipProtocol(i.to_bytes(16, "big"), {"v": rng.normal(1, 1, 128).astype(np.float32)},
                       config, random.Random(seed * 1_000_003 + i), 0.0)
        for i in range(n)
    ]  # fmt: skip
    truth = mean_of([p.params for p in nodes])
    network = VirtualNetwork(nodes, seed=seed, drop_rate=drop)
    network.introduce_all()

    def error() -> float:
        return max(relative_error(p.params, truth) for p in nodes)

    reached = network.run(limit, lambda: error() < target, check_every=0.25)
    return {"nodes": n, "strategy": strategy, "drop": drop, "reached": reached,
            "rounds_per_node": sum(p.status().rounds for p in nodes) / n,
            "virtual_seconds": network.now, "error": error()}  # fmt: skip
