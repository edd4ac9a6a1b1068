"""`gossiprec sim`: N real nodes in one process, each with its own MQTT connection.

Every node is the daemon's Node class with its own keys, certificate, SQLite store, checkpoints
and MQTT client; only the process is shared. Users are partitioned over nodes (sim/partition.py);
each node ingests its users' train + validation interactions through `Node.ingest` and never sees
anyone else's. Quality is each node's own model scored on its own users' held-out test items.
Faults: churn (nodes leave and come back from their checkpoint), message loss, late joiners.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import resource
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from crypto.authority import Authority
from crypto.keys import NodeKeys
from gossip.driver import Identity, last_will, subscriptions
from gossip.mqtt import MqttConfig, MqttTransport
from gossip.transport import Transport
from node.config import NodeConfig, config_for
from node.node import Node
from sim.baselines import train_and_valid_pairs
from sim.broker import BrokerAddress
from sim.dataset import IntArray
from sim.faults import LossyTransport
from sim.metrics import Metrics, evaluate, hit_rate, ndcg, sampled_ranks
from sim.pacing import Pacer
from sim.split import LeaveOneOut

log = logging.getLogger(__name__)

T = TypeVar("T")
# Peers a node should see through sharded presence, about. Every beacon is delivered to and
# verified by this many nodes: in a 943-node run beacons outnumbered model updates ten to one.
TARGET_VIEW = 32


@dataclass(frozen=True)
class SimConfig:
    duration: float = 120.0  # seconds of gossip after every starting node is up
    period: float = 2.0  # seconds between a node's gossip rounds
    fanout: int = 1
    codec: str = "float16"
    epochs: int = 2  # local epochs per training round
    train_period: float = 0.0  # seconds between training rounds (0: the gossip period)
    lr: float = 160.0
    user_lr: float = 0.03
    l2: float = 0.01
    lr_half_life: float = 0.0  # model versions after which the item lr halves (0: constant)
    clip: float = 0.05
    optimizer: str = "sgd"
    seed: int = 0
    churn: float = 0.0  # chance per node per minute of leaving for `downtime` seconds
    downtime: float = 10.0
    drop: float = 0.0  # share of model messages lost
    late_joiners: int = 0  # nodes that start only at `late_join_at` x duration
    late_join_at: float = 0.5
    eval_every: float = 5.0

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.period <= 0 or self.eval_every <= 0 or self.train_period < 0:
            raise ValueError("duration, period and eval_every must be > 0, train_period >= 0")
        if not 0 <= self.churn < 60 or not 0 <= self.drop < 1 or self.late_joiners < 0:
            raise ValueError("need churn in [0, 60), drop in [0, 1) and late_joiners >= 0")
        if not 0 < self.late_join_at < 1:
            raise ValueError("late_join_at must lie in (0, 1)")


@dataclass
class Point:
    """One evaluation during the run."""

    seconds: float
    megabytes: float  # sent by all nodes so far (sealed payloads, both directions counted once)
    hr10: float
    ndcg10: float
    online: int
    merges_per_node: float
    pace: float = 1.0  # the periods in effect, as a multiple of the requested ones


@dataclass
class LateJoin:
    """The late joiners' own quality against the network's, after they joined."""

    seconds_after_join: float
    merges_per_late_node: float
    late_hr10: float
    network_hr10: float  # the nodes that started at once (at the latest evaluation)


@dataclass
class SimRun:
    points: list[Point] = field(default_factory=list)
    late: list[LateJoin] = field(default_factory=list)
    late_users: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    nodes: int = 0
    shards: int = 1
    restarts: int = 0
    dropped_messages: int = 0
    pace_highest: float = 1.0  # the most the periods were stretched (see sim/pacing.py)
    rejected: dict[str, int] = field(default_factory=dict)
    final: Metrics | None = None


def presence_shards(nodes: int) -> int:
    """Fewest shards that keep a node's view near TARGET_VIEW peers (1 for small networks)."""
    shards = 1
    while shards < 256 and nodes * (math.log2(shards) + 1) / shards > TARGET_VIEW:
        shards *= 2
    return shards


class Slot:
    """One node's seat in the simulation: identity and data fixed, the running Node replaceable."""

    def __init__(self, index: int, identity: Identity, folder: Path, users: IntArray,
                 pairs: tuple[IntArray, IntArray, IntArray]) -> None:  # fmt: skip
        self.index = index
        self.identity = identity
        self.folder = folder
        self.users = users
        self.pairs = pairs
        self.node: Node | None = None
        self.task: asyncio.Task[None] | None = None
        self.joined_at: float | None = None
        self.down_until = 0.0
        self.bytes_before = 0  # sent by earlier incarnations
        self.merges_before = 0
        self.dropped_before = 0
        self.ingested = False

    @property
    def online(self) -> bool:
        return self.task is not None and not self.task.done()

    def bytes_out(self) -> int:
        now = self.node.gossip.transport.stats.bytes_out if self.node else 0
        return self.bytes_before + now

    def merges(self) -> int:
        return self.merges_before + (self.node.gossip.protocol.stats.merged if self.node else 0)


class Simulation:
    def __init__(self, split: LeaveOneOut, groups: list[IntArray], config: SimConfig,
                 broker: BrokerAddress, folder: Path,
                 on_tick: Callable[[float, Point | None], None] | None = None) -> None:  # fmt: skip
        self.split = split
        self.config = config
        self.broker = broker
        self.shards = presence_shards(len(groups))
        # Crashes are seen at once through last wills; the heartbeat only refreshes liveness, and
        # with hundreds of nodes in one process its beacons crowd out model updates.
        self.heartbeat = 5.0 if len(groups) <= 64 else 30.0 if len(groups) <= 256 else 120.0
        self._on_tick = on_tick or (lambda _t, _p: None)
        self._rng = random.Random(config.seed)
        authority = Authority.create(folder / "ca", "sim")
        now = int(time.time())
        users_all, items_all = train_and_valid_pairs(split)
        times_all = np.arange(len(users_all), dtype=np.int64)
        self.slots = []
        for index, users in enumerate(groups):
            keys = NodeKeys.generate()
            cert = authority.issue(keys.signing_public, keys.encryption_public, now - 60,
                                   now + 86_400)  # fmt: skip
            mine = np.isin(users_all, users)
            pairs = (users_all[mine], items_all[mine], times_all[mine])
            self.slots.append(Slot(index, Identity(keys, cert, authority.trust_store()),
                                   folder / f"node{index:04d}", users, pairs))  # fmt: skip
        late = self._rng.sample(range(len(self.slots)), min(config.late_joiners, len(self.slots)))
        self.late = [self.slots[i] for i in sorted(late)]
        self.run = SimRun(nodes=len(self.slots), shards=self.shards,
                          late_users=[int(u) for s in self.late for u in s.users])  # fmt: skip
        self._network_hr10 = 0.0  # HR@10 of the nodes that started at once, at the last evaluation
        self.pacer = Pacer()
        self._evaluator = ThreadPoolExecutor(1, thread_name_prefix="sim-evaluation")

    def _periods(self) -> tuple[float, float]:
        """Gossip and training periods in effect: the requested ones, stretched by the pacer."""
        c, pace = self.config, self.pacer.factor
        return c.period * pace, (c.train_period or c.period) * pace

    def _node_config(self, slot: Slot) -> NodeConfig:
        c, (gossip_period, train_period) = self.config, self._periods()
        return config_for(
            slot.folder, self.split.n_items, broker_url=f"mqtt://{self.broker.host}:{self.broker.port}",
            broker_protocol=self.broker.protocol,
            gossip_codec=c.codec, gossip_period=gossip_period, gossip_fanout=c.fanout,
            gossip_heartbeat=self.heartbeat, gossip_suspect_after=2.5 * self.heartbeat,
            gossip_dead_after=4 * self.heartbeat, gossip_presence_shards=self.shards,
            model_seed=c.seed, model_lr=c.lr, model_user_lr=c.user_lr, model_l2=c.l2,
            model_clip=c.clip, model_optimizer=c.optimizer, model_lr_half_life=c.lr_half_life,
            train_epochs=c.epochs, train_period=train_period,
            node_checkpoint_period=max(30.0, c.duration / 4),
        )  # fmt: skip

    def _transport(self, slot: Slot) -> Transport:
        broker = self.broker
        mqtt = MqttConfig(host=broker.host, port=broker.port, protocol=broker.protocol,
                          keepalive=30, timeout=30.0, backoff_initial=0.5, backoff_max=5.0,
                          queue_size=128)  # fmt: skip
        identity = slot.identity
        inner = MqttTransport(mqtt, identity.node_id.hex(), subscriptions(identity, self.shards),
                              last_will(identity, self.shards), seed=slot.index)  # fmt: skip
        if self.config.drop:
            return LossyTransport(inner, self.config.drop, seed=self.config.seed + slot.index)
        return inner

    async def prepare(self, slot: Slot) -> None:
        """A Node on a fresh transport; on first use it ingests its users' interactions."""
        transport = self._transport(slot)
        slot.node = Node(self._node_config(slot), slot.identity, transport)
        if not slot.ingested:
            await slot.node.ingest(*slot.pairs)
            slot.ingested = True

    async def _serve(self, slot: Slot) -> None:
        if slot.node is None:
            await self.prepare(slot)
        node = slot.node
        assert node is not None
        transport = node.gossip.transport
        async with transport:
            try:
                await node.run()
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.gossip.leave(), 2.0)
                slot.bytes_before += transport.stats.bytes_out
                slot.merges_before += node.gossip.protocol.stats.merged
                if isinstance(transport, LossyTransport):
                    slot.dropped_before += transport.dropped
                for reason, count in node.gossip.rejected().items():
                    self.run.rejected[reason] = self.run.rejected.get(reason, 0) + count
                slot.node = None
                node.close()

    def _start(self, group: asyncio.TaskGroup, slot: Slot, now: float) -> None:
        slot.task = group.create_task(self._serve(slot))
        if slot.joined_at is None:
            slot.joined_at = now

    async def _stop(self, slot: Slot) -> None:
        if slot.task is not None:
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot.task
            slot.task = None

    async def execute(self) -> SimRun:
        started = time.monotonic()
        late = {s.index for s in self.late}
        starting = [s for s in self.slots if s.index not in late]
        for slot in starting:  # every node holds its data before any gossips
            await self.prepare(slot)
        async with asyncio.TaskGroup() as group:
            for slot in starting:
                self._start(group, slot, 0.0)
            begin = time.monotonic()
            next_eval = 0.0
            while (now := time.monotonic() - begin) < self.config.duration:
                point = None
                if now >= next_eval:
                    point = await self._evaluate(now)
                    self.run.points.append(point)
                    next_eval += self.config.eval_every
                await self._faults(group, now, late)
                if self.late and self.late[0].joined_at is not None:
                    await self._evaluate_late(now)
                self._pace(now)
                self._on_tick(now, point)
                await asyncio.sleep(1.0)
            for slot in self.slots:  # churn ends: those away come back (from their checkpoints)
                if not slot.online:
                    await self.prepare(slot)
                    self._start(group, slot, time.monotonic() - begin)
            self.run.points.append(await self._evaluate(time.monotonic() - begin))
            users = np.concatenate([s.users for s in self.slots])
            self.run.final = await self._off_loop(evaluate, self.split, self._score_all(), users)
            await asyncio.gather(*(self._stop(slot) for slot in self.slots))
        self._evaluator.shutdown()
        self.run.wall_seconds = time.monotonic() - started
        self.run.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.run.dropped_messages = sum(s.dropped_before for s in self.slots)
        self.run.pace_highest = self.pacer.highest
        return self.run

    def _pace(self, now: float) -> None:
        if now < self.pacer.due:  # counting every node's shed updates is not free: only when due
            return
        live = [s.node for s in self.slots if s.node is not None]
        shed = self.run.rejected.get("inbox:overflow", 0) + sum(
            n.gossip.rejected().get("inbox:overflow", 0) for n in live
        )
        if not self.pacer.update(now, shed, sum(s.merges() for s in self.slots)):
            return
        gossip_period, train_period = self._periods()
        for node in live:
            protocol = node.gossip.protocol
            protocol.config = replace(protocol.config, period=gossip_period)
            node.config = replace(node.config, train_period=train_period)

    async def _faults(self, group: asyncio.TaskGroup, now: float, late: set[int]) -> None:
        join_at = self.config.late_join_at * self.config.duration
        for slot in self.slots:
            if slot.index in late and slot.joined_at is None:
                if now >= join_at:
                    self._start(group, slot, now)
                continue
            if slot.online and self.config.churn and self._rng.random() < self.config.churn / 60:
                await self._stop(slot)
                slot.down_until = now + self.config.downtime
            elif not slot.online and now >= slot.down_until:
                self._start(group, slot, now)
                self.run.restarts += 1

    async def _evaluate(self, now: float) -> Point:
        online = [s for s in self.slots if s.node is not None and s.ingested]
        network = [s for s in online if s not in self.late]
        network_ranks = await self._off_loop(self._ranks, network)
        self._network_hr10 = hit_rate(network_ranks, 10)
        late_ranks = await self._off_loop(self._ranks, [s for s in online if s in self.late])
        ranks = np.concatenate([network_ranks, late_ranks])
        return Point(now, sum(s.bytes_out() for s in self.slots) / 1e6, hit_rate(ranks, 10),
                     ndcg(ranks, 10), len(online),
                     float(np.mean([s.merges() for s in online])) if online else 0.0,
                     self.pacer.factor)  # fmt: skip

    async def _evaluate_late(self, now: float) -> None:
        joined = [s for s in self.late if s.node is not None and s.ingested]
        if not joined:
            return
        late_ranks = await self._off_loop(self._ranks, joined)
        joined_at = max(s.joined_at or 0.0 for s in joined)
        self.run.late.append(LateJoin(now - joined_at, float(np.mean([s.merges() for s in joined])),
                                      hit_rate(late_ranks, 10), self._network_hr10))  # fmt: skip

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        """Evaluation on its own thread: the default executor is queued with the nodes' work."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._evaluator, functools.partial(function, *args))

    def _ranks(self, slots: list[Slot]) -> IntArray:
        """Test ranks of every user of these nodes, each scored by their own node's model."""
        parts = []
        for slot in slots:
            node = slot.node
            if node is None:
                continue
            with node.lock:
                parts.append(sampled_ranks(self.split, node.model.score, slot.users))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _score_all(self) -> Callable[[IntArray, IntArray], np.ndarray]:
        """A Scorer over every user, routed to the node that holds them (for the final metrics).
        A user whose node is offline scores NaN, which the metrics count as a miss."""
        owner = {int(u): slot for slot in self.slots for u in slot.users}

        def score(users: IntArray, candidates: IntArray) -> np.ndarray:
            out = np.full(candidates.shape, np.nan, dtype=np.float32)
            for row, user in enumerate(users):
                node = owner[int(user)].node
                if node is not None:
                    with node.lock:
                        out[row] = node.model.score(users[row : row + 1],
                                                    candidates[row : row + 1])[0]  # fmt: skip
            return out

        return score


async def simulate(
    split: LeaveOneOut,
    groups: list[IntArray],
    config: SimConfig,
    broker: BrokerAddress,
    folder: Path | None = None,
    on_tick: Callable[[float, Point | None], None] | None = None,
) -> SimRun:
    with tempfile.TemporaryDirectory(prefix="gossiprec-sim-") as tmp:
        simulation = Simulation(split, groups, config, broker, folder or Path(tmp), on_tick)
        return await simulation.execute()
