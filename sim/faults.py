"""Fault injection around a real transport: incoming messages lost at a given rate."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from gossiprec.gossip.transport import Incoming, Transport, TransportStats


class LossyTransport:
    """Drops each incoming inbox message with probability `rate` (presence is left alone, so
    loss hits model exchanges, not membership). Everything else is the wrapped transport."""

    def __init__(self, inner: Transport, rate: float, seed: int) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop rate must lie in [0, 1), got {rate}")
        self.inner = inner
        self.stats: TransportStats = inner.stats  # the same object: counts stay the inner's
        self.rate = rate
        self.dropped = 0
        self._rng = random.Random(seed)

    @property
    def connected(self) -> bool:
        return self.inner.connected

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        return await self.inner.publish(topic, payload, retain=retain)

    async def incoming(self) -> AsyncIterator[Incoming]:
        async for message in self.inner.incoming():
            if "/inbox/" in message.topic and self._rng.random() < self.rate:
                self.dropped += 1
                continue
            yield message

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:  # fmt: skip
        await self.inner.__aexit__(kind, error, trace)
