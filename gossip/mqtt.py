"""MQTT transport on aiomqtt: one client per broker, re-entered in a reconnect loop with backoff
and jitter. With several brokers (the nodes of one MQTT cluster), a lost or refused connection
moves the link to the next one in the list; from there it tries the first again now and then
and moves back once it answers (failback).

Subscriptions are renewed on every connect. Model messages use QoS 1; the socket runs with
TCP_NODELAY so small control messages are not held back behind Nagle's algorithm. Incoming
messages land in a bounded queue; when it is full the message is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gossiprec.gossip.transport import Incoming, LastWill, TransportStats, drain, offer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    protocol: int = 5  # 4 = MQTT 3.1.1, 5 = MQTT 5
    keepalive: int = 10
    timeout: float = 10.0  # connect, subscribe and publish acknowledgement
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    queue_size: int = 1_024
    max_inflight: int = 64
    # MQTT 5: the broker must not send this node a larger packet (a sealed update is at most
    # 4 MiB); with MQTT 3.1.1 only the broker's own max_packet_size protects the node.
    max_packet_bytes: int = 4 * 1024 * 1024 + 65_536
    # More brokers of the same cluster, (host, port), tried in order after host:port fails.
    fallbacks: tuple[tuple[str, int], ...] = ()
    # Seconds on a fallback before trying host:port again (0: stay): a broker that was slow
    # to start or came back gets its nodes back, so a cluster's load stays spread.
    failback: float = 0.0

    def __post_init__(self) -> None:
        if self.protocol not in (4, 5):
            raise ValueError(f"protocol must be 4 (MQTT 3.1.1) or 5, got {self.protocol}")
        for _, port in self.endpoints:
            if not 0 < port < 65_536:
                raise ValueError(f"port must lie in 1..65535, got {port}")
        if self.failback < 0:
            raise ValueError(f"failback must be >= 0 seconds, got {self.failback}")

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        return ((self.host, self.port), *self.fallbacks)


def _reraise_swallowed_cancel() -> None:
    """Python 3.11's asyncio.wait_for (inside aiomqtt) can drop a cancellation that arrives as
    the awaited operation completes; the task then runs on forever. Restore it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# CONNACK codes of a refused login: MQTT 3.1.1 (4, 5) and MQTT 5 (134, 135).
REFUSED_LOGIN = {4, 5, 134, 135}


class _ClosedSocketRaces:
    """A loop exception handler that drops one known, harmless error and passes on the rest.

    aiomqtt hands paho's requests to watch a socket to the loop with call_soon_threadsafe; one
    that runs after a disconnect closed the socket fails with EBADF, and asyncio would print a
    traceback for each (nine at the end of a 943-node simulation). Nothing is lost."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error, handle = context.get("exception"), context.get("handle")
        callback = getattr(handle, "_callback", None)
        if (isinstance(error, OSError) and error.errno == errno.EBADF
                and callback in (loop.add_writer, loop.add_reader)):  # fmt: skip
            log.debug("a socket closed before the loop could watch it: %s", error)
        elif self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> None:
        current = loop.get_exception_handler()
        if not isinstance(current, cls):
            loop.set_exception_handler(cls(current))


def refused(error: aiomqtt.MqttError) -> bool:
    """Did the broker refuse the login (bad credentials, not authorized)?"""
    rc = getattr(error, "rc", None)
    value = getattr(rc, "value", rc)
    return isinstance(value, int) and value in REFUSED_LOGIN


class MqttTransport:
    def __init__(self, config: MqttConfig, client_id: str, subscriptions: list[str],
                 will: LastWill | None = None, *, seed: int | None = None) -> None:  # fmt: skip
        self.config = config
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.will = will
        self.stats = TransportStats(down_since=time.time())
        # Backoff jitter from the OS unless a simulation asks for repeatable runs: nodes that
        # share a seed would retry in lockstep against a recovering broker.
        self._rng = random.SystemRandom() if seed is None else random.Random(seed)
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=config.queue_size)
        self._connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None  # set while connected
        self._made: aiomqtt.Client | None = None  # the client of the broker in use
        self._clients: dict[tuple[str, int], aiomqtt.Client] = {}  # one per broker, re-entered
        self._runner: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    def _make_client(self, host: str, port: int, identifier: str, *,
                     will: bool = True) -> aiomqtt.Client:  # fmt: skip
        version = (
            aiomqtt.ProtocolVersion.V5
            if self.config.protocol == 5
            else (aiomqtt.ProtocolVersion.V311)
        )
        last_will = None
        if will and self.will is not None:
            last_will = aiomqtt.Will(self.will.topic, self.will.payload, qos=1,
                                     retain=self.will.retain)  # fmt: skip
        properties = None
        if self.config.protocol == 5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.MaximumPacketSize = self.config.max_packet_bytes
        return aiomqtt.Client(
            host, port, identifier=identifier,
            username=self.config.username, password=self.config.password, protocol=version,
            will=last_will, keepalive=self.config.keepalive, timeout=self.config.timeout,
            max_inflight_messages=self.config.max_inflight,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            # A session per connection: after a broker restart nothing stale is replayed.
            clean_session=True if self.config.protocol == 4 else None,
            properties=properties,
        )  # fmt: skip

    async def __aenter__(self) -> Self:
        _ClosedSocketRaces.install(asyncio.get_running_loop())
        self._runner = asyncio.create_task(self._run(), name=f"mqtt-{self.client_id}")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:  # fmt: skip
        runner = self._runner
        if runner is not None:
            runner.cancel()
            _, pending = await asyncio.wait({runner}, timeout=2.0)
            if pending and self._made is not None:
                # aiomqtt's __aexit__ awaits the broker's side of the disconnect with no
                # timeout; on a half-closed connection that never comes. Resolve it ourselves.
                disconnected = self._made._disconnected
                if not disconnected.done():
                    disconnected.set_result(None)
                await asyncio.wait({runner}, timeout=2.0)
            if runner.done() and not runner.cancelled() and runner.exception() is not None:
                log.warning("%s transport ended with %r", self.client_id, runner.exception())
        self._connected.clear()

    def _client_for(self, endpoint: tuple[str, int]) -> aiomqtt.Client:
        if endpoint not in self._clients:
            # One client id per broker of a cluster: RabbitMQ keeps a client's subscriptions in
            # queues named after its id on the broker node it used; after that node crashes the
            # same id cannot subscribe on another until it is back (the connect hangs; seen with
            # 3.10, rabbitmq-server#10203). A reconnect to the same broker still replaces a stale
            # session of ours, as the broker does for a known id.
            index = self.config.endpoints.index(endpoint)
            identifier = self.client_id if index == 0 else f"{self.client_id}-{index}"
            self._clients[endpoint] = self._make_client(*endpoint, identifier)
        self._made = self._clients[endpoint]
        self.stats.broker = f"{endpoint[0]}:{endpoint[1]}"
        return self._made

    async def _run(self) -> None:
        """Connect, subscribe, pump messages; on any loss, back off with jitter and retry, on the
        next broker of the list if there are several; from a fallback, move back to the first
        broker once it answers again (`failback`)."""
        endpoints = self.config.endpoints
        current, last_connected = 0, None
        delay = self.config.backoff_initial
        returning = False  # to the first broker, which answered again
        while True:
            host, port = endpoints[current]
            client = self._client_for(endpoints[current])
            moved_back = False
            try:
                async with client:
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1, timeout=self.config.timeout)
                        _reraise_swallowed_cancel()
                    self._client = client
                    self._connected.set()
                    self.stats.connects += 1
                    if returning:
                        self.stats.failbacks += 1
                    elif last_connected not in (None, current):
                        self.stats.failovers += 1
                    last_connected = current
                    if self.stats.down_since is not None:
                        self.stats.last_outage = time.time() - self.stats.down_since
                    self.stats.down_since = None
                    delay = self.config.backoff_initial
                    log.info("%s connected to %s:%d", self.client_id, host, port)
                    moved_back = await self._serve(client, on_fallback=current != 0)
            except aiomqtt.MqttError as error:
                self.stats.last_error = str(error)
                if refused(error):  # retrying will not help until someone fixes the login
                    log.error("%s: the broker at %s:%d refused the login (%s). Fix: check "
                              "broker.username and broker.password; retrying in %.2fs",
                              self.client_id, host, port, error, delay)  # fmt: skip
                else:
                    log.warning("%s lost the broker (%s); retrying in %.2fs", self.client_id,
                                error, delay)  # fmt: skip
            finally:
                self._connected.clear()
                self._client = None
                if self.stats.down_since is None:
                    self.stats.down_since = time.time()
            returning = moved_back
            if moved_back:
                log.info("%s: the first broker answers again; moving back", self.client_id)
                current = 0
                continue
            current = (current + 1) % len(endpoints)
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.5))
            # The backoff grows once every broker of the list has failed in turn.
            if current == 0:
                delay = min(self.config.backoff_max, delay * 2)

    async def _serve(self, client: aiomqtt.Client, *, on_fallback: bool) -> bool:
        """Pump the broker's messages until the link drops (MqttError) or, on a fallback with
        failback set, until the first broker accepts a login again: then True."""
        if not on_fallback or not self.config.failback:
            await self._pump(client)
            return False
        pump = asyncio.ensure_future(self._pump(client))
        probe = asyncio.ensure_future(self._first_broker_answers())
        try:
            done, _ = await asyncio.wait({pump, probe}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, probe):
                task.cancel()
            await asyncio.wait({pump, probe})
        if probe in done:
            return True
        pump.result()  # the link dropped: its MqttError
        return False

    async def _pump(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self._accept(message)

    async def _first_broker_answers(self) -> None:
        """Return once the first broker accepts a login (no will, no subscription), trying
        every `failback` seconds with jitter."""
        host, port = self.config.endpoints[0]
        while True:
            await asyncio.sleep(self.config.failback * self._rng.uniform(0.75, 1.25))
            probe = self._make_client(host, port, f"{self.client_id}-probe", will=False)
            try:
                async with asyncio.timeout(2 * self.config.timeout), probe:
                    return
            except Exception as error:  # whatever the failure, the first broker is not back
                log.debug("%s: the first broker still fails (%r)", self.client_id, error)

    def _accept(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        data = payload if isinstance(payload, bytes) else bytes(str(payload or ""), "utf-8")
        offer(self._queue, self.stats, Incoming(str(message.topic), data, bool(message.retain)))

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        client = self._client
        if client is None or not self.connected:
            self.stats.publish_failed += 1
            return False
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=self.config.timeout)
        except aiomqtt.MqttError:
            self.stats.publish_failed += 1
            _reraise_swallowed_cancel()
            return False
        _reraise_swallowed_cancel()
        self.stats.published += 1
        self.stats.bytes_out += len(payload)
        return True

    def incoming(self) -> AsyncIterator[Incoming]:
        return drain(self._queue, self.stats)
