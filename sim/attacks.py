"""Compromised members: real nodes with valid certificates that run a modified protocol.

A hostile node is the daemon's Node with this protocol core in place of the honest one: it
keeps its keys, certificate, store and MQTT connection, trains on its own users, answers and
sends on schedule, and forges only what it sends. Kinds:

- replacement: huge random values, replies claiming merge weight 1, push-sum weight 1e6
- sign-flip: its model negated and scaled by FLIP_SCALE
- noise: its model plus Gaussian noise NOISE_SCALE x each array's spread
- alie: "a little is enough" (Baruch et al., 2019): the mean of the models it received lately
  minus ALIE_Z of their standard deviation, coordinate by coordinate
- version-inflation: an honest model with an enormous version, to run down learning rates
- promotion: targeted (FedRecAttack-like, Rong et al., 2022): the target items' rows moved
  PROMOTION_SCALE x as far as needed towards the look of the most popular items, every message
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from gossiprec.gossip.messages import Arrays, Kind, ModelUpdate, Rows, Send
from gossiprec.gossip.protocol import GossipConfig, GossipProtocol
from gossiprec.node.types import IntArray
from gossiprec.sim.errors import SimError

ATTACKS = ("replacement", "sign-flip", "noise", "alie", "version-inflation", "promotion")
HUGE = 1e3
FLIP_SCALE = 3.0
NOISE_SCALE = 3.0
ALIE_Z = 1.0
ALIE_MEMORY = 8  # received models the mean and spread are taken over
INFLATED_VERSION = 2**40
PROMOTION_SCALE = 4.0
POPULAR = 50  # items whose mean look a promoted item takes on


@dataclass(frozen=True)
class Attack:
    kind: str
    targets: tuple[int, ...] = ()  # promotion: the items pushed

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise SimError(f"--attack {self.kind!r} is unknown; choose one of {', '.join(ATTACKS)}")
        if self.kind == "promotion" and not self.targets:
            raise SimError("a promotion attack needs target items")


def promotion_targets(train_items: IntArray, n_items: int, count: int, seed: int) -> list[int]:
    """Cold items to promote: picked at random among those with 1-5 training interactions (the
    long tail that an attack on exposure goes for; none of them is in any top-10 by itself)."""
    counts = np.bincount(train_items, minlength=n_items)
    cold = np.flatnonzero((counts >= 1) & (counts <= 5))
    if len(cold) < count:
        raise SimError(f"only {len(cold)} cold items to promote; need {count}")
    return sorted(int(i) for i in np.random.default_rng(seed).choice(cold, count, replace=False))


def hostile_seats(nodes: int, share: float, seed: int) -> list[int]:
    """Which of `nodes` seats are compromised: round(share x nodes), at least one, drawn with
    their own generator (a run with attackers differs from one without only there)."""
    if share <= 0:
        return []
    count = max(1, round(share * nodes))
    return sorted(random.Random(seed + 1).sample(range(nodes), count))


class HostileProtocol(GossipProtocol):
    """The honest core, with what it sends forged by `attack`."""

    def __init__(self, node_id: bytes, params: Arrays, config: GossipConfig,
                 rng: random.Random, now: float, *, version: int = 0,
                 attack: Attack) -> None:  # fmt: skip
        super().__init__(node_id, params, config, rng, now, version=version)
        self.attack = attack
        self._noise = np.random.default_rng(rng.getrandbits(32))
        self._received: deque[Arrays] = deque(maxlen=ALIE_MEMORY)

    @property
    def version(self) -> int:
        """What its beacons claim."""
        inflated = self.attack.kind == "version-inflation"
        return super().version + (INFLATED_VERSION if inflated else 0)

    def receive(self, peer: bytes, update: ModelUpdate, now: float) -> list[Send]:
        if self.attack.kind == "alie" and not update.rows:
            self._received.append({name: a.copy() for name, a in update.params.items()})
        return super().receive(peer, update, now)

    def _snapshot(self, kind: Kind, weight: float, now: float, alpha: float = 0.0,
                  reply_to: float = 0.0, rows: Rows | None = None) -> ModelUpdate:  # fmt: skip
        honest = super()._snapshot(kind, weight, now, alpha, reply_to, rows)
        kind_of = self.attack.kind
        if kind_of == "version-inflation":
            return replace(honest, version=self.version)
        forged = {name: self._forge(name, array) for name, array in honest.params.items()}
        if kind_of == "replacement":
            return replace(honest, params=forged, alpha=1.0 if kind is Kind.MERGE_REPLY else 0.0,
                           weight=1e6)  # fmt: skip
        return replace(honest, params=forged)

    def _forge(self, name: str, array: np.ndarray) -> np.ndarray:
        kind = self.attack.kind
        if kind == "replacement":
            return self._noise.normal(0.0, HUGE, array.shape).astype(np.float32)
        if kind == "sign-flip":
            return (-FLIP_SCALE * array).astype(np.float32)
        if kind == "noise":
            spread = float(array.std()) or 1.0
            noise = self._noise.normal(0.0, NOISE_SCALE * spread, array.shape)
            return (array + noise).astype(np.float32)
        if kind == "alie":
            if len(self._received) < 2:
                return array
            seen = np.stack([model[name] for model in self._received])
            forged: np.ndarray = seen.mean(axis=0) - ALIE_Z * seen.std(axis=0)
            return forged.astype(np.float32)
        return self._promote(name, array)

    def _promote(self, name: str, array: np.ndarray) -> np.ndarray:
        targets = list(self.attack.targets)
        bias = self.params["item_bias"]
        popular = np.argsort(-bias)[:POPULAR]
        look = array[popular].mean(axis=0) if name != "item_bias" else bias.max() + 1.0
        forged = array.copy()
        forged[targets] += PROMOTION_SCALE * (look - array[targets])
        return forged
