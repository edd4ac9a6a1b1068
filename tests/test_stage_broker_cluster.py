"""Nodes spread over a 3-node RabbitMQ cluster (MQTT plugin) learn together, and keep learning
when one RabbitMQ node dies mid-run: its clients fail over to the other two.

Real parts throughout: three RabbitMQ 3.10 nodes clustered on loopback, 18 real nodes (the
daemon's Node class, each with its own keys, store and MQTT connection; MQTT 3.1.1, which is
what rabbitmq_mqtt 3.10 speaks) on ML-100K, and a SIGKILL of a whole RabbitMQ node.
Needs root (RabbitMQ runs as its own user); `.ci/run` runs it after the suite (`pytest -m stage`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np
import pytest

from gossiprec.sim.baselines import local_only
from gossiprec.sim.broker import BrokerAddress
from gossiprec.sim.config import SimConfig, node_template
from gossiprec.sim.partition import partition_users
from gossiprec.sim.simulation import Point, simulate
from gossiprec.sim.split import LeaveOneOut, restrict
from tests.rabbitcluster import rabbitmq_cluster
from tests.stagetools import say

pytestmark = pytest.mark.stage

NODES, USERS_PER_NODE = 18, 20
DURATION, KILL_AT = 150.0, 75.0


def test_nodes_on_a_rabbitmq_cluster_converge_and_survive_the_loss_of_a_broker_node(
    ml100k_split: LeaveOneOut,
) -> None:
    groups = partition_users(ml100k_split, USERS_PER_NODE, seed=0)[:NODES]
    split = restrict(ml100k_split, np.concatenate(groups))
    alone = local_only(split, groups=groups).metrics.hr10
    with rabbitmq_cluster() as brokers:
        (first, *others) = [("127.0.0.1", b.mqtt_port) for b in brokers]
        address = BrokerAddress(*first, 4, "rabbitmq cluster", tuple(others))
        spread = Counter(address.endpoints_for(i)[0][1] for i in range(NODES))
        say(f"{NODES} nodes over the 3 brokers (MQTT port: nodes): {dict(spread)}")
        victim = brokers[1]
        killed: list[float] = []

        def tick(seconds: float, point: Point | None) -> None:
            if point is not None:
                say(f"t={point.seconds:5.1f} s  HR@10 {point.hr10:.4f}  merges/node "
                    f"{point.merges_per_node:.1f}  online {point.online}")  # fmt: skip
            if seconds >= KILL_AT and not killed:
                victim.kill()
                killed.append(seconds)
                on_it = spread[victim.mqtt_port]
                say(f"t={seconds:5.1f} s  SIGKILL RabbitMQ node {victim.name} "
                    f"(MQTT :{victim.mqtt_port}, {on_it} nodes on it)")  # fmt: skip

        node = node_template(split.n_items).changed(
            {"gossip.period": 0.5, "train.period": 0.5, "broker.protocol": 4}
        )
        config = SimConfig(node, duration=DURATION, eval_every=15.0, curious=0)
        started = time.monotonic()
        result = asyncio.run(simulate(split, groups, config, address, on_tick=tick))
    assert killed, "the run ended before the broker node was killed"
    # HR@10 of 360 users moves by about 0.03 between evaluations: compare plateaus, not points.
    before = float(np.mean([p.hr10 for p in result.points if 15 <= p.seconds <= killed[0]]))
    final = float(np.mean([p.hr10 for p in result.points if p.seconds > killed[0] + 15]))
    say(f"HR@10: local-only {alone:.4f}; mean before the kill {before:.4f}, after {final:.4f} "
        f"({time.monotonic() - started:.0f} s)")  # fmt: skip
    outages = sorted(round(s, 2) for s in result.failover_seconds)
    say(f"after: nodes per broker {result.brokers}; {len(outages)} failovers, seconds "
        f"without a broker: {outages}")  # fmt: skip
    assert before > alone + 0.05, "the nodes learned together on the cluster"
    assert final >= before - 0.03, "learning went on after the broker node died"
    dead = f"127.0.0.1:{victim.mqtt_port}"
    assert dead not in result.brokers and sum(result.brokers.values()) == NODES
    assert len(result.failover_seconds) >= spread[victim.mqtt_port]
    assert max(result.failover_seconds) < 30.0
    assert result.rejected.keys() <= {"envelope:unknown_sender"}, result.rejected
