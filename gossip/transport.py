"""The one small interface every transport implements, and what crosses it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    retained: bool = False


@dataclass(frozen=True)
class LastWill:
    topic: str
    payload: bytes = b""
    retain: bool = True


@dataclass
class TransportStats:
    published: int = 0
    publish_failed: int = 0  # not connected, or the broker did not acknowledge in time
    bytes_out: int = 0
    received: int = 0
    bytes_in: int = 0
    dropped_incoming: int = 0  # the bounded incoming queue was full
    connects: int = 0
    down_since: float | None = None  # time.time() the link went down (or was made); None: up
    broker: str = ""  # HOST:PORT of the broker this link is on (or last tried)
    failovers: int = 0  # connects to another broker than the one before
    failbacks: int = 0  # returns to the first broker once it answered again
    last_outage: float = 0.0  # seconds the link was down before its latest connect
    last_error: str = ""  # why the link last went down or failed to come up


class Transport(Protocol):
    """A pub/sub link: subscriptions and last will are fixed when it is made."""

    stats: TransportStats

    @property
    def connected(self) -> bool: ...

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Hand a message to the broker (QoS 1); False, counted, when it could not be."""
        ...

    def incoming(self) -> AsyncIterator[Incoming]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


def offer(queue: asyncio.Queue[Incoming], stats: TransportStats, message: Incoming) -> None:
    """Queue an incoming message, or drop and count it when the bounded queue is full."""
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        stats.dropped_incoming += 1


async def drain(queue: asyncio.Queue[Incoming], stats: TransportStats) -> AsyncIterator[Incoming]:
    while True:
        message = await queue.get()
        stats.received += 1
        stats.bytes_in += len(message.payload)
        yield message
