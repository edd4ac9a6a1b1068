"""The gossip protocol core: no sockets, no clocks, no randomness it was not given.

The driver calls `tick(now)` when `next_tick` is due and `receive(peer, update, now)` for each
decoded message; both return the messages to send. Every change of protocol state is here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import numpy as np

from gossiprec.gossip.adoption import Adoption
from gossiprec.gossip.averaging import difference, move, staleness_alpha
from gossiprec.gossip.clipping import Clipper
from gossiprec.gossip.codec import Codec, select_rows
from gossiprec.gossip.defence import DefenceConfig
from gossiprec.gossip.membership import Membership, MembershipConfig, PeerState
from gossiprec.gossip.messages import Arrays, Kind, ModelUpdate, Rows, Send
from gossiprec.gossip.reputation import Reputation

STRATEGIES = ("push-sum", "pairwise")
# A pairwise request awaits its reply this many periods, then is forgotten (a later reply is
# ignored, as a lost one). While `fanout` requests await theirs, a round sends no new one.
REPLY_WAIT_PERIODS = 3.0
MAX_VERSION_LEAD = 1_000
# A model this many versions along is a different model from the common starting one. A fresh
# node (version 0) meeting one adopts it instead of averaging: its own untouched model carries
# nothing, and averaging it in would set an established peer back halfway to the start.
ESTABLISHED = 100


@dataclass(frozen=True)
class GossipConfig:
    strategy: str = "pairwise"
    period: float = 1.0  # seconds between a node's gossip rounds, on average
    jitter: float = 0.2  # each wait is period * (1 +/- jitter), so nodes never synchronise
    fanout: int = 1
    staleness_half_life: float = 30.0
    codec: Codec = field(default_factory=Codec)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    # Bounds on what peers can do to this model (gossip/defence.py); None trusts every admitted
    # peer completely (the node turns it on by default).
    defence: DefenceConfig | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is unknown; choose {STRATEGIES}")
        if self.period <= 0 or not 0 <= self.jitter < 1 or self.fanout < 1:
            raise ValueError("need period > 0, 0 <= jitter < 1 and fanout >= 1")
        if self.strategy == "push-sum" and self.codec.sparse:
            raise ValueError("push-sum needs whole arrays; use a dense codec")


@dataclass
class ProtocolStats:
    rounds: int = 0
    sent: int = 0
    merged: int = 0
    ignored: int = 0  # wrong arrays, or a reply to no outstanding request
    clipped: int = 0  # merged messages the defence cut
    refused: int = 0  # messages of rate-limited or quarantined peers, not merged
    waited: int = 0  # rounds skipped while earlier requests awaited their replies
    late: int = 0  # replies that came more than a period after their request


@dataclass(frozen=True)
class PeerView:
    """One peer as this node's membership sees it."""

    node_id: bytes
    state: PeerState
    last_seen: float
    model_version: int  # as the peer claims it
    clipped: int = 0  # its messages the defence cut
    refused: int = 0  # its messages not merged (rate-limited or quarantined)
    strikes: float = 0.0
    quarantines: int = 0
    quarantined: bool = False


@dataclass(frozen=True)
class ProtocolStatus:
    """A copy of the protocol's state for callers to read."""

    version: int
    weight: float
    period: float
    rounds: int
    sent: int
    merged: int
    ignored: int
    peers: tuple[PeerView, ...]
    clipped: int = 0
    refused: int = 0
    waited: int = 0
    late: int = 0

    def alive(self) -> list[bytes]:
        return [p.node_id for p in self.peers if p.state is PeerState.ALIVE]

    def state_of(self, node_id: bytes) -> PeerState | None:
        """A peer's state, or None for a peer not in this node's view."""
        return next((p.state for p in self.peers if p.node_id == node_id), None)


class GossipProtocol:
    """Averages `params` (the caller's arrays, updated in place) with peers it hears of.

    `version` is where a restarted node's model was (its checkpoint); 0 for a fresh one.
    """

    def __init__(self, node_id: bytes, params: Arrays, config: GossipConfig,
                 rng: random.Random, now: float, *, version: int = 0) -> None:  # fmt: skip
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
        self.node_id = node_id
        self.params = params
        self._config = config
        self._weight = 1.0
        self._version = version
        self._membership = Membership(node_id, config.membership, rng)
        self._stats = ProtocolStats()
        self._rng = rng
        self._outstanding: dict[bytes, ModelUpdate] = {}  # pairwise requests awaiting a reply
        self._cursor = 0  # sparse codecs: next row of the round-robin refresh
        self._next_tick = now + self._wait()
        self._now = now
        defence = config.defence
        self._clipper = Clipper(defence) if defence else None
        self._reputation = Reputation(defence) if defence else None
        self._adoption: Adoption | None = None

    # -- what callers read -----------------------------------------------------------------------

    @property
    def config(self) -> GossipConfig:
        return self._config

    @property
    def version(self) -> int:
        return self._version

    @property
    def next_tick(self) -> float:
        return self._next_tick

    def status(self) -> ProtocolStatus:
        """A copy, safe to take beside a tick or merge in another thread (the peer table is
        copied in one step under the GIL before it is read)."""
        stats = self._stats
        peers = tuple(self._view(p.node_id, p.state, p.last_seen, p.model_version)
                      for p in tuple(self._membership.peers.values()))  # fmt: skip
        return ProtocolStatus(self._version, self._weight, self._config.period, stats.rounds,
                              stats.sent, stats.merged, stats.ignored, peers, stats.clipped,
                              stats.refused, stats.waited, stats.late)  # fmt: skip

    def radii(self) -> dict[str, tuple[float, float]]:
        """The defence's clip radii (per row, per array) for each array now; {} without it."""
        if self._clipper is None:
            return {}
        return {name: self._clipper.radii(name, array) for name, array in self.params.items()}

    def _view(self, peer: bytes, state: PeerState, last_seen: float, version: int) -> PeerView:
        reputation = self._reputation
        standing = reputation.known(peer) if reputation else None
        if reputation is None or standing is None:
            return PeerView(peer, state, last_seen, version)
        return PeerView(peer, state, last_seen, version, standing.clipped, standing.refused,
                        standing.strikes, standing.quarantines,
                        reputation.quarantined(peer, self._now))  # fmt: skip

    # -- what changes the state ------------------------------------------------------------------

    def peer_heard(self, peer: bytes, now: float, model_version: int = 0) -> None:
        """A verified beacon (or message) from `peer` at `now`."""
        self._membership.heard(peer, now, model_version)

    def peer_left(self, peer: bytes) -> None:
        """`peer` is gone (its last will, a clean leave, or revocation): dead at once, and no
        reply of its is awaited any longer."""
        self._membership.left(peer)
        self._outstanding.pop(peer, None)

    def set_period(self, period: float) -> None:
        """Gossip every `period` seconds from the next round on (a simulation's pacing)."""
        self._config = replace(self._config, period=period)

    def _wait(self) -> float:
        jitter = self._config.jitter
        return self._config.period * (1 + self._rng.uniform(-jitter, jitter))

    def tick(self, now: float) -> list[Send]:
        """One gossip round if it is due: push to `fanout` peers sampled uniformly."""
        self._membership.update(now)
        self._now = now
        if now < self._next_tick:
            return []
        self._next_tick = now + self._wait()
        reputation = self._reputation
        shunned = (lambda peer: reputation.quarantined(peer, now)) if reputation else None
        pairwise = self._config.strategy == "pairwise"
        if pairwise and self._awaiting(now) >= self._config.fanout:
            self._stats.waited += 1
            return []
        peers = self._membership.sample(self._config.fanout, shunned)
        if not peers:
            return []
        self._stats.rounds += 1
        if not pairwise:
            share = self._weight / (len(peers) + 1)
            self._weight = share
            kind = Kind.PUSH_SUM
        else:
            share, kind = self._weight, Kind.MERGE_REQUEST
        update = self._snapshot(kind, share, now)
        if kind is Kind.MERGE_REQUEST:
            for peer in peers:  # newest last, also for a peer asked again
                self._outstanding.pop(peer, None)
                self._outstanding[peer] = update
        self._stats.sent += len(peers)
        return [Send(peer, update) for peer in peers]

    def _awaiting(self, now: float) -> int:
        """Requests still awaiting a reply, after forgetting those older than the wait.

        A reply takes well under a period unless the peer died or is overloaded and shed the
        request; either way a new request would pile onto the same trouble (and hold one more
        copy of the model until its reply), so the node waits instead, for a few periods."""
        horizon = now - REPLY_WAIT_PERIODS * self._config.period
        while self._outstanding:
            oldest = next(iter(self._outstanding))
            if self._outstanding[oldest].sent_at >= horizon:
                break
            del self._outstanding[oldest]
        return len(self._outstanding)

    def _snapshot(self, kind: Kind, weight: float, now: float, alpha: float = 0.0,
                  reply_to: float = 0.0, rows: Rows | None = None) -> ModelUpdate:  # fmt: skip
        """A copy of the parameters to send; sparse codecs pick rows unless `rows` is given.

        The copy keeps the precision the codec sends (float16 for float16 codecs): the peer
        sees no more, and a pairwise request holds its copy until the reply, half the memory."""
        params: Arrays
        if self._config.codec.inner == "float16":
            params = {name: array.astype(np.float16) for name, array in self.params.items()}
        else:
            params = {name: array.copy() for name, array in self.params.items()}
        if rows is not None:
            return ModelUpdate(kind, params, weight, self._version, now, rows, alpha, reply_to)
        rows = {}
        if self._config.codec.sparse:
            fraction = self._config.codec.sparse_fraction
            cursor = self._cursor
            for name, array in params.items():
                rows[name], self._cursor = select_rows(len(array), fraction, cursor)
        return ModelUpdate(kind, params, weight, self._version, now, rows, alpha, reply_to)

    def receive(self, peer: bytes, update: ModelUpdate, now: float) -> list[Send]:
        self._now = now
        if set(update.params) != set(self.params):
            self._stats.ignored += 1
            return []
        if self._reputation and not self._reputation.admits(peer, now, self._config.period):
            self._stats.refused += 1
            return []
        self._membership.messaged(peer, now, update.version)
        rows = update.rows or None
        # A fresh node meeting an established model adopts it rather than averaging (see
        # ESTABLISHED): by the peer's word and, with the defence, its other peers' too (see
        # `_lead`), as the median of several peers' models (gossip/adoption.py).
        lead = self._lead(update.version)
        adopting = self._version == 0 and min(update.version, lead) >= ESTABLISHED
        replies = []
        if update.kind is Kind.PUSH_SUM:
            weight = update.weight
            if self._config.defence:
                weight = min(weight, self._config.defence.max_weight_ratio * self._weight)
            total = self._weight + weight
            if total > 0:
                self._merge(peer, self.params, update.params, weight / total, rows, now)
                self._weight = total
        elif update.kind is Kind.MERGE_REQUEST:
            alpha = staleness_alpha(now - update.sent_at, self._config.staleness_half_life)
            mine, theirs = alpha, alpha  # how far this node moves; how far the requester will
            if adopting:
                mine, theirs = 1.0, 0.0
            elif update.version == 0 and self._version >= ESTABLISHED:
                mine, theirs = 0.0, 1.0
            # The reply carries the request's rows, so both sides move the same rows by
            # opposite amounts and the sum is conserved for sparse codecs too (the adoption
            # of a fresh node aside).
            reply = self._snapshot(Kind.MERGE_REPLY, self._weight, now, theirs, update.sent_at,
                                   rows)  # fmt: skip
            replies.append(Send(peer, reply))
            self._merge(peer, self.params, update.params, mine, rows, now, adopting)
        else:
            sent = self._outstanding.get(peer)
            if sent is None or sent.sent_at != update.reply_to:
                self._stats.ignored += 1  # late, duplicate or unsolicited
                return []
            del self._outstanding[peer]
            # Slower than a period: the peer, or the network, cannot keep this node's pace.
            self._stats.late += now - sent.sent_at > self._config.period
            alpha = update.alpha
            if self._config.defence and not adopting:
                # At most the weight this node would have chosen for a model that old.
                age = now - sent.sent_at
                alpha = min(alpha, staleness_alpha(age, self._config.staleness_half_life))
            self._merge(peer, sent.params, update.params, alpha, rows, now, adopting)
        if self._adoption is None or self._adoption.complete:
            self._version = max(self._version, lead) + 1
            self._adoption = None
        self._stats.merged += 1
        return replies

    def _lead(self, claimed: int) -> int:
        """How far a merged model's claimed version carries this node's clock. A logical clock:
        a model is at least as far along as any merged into it (a late joiner catches up at
        once), but one peer moves it at most MAX_VERSION_LEAD, and with the defence no further
        than the upper quartile of its live peers' versions: as fast as the honest network's
        clock while fewer than a quarter of its peers lie."""
        lead = min(claimed, self._version + MAX_VERSION_LEAD)
        if self._config.defence:
            versions = sorted(p.model_version for p in self._membership.peers.values()
                              if p.state is PeerState.ALIVE)  # fmt: skip
            lead = min(lead, versions[3 * (len(versions) - 1) // 4] if versions else 0)
        return lead

    def _merge(self, peer: bytes, base: Arrays, remote: Arrays, alpha: float, rows: Rows | None,
               now: float, adopting: bool = False) -> None:  # fmt: skip
        """Move the local model by alpha * (remote - base): with the defence clipped, judged, and
        not at all when the difference is a strike (clipping bounds one message; the direction
        of a steady attacker's clipped moves would still add up until it is quarantined); into
        the adoption instead while this fresh node adopts an established model."""
        if alpha == 0.0:
            return
        defence = self._config.defence
        if defence is None or self._clipper is None or self._reputation is None:
            move(self.params, difference(remote, base, rows), alpha, rows)
            return
        if adopting:
            if self._adoption is None:
                self._adoption = Adoption(self.params, defence.adopt_from)
            self._adoption.offer(peer, remote, rows, self.params)
            return
        differences = difference(remote, base, rows)
        local = self.params if rows is None else {n: a[rows[n]] for n, a in self.params.items()}
        excess = self._clipper.clip(differences, local)
        self._stats.clipped += excess > 1.0
        self._reputation.judge(peer, excess, now)
        if excess <= defence.strike_at:  # a strike is not merged at all, not even clipped
            move(self.params, differences, alpha, rows)
