"""Who is out there: peers learned from presence beacons, aged into suspect and dead.

A peer is alive while beacons keep coming, suspect after `suspect_after` seconds of silence,
dead after `dead_after` (or at once when its last will, an empty presence, arrives). Beyond
`view_size` peers the view is a uniform reservoir sample of every peer heard of, so a node in a
huge network keeps a bounded partial view and still samples peers uniformly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class PeerState(Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass
class Peer:
    node_id: bytes
    first_seen: float
    last_seen: float
    state: PeerState = PeerState.ALIVE
    model_version: int = 0


@dataclass(frozen=True)
class MembershipConfig:
    suspect_after: float = 15.0
    dead_after: float = 45.0
    view_size: int = 4_096
    forget_after: float = 3_600.0  # dead peers are dropped from the table after this

    def __post_init__(self) -> None:
        if not 0 < self.suspect_after < self.dead_after:
            raise ValueError("need 0 < suspect_after < dead_after")
        if self.view_size < 1:
            raise ValueError("view_size must be >= 1")


class Membership:
    def __init__(self, self_id: bytes, config: MembershipConfig, rng: random.Random) -> None:
        self.self_id = self_id
        self.config = config
        self._rng = rng
        self.peers: dict[bytes, Peer] = {}
        self._heard_of = 0  # distinct peers ever offered to the reservoir

    def heard(self, peer: bytes, now: float, model_version: int = 0) -> None:
        if peer == self.self_id:
            return
        known = self.peers.get(peer)
        if known is not None:
            known.last_seen = max(known.last_seen, now)
            known.state = PeerState.ALIVE
            known.model_version = max(known.model_version, model_version)
            return
        self._heard_of += 1
        if len(self.peers) >= self.config.view_size:
            self._evict_dead()
        if len(self.peers) >= self.config.view_size:
            # Reservoir sampling: every peer heard of is in the view with equal probability.
            if self._rng.random() >= self.config.view_size / self._heard_of:
                return
            del self.peers[self._rng.choice(list(self.peers))]
        self.peers[peer] = Peer(peer, now, now, PeerState.ALIVE, model_version)

    def messaged(self, peer: bytes, now: float, model_version: int = 0) -> None:
        """A model message from `peer`: it was alive when it sent it. That refreshes a peer that
        is alive or suspect, but never revives a dead one: a message sent before its last will
        may arrive after it. Only a new beacon brings a dead peer back."""
        known = self.peers.get(peer)
        if known is None or known.state is not PeerState.DEAD:
            self.heard(peer, now, model_version)

    def left(self, peer: bytes) -> None:
        """An empty presence (last will or clean leave): dead now, not after the timeout."""
        if (known := self.peers.get(peer)) is not None:
            known.state = PeerState.DEAD

    def update(self, now: float) -> None:
        for peer in list(self.peers.values()):
            silent = now - peer.last_seen
            if silent >= self.config.forget_after:
                del self.peers[peer.node_id]
            elif silent >= self.config.dead_after:
                peer.state = PeerState.DEAD
            elif silent >= self.config.suspect_after and peer.state is PeerState.ALIVE:
                peer.state = PeerState.SUSPECT

    def _evict_dead(self) -> None:
        for peer in [p for p in self.peers.values() if p.state is PeerState.DEAD]:
            del self.peers[peer.node_id]

    def alive(self) -> list[bytes]:
        return [p.node_id for p in self.peers.values() if p.state is PeerState.ALIVE]

    def sample(self, count: int, shunned: Callable[[bytes], bool] | None = None) -> list[bytes]:
        """Up to `count` distinct alive peers, uniformly at random, none of them `shunned`."""
        alive = sorted(p for p in self.alive() if not (shunned and shunned(p)))  # seeded order
        return self._rng.sample(alive, min(count, len(alive)))
