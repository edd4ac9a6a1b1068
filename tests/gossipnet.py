"""Build admitted gossip clusters for tests: real keys, certificates, envelopes and codec."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.keys import NodeKeys
from gossiprec.gossip.averaging import mean_of, relative_error
from gossiprec.gossip.driver import INBOX_BACKLOG, GossipNode, Identity, last_will, subscriptions
from gossiprec.gossip.membership import MembershipConfig
from gossiprec.gossip.messages import Arrays
from gossiprec.gossip.mqtt import MqttConfig, MqttTransport
from gossiprec.gossip.protocol import GossipConfig, GossipProtocol
from gossiprec.gossip.transport import LastWill, Transport

# Fast enough to see joins and deaths within seconds, slow enough that a busy machine's delays
# (seconds, at times) do not make live peers look dead.
FAST = MembershipConfig(suspect_after=2.0, dead_after=6.0)

TransportFactory = Callable[[Identity, list[str], LastWill], Transport]


def admit(authority: Authority, keys: NodeKeys | None = None, days: float = 1.0) -> Identity:
    keys = keys or NodeKeys.generate()
    now = int(time.time())
    cert = authority.issue(
        keys.signing_public, keys.encryption_public, now - 60, now + int(days * 86_400)
    )
    return Identity(keys, cert, authority.trust_store())


def mqtt_factory(port: int, protocol: int = 5) -> TransportFactory:
    def make(identity: Identity, topics: list[str], will: LastWill) -> Transport:
        config = MqttConfig(
            port=port, protocol=protocol, keepalive=5, backoff_initial=0.1, backoff_max=1.0
        )
        return MqttTransport(config, identity.node_id.hex(), topics, will)

    return make


@dataclass
class Cluster:
    nodes: list[GossipNode]
    truth: Arrays

    def params(self) -> list[Arrays]:
        return [n.protocol.params for n in self.nodes]

    def error(self) -> float:
        return max(relative_error(p, self.truth) for p in self.params())

    def disagreement(self) -> float:
        consensus = mean_of(self.params())
        return max(relative_error(p, consensus) for p in self.params())

    def report(self) -> str:
        """Per-node state, for assertion messages."""
        lines = []
        for node in self.nodes:
            error = relative_error(node.protocol.params, self.truth)
            lines.append(
                f"{node.identity.node_id.hex()[:8]} err={error:.2e}"
                f" w={node.status().weight:.3g} alive={len(node.status().alive())}"
                f" dir={len(node.directory)} rx={node.counters.updates_received}"
                f" tx={node.counters.updates_sent} {node.transport.stats} {node.rejected()}"
                f" {node.status()}"
            )
        return "\n".join(lines)

    async def until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            await asyncio.sleep(0.05)
        return condition()


def make_nodes(
    folder: Path,
    authority: Authority,
    n: int,
    strategy: str,
    *,
    seed: int = 0,
    period: float = 0.1,
    heartbeat: float = 0.3,
    shape: tuple[int, ...] = (32, 4),
    membership: MembershipConfig = FAST,
) -> tuple[list[tuple[Identity, GossipProtocol]], Arrays]:
    rng = np.random.default_rng(seed)
    config = GossipConfig(strategy=strategy, period=period, membership=membership)
    made = []
    for index in range(n):
        identity = admit(authority)
        params: Arrays = {"v": rng.normal(1.0, 1.0, shape).astype(np.float32)}
        protocol = GossipProtocol(
            identity.node_id, params, config, random.Random(seed + index), time.time()
        )
        made.append((identity, protocol))
    truth = mean_of([p.params for _, p in made])
    return made, truth


@contextlib.asynccontextmanager
async def running(
    folder: Path,
    made: list[tuple[Identity, GossipProtocol]],
    truth: Arrays,
    factory: TransportFactory,
    heartbeat: float = 0.3,
    inbox_backlog: int = INBOX_BACKLOG,
) -> AsyncIterator[Cluster]:
    """Start every node (own transport, own tasks); cancel them all on exit."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for identity, protocol in made:
            transport = await stack.enter_async_context(
                factory(identity, subscriptions(identity), last_will(identity))
            )
            nodes.append(
                GossipNode(
                    identity,
                    transport,
                    protocol,
                    folder / identity.node_id.hex(),
                    heartbeat=heartbeat,
                    inbox_backlog=inbox_backlog,
                )
            )
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(node.run()) for node in nodes]
            try:
                yield Cluster(nodes, truth)
            finally:
                for task in tasks:
                    task.cancel()
