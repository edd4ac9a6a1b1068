"""Nodes spread over a 3-node RabbitMQ cluster (MQTT plugin) learn together, and keep learning
when one RabbitMQ node dies mid-run: its clients fail over to the other two. And a revocation
list retained on one RabbitMQ node (their retained stores are per node) reaches a node on
another through the nodes' relay.

Real parts throughout: three RabbitMQ 3.10 nodes clustered on loopback, 18 real nodes (the
daemon's Node class, each with its own keys, store and MQTT connection; MQTT 3.1.1, which is
what rabbitmq_mqtt 3.10 speaks) on ML-100K, and a SIGKILL of a whole RabbitMQ node.
Needs root (RabbitMQ runs as its own user); `.ci/run` runs it after the suite (`pytest -m stage`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from gossiprec.crypto.authority import Authority
from gossiprec.gossip import topics
from gossiprec.gossip.driver import Identity
from gossiprec.gossip.mqtt import MqttConfig, MqttTransport
from gossiprec.gossip.transport import LastWill, Transport
from gossiprec.node.revocation import publish_crl
from gossiprec.sim.baselines import local_only
from gossiprec.sim.broker import BrokerAddress
from gossiprec.sim.config import SimConfig, node_template
from gossiprec.sim.partition import partition_users
from gossiprec.sim.simulation import Point, simulate
from gossiprec.sim.split import LeaveOneOut, restrict
from tests.gossipnet import admit, make_nodes, running
from tests.rabbitcluster import RabbitNode, rabbitmq_cluster
from tests.stagetools import say

pytestmark = pytest.mark.stage

NODES, USERS_PER_NODE = 18, 20
DURATION, KILL_AT = 150.0, 75.0


@pytest.fixture(scope="module")
def brokers() -> Iterator[list[RabbitNode]]:
    with rabbitmq_cluster() as nodes:
        yield nodes


async def test_a_revocation_list_retained_on_one_broker_reaches_a_node_on_another(
    brokers: list[RabbitNode], tmp_path: Path
) -> None:
    first, third = brokers[0], brokers[2]
    authority = Authority.create(tmp_path / "ca", "crlnet")
    made, truth = make_nodes(tmp_path, authority, 2, "pairwise")
    stranger = admit(authority)
    crl = authority.revoke({stranger.certificate.serial}, int(time.time()))
    await publish_crl(crl, first.url)  # retained: on the first RabbitMQ node only
    assert await _retained(third, topics.crl("crlnet")) is None, "RabbitMQ shares retained ones"
    ports = {made[0][0].node_id: first.mqtt_port, made[1][0].node_id: third.mqtt_port}

    def factory(identity: Identity, subscribed: list[str], will: LastWill) -> Transport:
        config = MqttConfig(port=ports[identity.node_id], protocol=4, keepalive=5)
        return MqttTransport(config, identity.node_id.hex(), subscribed, will)

    async with running(tmp_path, made, truth, factory) as cluster:
        on_first, on_third = cluster.nodes
        assert await cluster.until(
            lambda: on_third.identity.trust.crl.version == crl.version, 30
        ), cluster.report()
        say(f"revocation list v{crl.version}, retained on {first.name} only, reached the node on "
            f"{third.name}: {on_first.counters.crl_relayed} relay(s) by the node on "
            f"{first.name}")  # fmt: skip
        assert on_first.counters.crl_relayed >= 1
        assert stranger.certificate.serial in on_third.identity.trust.crl.revoked


async def _retained(broker: RabbitNode, topic: str) -> bytes | None:
    """The retained message a new subscriber on `broker` gets for `topic`, if any in 3 s."""
    version = aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", broker.mqtt_port, protocol=version) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(3):
                async for message in client.messages:
                    return bytes(message.payload) if isinstance(message.payload, bytes) else None
        except TimeoutError:
            return None
    return None


def test_nodes_on_a_rabbitmq_cluster_converge_and_survive_the_loss_of_a_broker_node(
    ml100k_split: LeaveOneOut, brokers: list[RabbitNode]
) -> None:
    # Runs last in this module: it kills the second RabbitMQ node.
    groups = partition_users(ml100k_split, USERS_PER_NODE, seed=0)[:NODES]
    split = restrict(ml100k_split, np.concatenate(groups))
    alone = local_only(split, groups=groups).metrics.hr10
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
    # Nothing refused as forged or malformed; a busy node may shed its oldest queued updates.
    shed = {"envelope:unknown_sender", "inbox:overflow"}
    assert result.rejected.keys() <= shed, result.rejected
