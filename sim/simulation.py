"""`gossiprec sim`: N real nodes, each with its own MQTT connection, in one or a few processes.

Every node is the daemon's Node class with its own keys, certificate, SQLite store, checkpoints
and MQTT client (sim/host.py); they share this process, or, with `workers` > 1, are dealt over it
and child processes (sim/workers.py). Users are partitioned over nodes (sim/partition.py);
each node ingests its users' train + validation interactions through `Node.ingest` and never sees
anyone else's. Quality is each node's own model scored on its own users' held-out test items.
Faults: churn (nodes leave and come back from their checkpoint), message loss, late joiners.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gossiprec.crypto.authority import Authority
from gossiprec.gossip.topics import MAX_SHARDS
from gossiprec.node.types import IntArray
from gossiprec.sim.attacks import Attack, hostile_seats, promotion_targets
from gossiprec.sim.baselines import train_and_valid_pairs
from gossiprec.sim.broker import BrokerAddress
from gossiprec.sim.config import SimConfig
from gossiprec.sim.curious import item_set_auc
from gossiprec.sim.host import Host, HostSpec, NodeHost, SeatSpec, SeatStats, SimItems
from gossiprec.sim.metrics import (
    Metrics,
    Scorer,
    evaluate,
    exposure,
    hit_rate,
    ndcg,
    sampled_ranks,
)
from gossiprec.sim.pacing import Pacer
from gossiprec.sim.split import LeaveOneOut
from gossiprec.sim.workers import WorkerHost

# Peers a node should see through sharded presence, about. Every beacon is delivered to and
# verified by this many nodes: in a 943-node run beacons outnumbered model updates ten to one.
TARGET_VIEW = 32
MANY_NODES = 200  # from here on the nodes are dealt over one process per core


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
    exposure: float = 0.0  # ER@10 of the promotion targets among honest users
    version: float = 0.0  # median model version of the honest nodes online


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
    rounds_waited: int = 0  # gossip rounds skipped while requests awaited replies
    late_replies: int = 0  # replies that came more than a period after their request
    rejected: dict[str, int] = field(default_factory=dict)
    final: Metrics | None = None
    hostile: list[int] = field(default_factory=list)  # the compromised nodes' seats
    targets: list[int] = field(default_factory=list)  # items a promotion attack pushes
    final_exposure: float = 0.0  # ER@10 of `targets` among honest users at the end
    # Every evaluated user's final test rank (-1: not evaluated), so quality can be read off for
    # any group of users afterwards (a run without attackers, on another run's honest users).
    final_ranks: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    final_scores: Scorer | None = None  # every user by their own node's final model
    clipped: int = 0  # messages the honest nodes' defence cut
    quarantines: int = 0  # quarantines honest nodes imposed (running nodes, at the end)
    # The curious nodes' guesses of which items each honest sender's users touched (curious.py):
    # mean AUC and precision@10 over the senders they heard from twice or more.
    inference_auc: float | None = None
    inference_precision10: float | None = None
    inference_senders: int = 0
    epsilon: float = 0.0  # the most differential privacy an honest node spent (0: off)
    brokers: dict[str, int] = field(default_factory=dict)  # running nodes per broker, at the end
    # Seconds without a broker before reconnecting elsewhere, one per node that failed over.
    failover_seconds: list[float] = field(default_factory=list)


def default_workers(nodes: int) -> int:
    """One process per core once there are enough nodes to keep each busy: a process gets about
    one core out of the GIL (943 nodes in one used 1.2 of 2); a few dozen fit in one."""
    return 1 if nodes < MANY_NODES else max(1, min(os.cpu_count() or 1, 4))


def presence_shards(nodes: int, view: float = TARGET_VIEW, most: int = MAX_SHARDS) -> int:
    """Fewest shards (at most `most`) that keep a node's view near `view` peers (1 for small
    networks)."""
    shards = 1
    while shards < most and nodes * (math.log2(shards) + 1) / shards > view:
        shards *= 2
    return shards


@dataclass
class Slot:
    """The simulation's record of one node's seat; the node itself runs in `host`."""

    index: int
    users: IntArray
    host: Host
    online: bool = False  # started and not stopped
    joined_at: float | None = None
    down_until: float = 0.0


class Simulation:
    def __init__(self, split: LeaveOneOut, groups: list[IntArray], config: SimConfig,
                 broker: BrokerAddress, folder: Path,
                 on_tick: Callable[[float, Point | None], None] | None = None,
                 items: SimItems | None = None) -> None:  # fmt: skip
        self.split = split
        self._items = items
        self.config = config
        self.shards = presence_shards(len(groups))
        self._on_tick = on_tick or (lambda _t, _p: None)
        self._rng = random.Random(config.seed)
        self._folder = folder
        # Crashes are seen at once through last wills; the heartbeat only refreshes liveness, and
        # with hundreds of nodes in one process its beacons crowd out model updates.
        heartbeat = 5.0 if len(groups) <= 64 else 30.0 if len(groups) <= 256 else 120.0
        users_all, items_all = train_and_valid_pairs(split)
        times_all = np.arange(len(users_all), dtype=np.int64)
        seats = []
        for index, users in enumerate(groups):
            mine = np.isin(users_all, users)
            pairs = (users_all[mine], items_all[mine], times_all[mine])
            seats.append(SeatSpec(index, users, pairs))
        # Seats dealt round-robin, so late joiners and churn fall on every host alike.
        workers = max(1, min(config.workers, len(seats)))
        # Promotion targets are drawn in every run, so a run without attackers measures their
        # exposure too; attackers are drawn with their own generator (the rest stays as it was).
        targets = promotion_targets(split.train_items, split.n_items, config.targets, config.seed)
        hostile = {}
        if config.attack:
            seated = hostile_seats(len(seats), config.attackers, config.seed)
            hostile = dict.fromkeys(seated, Attack(config.attack, tuple(targets)))
        # Curious nodes are honest ones, drawn with their own generator too.
        honest_seats = [s.index for s in seats if s.index not in hostile]
        curious = frozenset(random.Random(config.seed + 2).sample(
            honest_seats, min(config.curious, len(honest_seats))))  # fmt: skip
        specs = [HostSpec(config, broker, split.n_items, self.shards, heartbeat, folder,
                          seats[w::workers], {i: a for i, a in hostile.items() if i % workers == w},
                          curious, items)
                 for w in range(workers)]  # fmt: skip
        self.hosts: list[Host] = [NodeHost(specs[0])] + [WorkerHost(s) for s in specs[1:]]
        self.slots = [Slot(s.index, s.users, self.hosts[s.index % workers]) for s in seats]
        late = self._rng.sample(range(len(self.slots)), min(config.late_joiners, len(self.slots)))
        self.late = [self.slots[i] for i in sorted(late)]
        self.run = SimRun(nodes=len(self.slots), shards=self.shards,
                          late_users=[int(u) for s in self.late for u in s.users],
                          hostile=sorted(hostile), targets=targets)  # fmt: skip
        # Quality is the honest nodes' only: a compromised node's users are not served.
        self.honest = [s for s in self.slots if s.index not in hostile]
        self._late_honest = [s for s in self.late if s in self.honest]
        self._targets = np.asarray(targets, dtype=np.int64)
        self._network_hr10 = 0.0  # HR@10 of the nodes that started at once, at the last evaluation
        self.pacer = Pacer()
        self._touched = {s.index: np.unique(s.pairs[1]) for s in seats}  # items each seat's users
        self._node_ids: dict[bytes, int] = {}  # seat by node id

    async def _certify(self) -> None:
        """Every host's nodes get a certificate from one authority (the keys stay in the host)."""
        authority = Authority.create(self._folder / "ca", "sim")
        now = int(time.time())
        crl = authority.revocation_list()
        for host in self.hosts:
            certificates = {
                index: authority.issue(signing, encryption, now - 60, now + 86_400)
                for index, (signing, encryption) in (await host.public_keys()).items()
            }
            self._node_ids.update({c.node_id: index for index, c in certificates.items()})
            await host.certify(certificates, authority.network, authority.public, crl)

    def _by_host(self, slots: list[Slot]) -> list[tuple[Host, list[int]]]:
        return [(h, [s.index for s in slots if s.host is h]) for h in self.hosts]

    async def _stats(self, slots: list[Slot] | None = None) -> dict[int, SeatStats]:
        wanted = self._by_host(slots if slots is not None else self.slots)
        parts = await asyncio.gather(*(host.stats(indices) for host, indices in wanted))
        return {index: seat for part in parts for index, seat in part.seats.items()}

    async def execute(self) -> SimRun:
        started = time.monotonic()
        try:
            await self._certify()
            await self._gossip()
            totals = await asyncio.gather(*(host.stats() for host in self.hosts))
        finally:
            await asyncio.gather(*(host.close() for host in self.hosts), return_exceptions=True)
        for total in totals:
            for reason, count in total.rejected.items():
                self.run.rejected[reason] = self.run.rejected.get(reason, 0) + count
        self.run.wall_seconds = time.monotonic() - started
        # Every process's own peak, summed: an upper bound on the run's peak.
        self.run.peak_rss_mb = sum(total.peak_rss_mb for total in totals)
        seats = [seat for total in totals for seat in total.seats.values()]
        self.run.dropped_messages = sum(seat.dropped for seat in seats)
        self.run.pace_highest = self.pacer.highest
        self.run.rounds_waited = sum(seat.waited for seat in seats)
        self.run.late_replies = sum(seat.late for seat in seats)
        return self.run

    async def _gossip(self) -> None:
        late = {s.index for s in self.late}
        starting = [s for s in self.slots if s.index not in late]
        # Every node holds its data before any gossips.
        await asyncio.gather(*(host.prepare(indices) for host, indices in self._by_host(starting)))
        for slot in starting:
            await self._start(slot, 0.0)
        begin = time.monotonic()
        next_eval = 0.0
        while (now := time.monotonic() - begin) < self.config.duration:
            point = None
            if now >= next_eval:
                point = await self._evaluate(now)
                self.run.points.append(point)
                next_eval += self.config.eval_every
            await self._faults(now, late)
            if self.late and self.late[0].joined_at is not None:
                await self._evaluate_late(now)
            await self._pace(now)
            self._on_tick(now, point)
            await asyncio.sleep(1.0)
        for slot in self.slots:  # churn ends: those away come back (from their checkpoints)
            if not slot.online:
                await self._start(slot, time.monotonic() - begin)
        self.run.points.append(await self._evaluate(time.monotonic() - begin))
        if self._items is not None:  # the items the run never trained on arrive now
            entries = self._items.entries(self._items.later())
            await asyncio.gather(*(host.add_items(entries) for host in self.hosts))
        everyone = np.concatenate([s.users for s in self.slots])
        scores = self.run.final_scores = await self._scores(self.slots)
        ranked = everyone[self.split.test_item[everyone] >= 0]
        self.run.final_ranks = np.full(self.split.n_users, -1, dtype=np.int64)
        self.run.final_ranks[ranked] = sampled_ranks(self.split, scores, ranked)
        users = np.concatenate([s.users for s in self.honest])
        self.run.final = evaluate(self.split, scores, users)
        self.run.final_exposure = exposure(self.split, scores, users, self._targets)
        stats = await self._stats(self.honest)
        self.run.clipped = sum(seat.clipped for seat in stats.values())
        self.run.quarantines = sum(seat.quarantines for seat in stats.values())
        self.run.epsilon = max((seat.epsilon for seat in stats.values()), default=0.0)
        self.run.brokers = dict(Counter(s.broker for s in stats.values() if s.online))
        self.run.failover_seconds = [s.last_outage for s in stats.values() if s.failovers]
        await self._judge_inference()

    async def _judge_inference(self) -> None:
        """How well the curious nodes told each honest sender's items from the rest."""
        honest = {s.index for s in self.honest}
        aucs, precisions = [], []
        for found in await asyncio.gather(*(host.inferences() for host in self.hosts)):
            for scores in found.values():
                for sender, score in scores.items():
                    seat = self._node_ids.get(sender)
                    if seat in honest and score.any():
                        auc, precision = item_set_auc(score, self._touched[seat])
                        aucs.append(auc)
                        precisions.append(precision)
        if aucs:
            self.run.inference_auc = float(np.nanmean(aucs))
            self.run.inference_precision10 = float(np.nanmean(precisions))
            self.run.inference_senders = len(aucs)

    async def _start(self, slot: Slot, now: float) -> None:
        await slot.host.start(slot.index)
        slot.online = True
        if slot.joined_at is None:
            slot.joined_at = now

    async def _stop(self, slot: Slot) -> None:
        await slot.host.stop(slot.index)
        slot.online = False

    async def _pace(self, now: float) -> None:
        if now < self.pacer.due:  # gathering every node's counts is not free: only when due
            return
        totals = await asyncio.gather(*(host.stats() for host in self.hosts))
        shed = sum(total.rejected.get("inbox:overflow", 0) for total in totals)
        seats = [seat for total in totals for seat in total.seats.values()]
        merged, late = sum(seat.merges for seat in seats), sum(seat.late for seat in seats)
        if self.pacer.update(now, shed + late, merged):
            await asyncio.gather(*(host.pace(self.pacer.factor) for host in self.hosts))

    async def _faults(self, now: float, late: set[int]) -> None:
        join_at = self.config.late_join_at * self.config.duration
        for slot in self.slots:
            if slot.index in late and slot.joined_at is None:
                if now >= join_at:
                    await self._start(slot, now)
                continue
            if slot.online and self.config.churn and self._rng.random() < self.config.churn / 60:
                await self._stop(slot)
                slot.down_until = now + self.config.downtime
            elif not slot.online and now >= slot.down_until:
                await self._start(slot, now)
                self.run.restarts += 1

    async def _scores(self, slots: list[Slot]) -> Scorer:
        """A Scorer over these slots' users, each scored by their own node's model. A user whose
        node is not running scores NaN, which the metrics count as a miss."""
        parts = await asyncio.gather(*(h.scores(i) for h, i in self._by_host(slots) if i))
        users = np.concatenate([np.zeros(0, dtype=np.int64)] + [p.users for p in parts])
        row_of = np.zeros(self.split.n_users, dtype=np.int64)  # a user's row in `matrix`
        row_of[users] = 1 + np.arange(len(users))
        no_node = np.full((1, self.split.n_items), np.nan, dtype=np.float32)  # row 0
        matrix = np.concatenate([no_node] + [p.matrix for p in parts])

        def score(users: IntArray, candidates: IntArray) -> np.ndarray:
            return np.asarray(matrix[row_of[np.asarray(users)][:, None], candidates])

        return score

    async def _ranks(self, slots: list[Slot], online: dict[int, SeatStats],
                     targets: IntArray | None = None) -> tuple[IntArray, float]:  # fmt: skip
        """Test ranks of every user of these slots' running nodes, and the ER@10 of `targets`
        among them (scored once for both)."""
        running = [s for s in slots if online[s.index].online]
        if not running:
            return np.zeros(0, dtype=np.int64), 0.0
        score = await self._scores(running)
        users = np.concatenate([s.users for s in running])
        exposed = 0.0 if targets is None else exposure(self.split, score, users, targets)
        return sampled_ranks(self.split, score, users), exposed

    async def _evaluate(self, now: float) -> Point:
        stats = await self._stats()
        network = [s for s in self.honest if s not in self.late]
        network_ranks, exposed = await self._ranks(network, stats, self._targets)
        self._network_hr10 = hit_rate(network_ranks, 10)
        late_ranks, _ = await self._ranks(self._late_honest, stats)
        ranks = np.concatenate([network_ranks, late_ranks])
        online = [seat for seat in stats.values() if seat.online]
        versions = [stats[s.index].version for s in network if stats[s.index].online]
        return Point(now, sum(seat.bytes_out for seat in stats.values()) / 1e6,
                     hit_rate(ranks, 10), ndcg(ranks, 10), len(online),
                     float(np.mean([s.merges for s in online])) if online else 0.0,
                     self.pacer.factor, exposed,
                     float(np.median(versions)) if versions else 0.0)  # fmt: skip

    async def _evaluate_late(self, now: float) -> None:
        started = [s for s in self._late_honest if s.joined_at is not None]
        stats = await self._stats(started)
        joined = [s for s in started if stats[s.index].online]
        if not joined:
            return
        late_ranks, _ = await self._ranks(joined, stats)
        joined_at = max(s.joined_at or 0.0 for s in joined)
        merges = float(np.mean([stats[s.index].merges for s in joined]))
        self.run.late.append(LateJoin(now - joined_at, merges, hit_rate(late_ranks, 10),
                                      self._network_hr10))  # fmt: skip


async def simulate(
    split: LeaveOneOut,
    groups: list[IntArray],
    config: SimConfig,
    broker: BrokerAddress,
    folder: Path | None = None,
    on_tick: Callable[[float, Point | None], None] | None = None,
    items: SimItems | None = None,
) -> SimRun:
    with tempfile.TemporaryDirectory(prefix="gossiprec-sim-") as tmp, one_torch_thread():
        simulation = Simulation(split, groups, config, broker, folder or Path(tmp), on_tick, items)
        return await simulation.execute()


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Every node's step is a small op, and many run at once on the executor's threads: torch's
    intra-op threads would only contend with each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
