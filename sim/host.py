"""Where a simulation's nodes run: a NodeHost runs some of them on this process's event loop.

Every node is the daemon's Node class with its own keys, certificate, SQLite store, checkpoints
and MQTT client; only the process is shared. A Python process gets about one core out of the GIL
however many nodes it runs (a 943-node run used 1.2 of 2 cores), so `sim/workers.py` can put
further hosts in child processes. The simulation drives every host through the same few calls
(start, stop, pace, scores, stats) and never touches a node itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import resource
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from gossiprec.crypto.certificate import Certificate, RevocationList
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.trust import TrustStore
from gossiprec.gossip.driver import Identity, last_will, subscriptions
from gossiprec.gossip.mqtt import MqttConfig, MqttTransport
from gossiprec.gossip.protocol import GossipProtocol
from gossiprec.gossip.transport import Transport
from gossiprec.node.config import NodeConfig
from gossiprec.node.node import Node
from gossiprec.node.types import IntArray
from gossiprec.sim.attacks import Attack, HostileProtocol
from gossiprec.sim.broker import BrokerAddress
from gossiprec.sim.config import SimConfig
from gossiprec.sim.curious import CuriousProtocol
from gossiprec.sim.faults import LossyTransport


@dataclass(frozen=True)
class SeatSpec:
    """One node's seat: its index in the run and its users' train + validation interactions."""

    index: int
    users: IntArray
    pairs: tuple[IntArray, IntArray, IntArray]  # users, items, times


@dataclass(frozen=True)
class SimItems:
    """The catalogue a simulation's nodes are told about: each row's features, and the rows that
    exist while the run trains (negatives are drawn among them). The others are added with their
    features just before the final scores, as a shop adds products nobody has bought yet."""

    features: tuple[tuple[str, ...], ...]  # by row
    live: IntArray

    def entries(self, rows: IntArray) -> list[tuple[str, list[str]]]:
        return [(str(row), list(self.features[row])) for row in rows.tolist()]

    def later(self) -> IntArray:
        return np.setdiff1d(np.arange(len(self.features)), self.live)


@dataclass(frozen=True)
class HostSpec:
    config: SimConfig
    broker: BrokerAddress
    n_items: int
    shards: int
    heartbeat: float
    folder: Path  # node folders go under it
    seats: list[SeatSpec]
    hostile: dict[int, Attack] = field(default_factory=dict)  # compromised seats and their attack
    curious: frozenset[int] = frozenset()  # honest-but-curious seats (sim/curious.py)
    items: SimItems | None = None  # without: rows only, no features, every row a negative


@dataclass(frozen=True)
class SeatStats:
    bytes_out: int  # sent by every incarnation of the seat's node
    merges: int
    dropped: int  # model messages the lossy transport threw away
    online: bool  # a node is running and holds its data
    version: int = 0  # its model version (what the learning-rate schedule reads)
    clipped: int = 0  # messages its defence cut, over every incarnation
    quarantines: int = 0  # peers it has quarantined (now, in this incarnation)
    epsilon: float = 0.0  # differential privacy its node has spent (0 without)
    broker: str = ""  # HOST:PORT its node is connected to (or last tried)
    failovers: int = 0  # times its node moved to another broker of the cluster
    last_outage: float = 0.0  # seconds its node was without a broker before its latest connect
    waited: int = 0  # gossip rounds its node skipped awaiting replies, over every incarnation
    late: int = 0  # replies that came more than a period after the request, likewise


@dataclass(frozen=True)
class HostStats:
    seats: dict[int, SeatStats]
    rejected: dict[str, int]  # by reason, over every incarnation of every node
    peak_rss_mb: float


@dataclass(frozen=True)
class Scores:
    """Each user's score for every item, by their own node's model: [users, n_items]."""

    users: IntArray
    matrix: np.ndarray


class Host(Protocol):
    """What the simulation asks of a host of nodes, in this process or another."""

    async def public_keys(self) -> dict[int, tuple[bytes, bytes]]: ...
    async def certify(self, certificates: dict[int, Certificate], network: str,
                      ca_public: bytes, crl: RevocationList) -> None: ...  # fmt: skip
    async def prepare(self, indices: list[int]) -> None: ...
    async def start(self, index: int) -> None: ...
    async def stop(self, index: int) -> None: ...
    async def pace(self, factor: float) -> None: ...
    async def add_items(self, entries: list[tuple[str, list[str]]]) -> None: ...
    async def scores(self, indices: list[int]) -> Scores: ...
    async def stats(self, indices: list[int] | None = None) -> HostStats: ...
    async def inferences(self) -> dict[int, dict[bytes, np.ndarray]]: ...
    async def close(self) -> None: ...


class Seat:
    """A seat's identity and data are fixed; the running Node is replaced when it restarts."""

    def __init__(self, spec: SeatSpec, folder: Path) -> None:
        self.spec = spec
        self.folder = folder
        self.keys = NodeKeys.generate()
        self.identity: Identity | None = None
        self.node: Node | None = None
        self.task: asyncio.Task[None] | None = None
        self.ingested = False
        self.bytes_before = 0  # sent by earlier incarnations
        self.merges_before = 0
        self.dropped_before = 0
        self.clipped_before = 0
        self.waited_before = 0
        self.late_before = 0

    def stats(self) -> SeatStats:
        node = self.node
        transport = node.gossip.transport if node else None
        lossy = transport if isinstance(transport, LossyTransport) else None
        status = node.gossip.status() if node else None
        return SeatStats(
            self.bytes_before + (transport.stats.bytes_out if transport else 0),
            self.merges_before + (status.merged if status else 0),
            self.dropped_before + (lossy.dropped if lossy else 0),
            node is not None and self.ingested and self.task is not None and not self.task.done(),
            status.version if status else 0,
            self.clipped_before + (status.clipped if status else 0),
            sum(p.quarantines for p in status.peers) if status else 0,
            node.privacy.epsilon if node and node.privacy else 0.0,
            transport.stats.broker if transport else "",
            transport.stats.failovers if transport else 0,
            transport.stats.last_outage if transport else 0.0,
            self.waited_before + (status.waited if status else 0),
            self.late_before + (status.late if status else 0),
        )


class NodeHost:
    """Runs the nodes of `spec.seats` on the running event loop."""

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.seats = {s.index: Seat(s, spec.folder / f"node{s.index:04d}") for s in spec.seats}
        self._pace = 1.0  # the requested periods are stretched by this (see sim/pacing.py)
        self._rejected: Counter[str] = Counter()  # of node incarnations that ended
        self._scorer = ThreadPoolExecutor(1, thread_name_prefix="sim-scores")

    async def public_keys(self) -> dict[int, tuple[bytes, bytes]]:
        """Signing and encryption public keys by seat, for the authority to certify."""
        return {i: (s.keys.signing_public, s.keys.encryption_public) for i, s in self.seats.items()}

    async def certify(self, certificates: dict[int, Certificate], network: str, ca_public: bytes,
                      crl: RevocationList) -> None:  # fmt: skip
        for index, certificate in certificates.items():
            seat = self.seats[index]
            seat.identity = Identity(seat.keys, certificate, TrustStore(network, ca_public, crl))

    async def prepare(self, indices: list[int]) -> None:
        """Nodes for these seats, each holding its users' interactions before any gossips."""
        for index in indices:
            await self._prepare(self.seats[index])

    async def start(self, index: int) -> None:
        seat = self.seats[index]
        seat.task = asyncio.create_task(self._serve(seat))

    async def stop(self, index: int) -> None:
        seat = self.seats[index]
        if seat.task is not None:
            seat.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await seat.task
            seat.task = None

    async def pace(self, factor: float) -> None:
        """Every node's periods, running or yet to start, at `factor` x the requested ones."""
        self._pace = factor
        gossip_period, train_period = self._periods()
        for seat in self.seats.values():
            if seat.node is not None:
                seat.node.set_periods(gossip_period, train_period)

    async def add_items(self, entries: list[tuple[str, list[str]]]) -> None:
        """New catalogue entries (row, features) for every running node, through the daemon's
        own path (stored, then placed by their features)."""
        for seat in self.seats.values():
            if seat.node is not None and seat.ingested:
                await seat.node.add_items(entries)

    async def scores(self, indices: list[int]) -> Scores:
        """Every user of these seats' running nodes, scored on every item (off the loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._scorer, self._scores, indices)

    async def stats(self, indices: list[int] | None = None) -> HostStats:
        for seat in self.seats.values():  # a node that crashed fails the run, as in a TaskGroup
            if seat.task is not None and seat.task.done() and not seat.task.cancelled():
                seat.task.result()
        wanted = self.seats if indices is None else indices
        rejected = Counter(self._rejected)
        for seat in self.seats.values():
            if seat.node is not None:
                rejected.update(seat.node.gossip.rejected())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return HostStats({i: self.seats[i].stats() for i in wanted}, dict(rejected), peak)

    async def inferences(self) -> dict[int, dict[bytes, np.ndarray]]:
        """What each curious seat's running node inferred: per sender, a score per item."""
        found = {}
        for index in self.spec.curious & set(self.seats):
            node = self.seats[index].node
            if node is not None and isinstance(node.gossip.protocol, CuriousProtocol):
                found[index] = dict(node.gossip.protocol.inference.scores)
        return found

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(index) for index in self.seats))
        self._scorer.shutdown()

    # -- one node --------------------------------------------------------------------------------

    def _scores(self, indices: list[int]) -> Scores:
        users, rows = [], []
        everything = np.arange(self.spec.n_items)
        for index in indices:
            seat = self.seats[index]
            node = seat.node
            if node is None or not seat.ingested:
                continue
            candidates = np.tile(everything, (len(seat.spec.users), 1))
            with node.lock:
                rows.append(node.model.score(seat.spec.users, candidates))
            users.append(seat.spec.users)
        if not rows:
            return Scores(np.zeros(0, dtype=np.int64), np.zeros((0, self.spec.n_items), np.float32))
        return Scores(np.concatenate(users), np.concatenate(rows))

    def _periods(self) -> tuple[float, float]:
        template = self.spec.config.node
        return template.gossip.period * self._pace, template.train.period * self._pace

    def _node_config(self, seat: Seat) -> NodeConfig:
        """The run's template with this seat's folder, the broker and the run's timings."""
        spec, run = self.spec, self.spec.config
        gossip_period, train_period = self._periods()
        heartbeat = spec.heartbeat
        return run.node.changed({
            "node.data_dir": seat.folder,
            "node.checkpoint_period": max(30.0, run.duration / 4),
            "broker.urls": ",".join(f"mqtt://{host}:{port}"
                                    for host, port in spec.broker.endpoints_for(seat.spec.index)),
            "broker.protocol": spec.broker.protocol,
            "gossip.period": gossip_period, "gossip.heartbeat": heartbeat,
            "gossip.suspect_after": 2.5 * heartbeat, "gossip.dead_after": 4 * heartbeat,
            "gossip.presence_shards": spec.shards,
            "model.n_items": spec.n_items, "model.seed": run.seed,
            "train.period": train_period,
        })  # fmt: skip

    def _transport(self, seat: Seat, identity: Identity) -> Transport:
        broker, shards, index = self.spec.broker, self.spec.shards, seat.spec.index
        (host, port), *others = broker.endpoints_for(index)
        mqtt = MqttConfig(host=host, port=port, fallbacks=tuple(others), protocol=broker.protocol,
                          keepalive=30, timeout=30.0, backoff_initial=0.5, backoff_max=5.0,
                          queue_size=128)  # fmt: skip
        inner = MqttTransport(mqtt, identity.node_id.hex(), subscriptions(identity, shards),
                              last_will(identity, shards), seed=index)  # fmt: skip
        drop, seed = self.spec.config.drop, self.spec.config.seed
        return LossyTransport(inner, drop, seed=seed + index) if drop else inner

    async def _prepare(self, seat: Seat) -> None:
        """A Node on a fresh transport; on first use it ingests its users' interactions."""
        assert seat.identity is not None, "certify the seats before starting their nodes"
        transport = self._transport(seat, seat.identity)
        attack = self.spec.hostile.get(seat.spec.index)
        make: Callable[..., GossipProtocol] = GossipProtocol
        if attack:
            make = functools.partial(HostileProtocol, attack=attack)
        elif seat.spec.index in self.spec.curious:
            make = CuriousProtocol
        seat.node = Node(self._node_config(seat), seat.identity, transport, make_protocol=make)
        items = self.spec.items
        if items is not None:  # kept by the node's store across restarts; the pool is not
            seat.node.model.negative_pool = items.live
        if not seat.ingested:
            if items is not None:
                await seat.node.add_items(items.entries(items.live))
            await seat.node.ingest(*seat.spec.pairs)
            seat.ingested = True

    async def _serve(self, seat: Seat) -> None:
        if seat.node is None:
            await self._prepare(seat)
        node = seat.node
        assert node is not None
        transport = node.gossip.transport
        async with transport:
            try:
                await node.run()
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.gossip.leave(), 2.0)
                seat.bytes_before += transport.stats.bytes_out
                status = node.gossip.status()
                seat.merges_before += status.merged
                seat.clipped_before += status.clipped
                seat.waited_before += status.waited
                seat.late_before += status.late
                if isinstance(transport, LossyTransport):
                    seat.dropped_before += transport.dropped
                self._rejected.update(node.gossip.rejected())
                seat.node = None
                node.close()
