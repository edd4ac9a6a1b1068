"""Capacity on paper from measured numbers: the brokers a network needs, and what dominates.

Input: `gossiprec bench gossip --json` outputs, one per broker kind. A node publishes 2 model
messages per gossip period (it starts one exchange and answers about one) and one beacon per
heartbeat; every beacon is delivered to each peer in the sender's presence view. A broker's
budget is its measured bytes/s for model messages plus its measured beacons/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gossiprec.cli.bench_gossip import DIM, ROWS
from gossiprec.gossip.topics import MAX_SHARDS
from gossiprec.sim.simulation import presence_shards

DEVICES = (1_000, 10_000, 100_000, 1_000_000)
RAW_PAYLOAD_BYTES = ROWS * DIM * 4 + ROWS * 4  # bench gossip's raw large message
TARGET_VIEW = 64  # peers a node should hear at most


@dataclass(frozen=True)
class Setting:
    label: str
    codec: str
    period: float
    heartbeat: float
    max_shards: int


SETTINGS = (
    Setting("float16, period 2 s, heartbeat 5 s (node defaults)", "float16", 2.0, 5.0, MAX_SHARDS),
    Setting("sparse-int8, period 60 s, heartbeat 120 s", "sparse-int8", 60.0, 120.0, MAX_SHARDS),
    Setting("same, presence shards beyond 256", "sparse-int8", 60.0, 120.0, 2**24),
)


def view(nodes: int, shards: int) -> float:
    return nodes - 1 if shards == 1 else nodes * (math.log2(shards) + 1) / shards


def load(nodes: int, setting: Setting, exchange_bytes: int) -> tuple[float, float, int]:
    """(model bytes/s, beacon deliveries/s, presence shards) through the brokers."""
    shards = presence_shards(nodes, TARGET_VIEW, setting.max_shards)
    model = nodes * exchange_bytes / setting.period
    return model, nodes * view(nodes, shards) / setting.heartbeat, shards


def brokers_needed(nodes: int, setting: Setting, measured: dict[str, Any]) -> float:
    model, beacons, _ = load(nodes, setting, measured["exchange_bytes_by_codec"][setting.codec])
    bytes_per_s = measured["raw_aiomqtt_msgs_per_s"] * RAW_PAYLOAD_BYTES
    return float(model / bytes_per_s + beacons / measured["raw_beacon_msgs_per_s"])


def nodes_per_broker(setting: Setting, measured: dict[str, Any]) -> int:
    low, high = 2, 10**9
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (
            (middle, high) if brokers_needed(middle, setting, measured) <= 1 else (low, middle)
        )
    return low


def capacity(measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rows for every setting and network size, and how many nodes one broker of each carries."""
    some = next(iter(measured.values()))
    rows = []
    for setting in SETTINGS:
        for nodes in DEVICES:
            exchange = some["exchange_bytes_by_codec"][setting.codec]
            model, beacons, shards = load(nodes, setting, exchange)
            row: dict[str, Any] = {
                "setting": setting.label, "devices": nodes, "shards": shards,
                "view": round(view(nodes, shards)), "model_mb_per_s": model / 1e6,
                "beacons_per_s": beacons,
            }  # fmt: skip
            for name, numbers in measured.items():
                row[f"{name}_needed"] = brokers_needed(nodes, setting, numbers)
            rows.append(row)
    carries = {setting.label: {name: nodes_per_broker(setting, numbers)
                               for name, numbers in measured.items()}
               for setting in SETTINGS}  # fmt: skip
    return {"rows": rows, "nodes_per_broker": carries}
