"""An in-process broker with MQTT's semantics that matter here: wildcards, retained messages,
last wills on unclean disconnects, bounded client queues. For tests and very large simulations.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from gossiprec.gossip.topics import matches
from gossiprec.gossip.transport import Incoming, LastWill, TransportStats, drain, offer


class InMemoryBroker:
    def __init__(self, *, drop_rate: float = 0.0, seed: int = 0) -> None:
        self.retained: dict[str, bytes] = {}
        self.clients: dict[str, InMemoryTransport] = {}
        self.drop_rate = drop_rate
        self.dropped = 0
        self._rng = random.Random(seed)

    def client(self, client_id: str, subscriptions: list[str], will: LastWill | None = None,
               queue_size: int = 1_024) -> InMemoryTransport:  # fmt: skip
        return InMemoryTransport(self, client_id, subscriptions, will, queue_size)

    def route(self, topic: str, payload: bytes, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)  # an empty retained message clears it
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.dropped += 1
            return
        for client in list(self.clients.values()):
            if any(matches(p, topic) for p in client.subscriptions):
                client.offer(Incoming(topic, payload))

    def crash(self, client_id: str) -> None:
        """Drop a client without a clean disconnect: its last will is published."""
        client = self.clients.pop(client_id, None)
        if client is not None and client.will is not None:
            self.route(client.will.topic, client.will.payload, client.will.retain)


class InMemoryTransport:
    def __init__(self, broker: InMemoryBroker, client_id: str, subscriptions: list[str],
                 will: LastWill | None, queue_size: int) -> None:  # fmt: skip
        self.broker = broker
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.will = will
        self.stats = TransportStats()
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=queue_size)

    @property
    def connected(self) -> bool:
        return self.broker.clients.get(self.client_id) is self

    async def __aenter__(self) -> Self:
        self.broker.clients[self.client_id] = self
        self.stats.connects += 1
        for topic, payload in list(self.broker.retained.items()):
            if any(matches(p, topic) for p in self.subscriptions):
                self.offer(Incoming(topic, payload, retained=True))
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:  # fmt: skip
        if self.connected:
            del self.broker.clients[self.client_id]  # clean disconnect: no will

    def offer(self, message: Incoming) -> None:
        offer(self._queue, self.stats, message)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        if not self.connected:
            self.stats.publish_failed += 1
            return False
        self.stats.published += 1
        self.stats.bytes_out += len(payload)
        self.broker.route(topic, payload, retain)
        await asyncio.sleep(0)  # a real publish yields; so does this one
        return True

    def incoming(self) -> AsyncIterator[Incoming]:
        return drain(self._queue, self.stats)
