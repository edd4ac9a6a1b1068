"""Run many protocol cores in virtual time: no asyncio, no sockets, seeded and repeatable.

Messages go through the real codec (bytes on the wire are counted) and may be dropped at a
given rate or delayed by a random latency. This is the in-memory path for very large runs; the
same cores run over MQTT in gossip.driver.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from gossiprec.gossip.codec import CodecStats, decode, encode
from gossiprec.gossip.protocol import GossipProtocol


@dataclass
class VirtualStats:
    delivered: int = 0
    dropped: int = 0
    codec: CodecStats = field(default_factory=CodecStats)


class VirtualNetwork:
    def __init__(self, protocols: list[GossipProtocol], *, seed: int = 0, drop_rate: float = 0.0,
                 latency: tuple[float, float] = (0.005, 0.05)) -> None:  # fmt: skip
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in [0, 1), got {drop_rate}")
        self.nodes = {p.node_id: p for p in protocols}
        self.now = 0.0
        self.stats = VirtualStats()
        self._rng = random.Random(seed)
        self._drop_rate = drop_rate
        self._latency = latency
        self._events: list[tuple[float, int, bytes, bytes | None, bytes]] = []
        self._sequence = 0
        for protocol in protocols:
            self._schedule(protocol.next_tick, protocol.node_id, None, b"")

    def introduce_all(self) -> None:
        """Every node hears of every other (as if from presence beacons at time now)."""
        ids = list(self.nodes)
        for protocol in self.nodes.values():
            for peer in ids:
                protocol.peer_heard(peer, self.now)

    def _schedule(self, at: float, node: bytes, sender: bytes | None, data: bytes) -> None:
        self._sequence += 1
        heapq.heappush(self._events, (at, self._sequence, node, sender, data))

    def run(self, until: float, stop: Callable[[], bool] | None = None,
            check_every: float = 1.0) -> bool:  # fmt: skip
        """Advance virtual time to `until`; returns True if `stop()` became true first."""
        next_check = self.now + check_every
        while self._events and self._events[0][0] <= until:
            at, _, node, sender, data = heapq.heappop(self._events)
            self.now = at
            if at >= next_check:
                next_check = at + check_every
                if stop is not None and stop():
                    return True
            protocol = self.nodes.get(node)
            if protocol is None:
                continue
            if sender is None:
                sends = protocol.tick(at)
                self._schedule(protocol.next_tick, node, None, b"")
            else:
                update = decode(data, stats=self.stats.codec)
                sends = protocol.receive(sender, update, at)
            codec = protocol.config.codec
            for send in sends:
                wire = encode(send.update, codec, self.stats.codec)
                if self._rng.random() < self._drop_rate:
                    self.stats.dropped += 1
                    continue
                self.stats.delivered += 1
                delay = self._rng.uniform(*self._latency)
                self._schedule(at + delay, send.peer, node, wire)
        self.now = until
        return stop is not None and stop()
