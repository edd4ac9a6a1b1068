"""One gossiprec node: its store and model, training off the event loop, gossip, checkpoints.

The daemon (`gossiprec node run`) and the simulation (`gossiprec sim`) run this same class; only
the transport and the process around it differ. Shared parameters are numpy views of the model's
tensors handed to the gossip protocol; `lock` serialises training steps and merges on them.
Private parameters (user embeddings) and interactions never leave the node.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from gossiprec.crypto.catalogue import SignedCatalogue
from gossiprec.gossip.codec import Codec
from gossiprec.gossip.defence import DefenceConfig
from gossiprec.gossip.driver import GossipNode, Identity
from gossiprec.gossip.fairlock import FairLock
from gossiprec.gossip.membership import MembershipConfig
from gossiprec.gossip.protocol import ESTABLISHED, GossipConfig, GossipProtocol, ProtocolStatus
from gossiprec.gossip.transport import Transport
from gossiprec.node.catalogue import ItemCatalogue
from gossiprec.node.checkpoint import load_latest, previous_path, save_checkpoint
from gossiprec.node.config import DefenceSettings, GossipSettings, ModelSettings, NodeConfig
from gossiprec.node.errors import CheckpointError, IngestError, NodeError
from gossiprec.node.features import ItemFeatures
from gossiprec.node.hybrid import HybridMF
from gossiprec.node.privacy import RESERVED_ROUNDS, Ledger, noise_for
from gossiprec.node.recommender import BPRMF, BPRConfig
from gossiprec.node.store import PeerRow, Store
from gossiprec.node.types import IntArray

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.npz"
TRAIN_CHUNK = 1  # steps per lock hold: a merge or a recommendation waits for one step at most


def gossip_config(settings: GossipSettings, defence: DefenceSettings) -> GossipConfig:
    membership = MembershipConfig(suspect_after=settings.suspect_after,
                                  dead_after=settings.dead_after)  # fmt: skip
    bounds = None
    if defence.enabled:
        bounds = DefenceConfig(radius=defence.radius, strike_at=defence.strike_at,
                               limit_at=defence.quarantine_at / 2,
                               quarantine_at=defence.quarantine_at,
                               quarantine_for=defence.quarantine_for)  # fmt: skip
    return GossipConfig(strategy=settings.strategy, period=settings.period,
                        fanout=settings.fanout, codec=Codec(settings.codec),
                        membership=membership, defence=bounds)  # fmt: skip


def model_config(settings: ModelSettings) -> BPRConfig:
    return BPRConfig(dim=settings.dim, seed=settings.seed, lr=settings.lr, clip=settings.clip,
                     user_lr=settings.user_lr, l2=settings.l2,
                     optimizer=settings.optimizer)  # fmt: skip


@dataclass
class Checkpoints:
    """What the periodic checkpoint did: `status` shows it, so a full disk is seen."""

    written: int = 0
    failed: int = 0
    last_at: float | None = None
    version: int | None = None  # the model version of the last good checkpoint
    last_error: str | None = None  # why the latest attempt failed; None once one succeeds


class Node:
    def __init__(self, config: NodeConfig, identity: Identity, transport: Transport, *,
                 clock: Callable[[], float] = time.time,
                 make_protocol: Callable[..., GossipProtocol] = GossipProtocol,
                 ) -> None:  # fmt: skip
        """`make_protocol` makes the gossip core (a simulation's hostile nodes bring their own)."""
        self.config = config
        self.identity = identity
        self.lock = FairLock()
        self.started_at = clock()
        self._clock = clock
        self._train_period = config.train.period
        self.checkpoints = Checkpoints()
        self.store = Store(config.data_dir / "store.sqlite")
        self.catalogue = ItemCatalogue(config.model.n_items, config.model.item_ids)
        self.features = ItemFeatures(config.model.n_items, config.model.feature_rows)
        self._load_catalogue()
        self.model = self._new_model()
        meta = self._restore()
        self.model.steps_taken = meta.get("training_steps", 0)
        self.last_loss: float | None = None
        # Each node its own protocol randomness (peer choice, jitter), reproducible per seed.
        seed = int.from_bytes(hashlib.sha256(identity.node_id).digest()[:8]) ^ config.model.seed
        protocol = make_protocol(identity.node_id, self.model.shared_arrays(),
                                 gossip_config(config.gossip, config.defence),
                                 random.Random(seed), clock(),
                                 version=meta.get("version", 0))  # fmt: skip
        self.gossip = GossipNode(identity, transport, protocol, config.data_dir / "gossip",
                                 heartbeat=config.gossip.heartbeat, clock=clock, lock=self.lock,
                                 status=self._beacon,
                                 presence_shards=config.gossip.presence_shards,
                                 on_catalogue=self._adopt_catalogue)  # fmt: skip
        self._trained_version = protocol.version  # the version the users were last fit to
        self._new_data = True
        self.privacy = self._ledger()
        # The noise must be secret (a peer that could replay it would subtract it): fresh
        # randomness from the OS, not the model's shared seed.
        self._noise = torch.Generator().manual_seed(secrets.randbits(63))
        self._budget_warned = False

    def close(self) -> None:
        self.store.close()

    def _ledger(self) -> Ledger | None:
        settings = self.config.privacy
        if not settings.enabled:
            return None
        noise = settings.noise_multiplier or noise_for(settings.epsilon, settings.delta,
                                                       settings.rounds)  # fmt: skip
        spent = self.store.counters().get(RESERVED_ROUNDS, 0)

        def reserve(rounds: int) -> None:
            self.store.add_counters({RESERVED_ROUNDS: rounds})

        return Ledger(noise, settings.epsilon, settings.delta, spent, reserve)

    # -- start-up --------------------------------------------------------------------------------

    def _new_model(self) -> BPRMF:
        settings = self.config.model
        config = model_config(settings)
        model = (BPRMF(settings.n_items, config) if settings.kind == "bpr"
                 else HybridMF(settings.n_items, self.features, config,
                               use_ids=settings.kind == "hybrid"))  # fmt: skip
        model.negative_pool = self._negative_pool()
        return model

    def _negative_pool(self) -> IntArray | None:
        """With a catalogue, negatives are catalogue items: a spare row is no item at all."""
        if self.catalogue.mode != "catalogue" or len(self.catalogue) < 2:
            return None
        return self.catalogue.named_rows()

    def _load_catalogue(self) -> None:
        for item, row, features in self.store.items():
            self.catalogue.restore(item, row)
            names = json.loads(features)
            if names:
                self.features.set(row, names)

    def _restore(self) -> dict[str, Any]:
        """Last checkpoint (if readable), then every stored interaction, including later ones."""
        meta: dict[str, Any] = {}
        path = self.config.data_dir / CHECKPOINT_FILE
        if path.exists() or previous_path(path).exists():
            try:
                arrays, meta = load_latest(path)
                self.model.restore(arrays)
            except (CheckpointError, KeyError, ValueError) as error:
                log.warning("starting without the checkpoint: %s", error)
                self.model = self._new_model()
                meta = {}
        users, items, _ = self.store.interactions()
        self.model.add_interactions(users, items)
        # Stored interactions: more than the model's (user, row) pairs where ids share a row.
        self.stored_interactions = len(users)
        log.info("restored %d interactions of %d users, model version %s",
                 self.model.n_interactions, len(self.model.users),
                 meta.get("version", 0))  # fmt: skip
        return meta

    # -- lifetime --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Gossip, train and checkpoint until cancelled; then write a final checkpoint."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.gossip.run())
                group.create_task(self._training_loop())
                group.create_task(self._checkpoint_loop())
        finally:
            await asyncio.shield(asyncio.to_thread(self.checkpoint))

    def set_periods(self, gossip: float, train: float) -> None:
        """Gossip and train at these periods from now on (a simulation paces its nodes)."""
        self.gossip.set_period(gossip)
        self._train_period = train

    async def _training_loop(self) -> None:
        while True:
            await asyncio.sleep(self._train_period)
            await self.train_round()

    async def train_round(self) -> bool:
        """One epoch over local interactions, if new data or a merged model arrived since the
        last round (an idle node does not burn its device's CPU). True when it trained."""
        version = self.gossip.version
        if not self.model.n_interactions or (not self._new_data
                                             and version == self._trained_version):  # fmt: skip
            return False
        # A model this far ahead of the one the users were last fit to (joining late, back from
        # a long absence) is a different model to them; an ordinary round sees a few dozen.
        catch_up = version - self._trained_version >= ESTABLISHED
        self._new_data = False
        self._trained_version = version
        if catch_up:
            await asyncio.to_thread(self._fit_users)
        await asyncio.to_thread(
            self._train, self.config.train.epochs * self.model.steps_per_epoch()
        )
        return True

    def _fit_users(self) -> None:
        """Private steps only, fitting every user's vector to a shared model that came from far
        ahead: until they fit it, the users get poor recommendations, and the node's shared steps,
        taken through them, point the wrong way."""
        users = np.asarray(self.model.users, dtype=np.int64)
        for _ in range(self.config.train.online_steps):
            with self.lock:
                self.model.learn_online(users, 1)

    @property
    def training_steps(self) -> int:
        return self.model.steps_taken

    def _train(self, steps: int) -> None:
        if half_life := self.config.model.lr_half_life:
            # Gossip's disagreement between nodes grows with the step size: decaying it lets
            # them settle on a common model. The clock is the model version, which a merge
            # carries forward, so a node joining late steps at the network's pace at once.
            half_lives = self.gossip.version / half_life
            self.model.scale_shared_lr(0.5**half_lives)
        if self.privacy is not None:
            self._train_private(self.privacy)
            return
        for start in range(0, steps, TRAIN_CHUNK):
            with self.lock:
                self.last_loss = self.model.train_steps(min(TRAIN_CHUNK, steps - start))

    def _train_private(self, ledger: Ledger) -> None:
        """One private round (node/privacy.py), within the budget unless told to warn."""
        if ledger.exhausted:
            stop = self.config.privacy.on_spent == "stop"
            if not self._budget_warned:
                then = "no more training on the users' data" if stop else "training on, past it"
                log.warning("the privacy budget (epsilon %g) is spent: %s (privacy.on_spent)",
                            ledger.budget, then)  # fmt: skip
                self._budget_warned = True
            if stop:
                return
        settings = self.config.privacy
        # The step follows model.lr's schedule (lr_half_life) from its own start.
        step = settings.lr * self.model.shared_lr / self.model.config.lr
        with self.lock:
            ledger.spend()  # on disk before anything it pays for can be sent
            self.last_loss = self.model.private_round(settings.clip, ledger.noise_multiplier,
                                                      self._noise, step)  # fmt: skip

    async def _checkpoint_loop(self) -> None:
        while True:
            # Jittered: nodes started together (a simulation, a fleet after an update) would
            # otherwise all write at once, and their replies wait behind the disk.
            await asyncio.sleep(self.config.node.checkpoint_period * random.uniform(0.8, 1.2))
            await asyncio.to_thread(self.checkpoint)

    def checkpoint(self) -> bool:
        """Model and peer table to disk, atomically (write, verify, fsync, rename). A failed
        write (a full disk) is logged and counted, never fatal: the last good checkpoint stays,
        and the interactions are in the store. True when written."""
        with self.lock:
            state = {name: array.copy() for name, array in self.model.state().items()}
            meta = {"version": self.gossip.version, "training_steps": self.training_steps}
        try:
            save_checkpoint(self.config.data_dir / CHECKPOINT_FILE, state, meta)
            self.store.save_peers(self._peer_rows())
        except (OSError, NodeError) as error:
            self.checkpoints.failed += 1
            self.checkpoints.last_error = str(error)
            log.error("checkpoint failed, the node keeps running on the last good one: %s", error)
            return False
        self.checkpoints.written += 1
        self.checkpoints.last_error = None
        self.checkpoints.last_at = self._clock()
        self.checkpoints.version = meta["version"]
        return True

    # -- interactions and recommendations ------------------------------------------------------

    async def ingest(self, users: IntArray, items: IntArray, times: IntArray) -> int:
        """Store durably, then learn: returns how many were new. Only once this returns may the
        caller acknowledge the interactions; the user's recommendations already reflect them.
        Items are model rows here (the simulation's path); users speak ids: `ingest_ids`."""
        if len(items) and (items.min() < 0 or items.max() >= self.model.n_items):
            raise IngestError(f"item ids must lie in [0, {self.model.n_items})")
        return await self._store_and_learn(users, items, times)

    async def ingest_ids(self, users: IntArray, items: list[str], times: IntArray) -> int:
        """`ingest` in the user's item ids (node/catalogue.py); an id met for the first time is
        stored with the interactions, in the same transaction."""
        rows = self.catalogue.rows(items)
        fresh = [(item, row) for item, row in dict.fromkeys(zip(items, rows.tolist(), strict=True))
                 if item not in self.catalogue]  # fmt: skip
        return await self._store_and_learn(users, rows, times, items, fresh)

    async def _store_and_learn(self, users: IntArray, rows: IntArray, times: IntArray,
                               ids: list[str] | None = None,
                               new_ids: list[tuple[str, int]] | None = None) -> int:  # fmt: skip
        if len(users) and users.min() < 0:
            raise IngestError("user ids must be >= 0")
        added = await asyncio.to_thread(self.store.add_interactions, users, rows, times, ids,
                                        new_ids or [])  # fmt: skip
        self.stored_interactions += added
        self.catalogue.remember([item for item, _ in new_ids or []])
        await asyncio.to_thread(self._learn, users, rows)
        self._new_data = True
        return added

    async def add_items(self, entries: list[tuple[str, list[str]]]) -> int:
        """Catalogue entries (id, feature names): stored durably, then the model places each
        item by its features from the next recommendation on. Returns how many ids were new."""
        return await asyncio.to_thread(self._add_items, entries)

    def _add_items(self, entries: Sequence[tuple[str, Sequence[str]]]) -> int:
        rows = self.catalogue.rows([item for item, _ in entries]).tolist()
        pairs = list(zip(entries, rows, strict=True))
        self.store.add_items([(item, row, json.dumps(list(names))) for (item, names), row in pairs])
        with self.lock:
            fresh = self.catalogue.remember([item for item, _ in entries])
            for (_, names), row in pairs:
                if names:
                    self.features.set(row, names)
        return len(fresh)

    def _adopt_catalogue(self, catalogue: SignedCatalogue) -> None:
        """A newer catalogue from the network's authority (verified by the gossip layer)."""
        try:
            self.catalogue.place([item for item, _ in catalogue.entries])
            fresh = self._add_items(list(catalogue.entries))
            with self.lock:
                self.model.negative_pool = self._negative_pool()
        except NodeError as error:  # ids that are no rows here (item_ids = "rows"), a full disk
            log.error("catalogue version %d not adopted: %s", catalogue.version, error)
            raise
        log.info("adopted catalogue version %d: %d entries, %d new ids", catalogue.version,
                 len(catalogue.entries), fresh)  # fmt: skip

    def _learn(self, users: IntArray, items: IntArray) -> None:
        with self.lock:
            self.model.add_interactions(users, items)
            self.last_loss = self.model.learn_online(users, self.config.train.online_steps)

    async def recommend(self, user: int, k: int) -> list[int] | list[str]:
        """Top k for the user: rows as integers with item_ids = "rows", else the ids the node
        knows (an unnamed row cannot be shown; ids sharing a row share its place)."""

        def top() -> list[int] | list[str]:
            with self.lock:
                if self.catalogue.mode == "rows":
                    return [int(item) for item in self.model.recommend(user, k)]
                named = self.catalogue.named_rows()
                ranked = self.model.recommend(user, self.model.n_items, among=named)
                ids = [item for row in ranked for item in self.catalogue.ids_at(int(row))]
                return ids[:k]

        return await asyncio.to_thread(top)

    # -- what the node tells its operator ------------------------------------------------------

    def _beacon(self) -> dict[str, int | float | str]:
        """Public status in the presence beacon: nothing about users or interactions (not even
        training steps: they grow with the amount of local data). The privacy a node has spent
        is public: it grows with time, and peers and operators should see it."""
        shown: dict[str, int | float | str] = {
            "uptime": round(self._clock() - self.started_at), "codec": self.config.gossip.codec
        }  # fmt: skip
        if self.privacy is not None:
            shown.update(epsilon=round(self.privacy.epsilon, 4), delta=self.privacy.delta)
        return shown

    def status(self) -> dict[str, Any]:
        gossip, transport = self.gossip, self.gossip.transport
        protocol = gossip.status()
        down_since = None if transport.connected else transport.stats.down_since
        return {
            "node_id": self.identity.node_id.hex(),
            "network": self.identity.network,
            "broker": {
                "url": ",".join(self.config.broker.addresses),
                "connected": transport.connected,
                "endpoint": transport.stats.broker,
                "failovers": transport.stats.failovers,
                "failbacks": transport.stats.failbacks,
                "last_outage": transport.stats.last_outage,
                "down_for": 0.0 if down_since is None else self._clock() - down_since,
                "last_error": transport.stats.last_error,
                "connects": transport.stats.connects,
                "publish_failed": transport.stats.publish_failed,
            },
            "revoked": gossip.revoked,
            "uptime": self._clock() - self.started_at,
            "model_version": protocol.version,
            "training_steps": self.training_steps,
            "loss": self.last_loss,
            "interactions": self.stored_interactions,
            "users": len(self.model.users),
            # What the node can name: ids met in ingests and catalogues, the newest catalogue
            # version adopted from the authority, items placed by their features.
            "catalogue": self._catalogue_status(),
            "bytes_in": transport.stats.bytes_in,
            "bytes_out": transport.stats.bytes_out,
            "messages_in": transport.stats.received,
            "messages_out": transport.stats.published,
            "dropped_incoming": transport.stats.dropped_incoming,  # the bounded queue was full
            "checkpoints": asdict(self.checkpoints),
            "updates_in": gossip.counters.updates_received,
            "updates_out": gossip.counters.updates_sent,
            "rejected": gossip.rejected(),
            "sessions": gossip.sessions(),
            "codec": gossip.counters.codec.as_dict(),
            "defence": {
                "enabled": self.config.defence.enabled,
                "clipped": protocol.clipped,  # merged messages it cut
                "refused": protocol.refused,  # messages of rate-limited or quarantined peers
                "quarantined": sum(p.quarantined for p in protocol.peers),
                "radii": _radii(gossip.protocol.radii()),
            },
            "privacy": self.privacy_status(),
            "peers": self.peer_table(protocol),
        }

    def _catalogue_status(self) -> dict[str, Any]:
        return {"ids": len(self.catalogue), "version": self.gossip.catalogue_version,
                "with_features": len(self.features), "item_ids": self.catalogue.mode,
                "model": self.config.model.kind}  # fmt: skip

    def privacy_status(self) -> dict[str, Any]:
        settings = self.config.privacy
        if self.privacy is None:
            return {"enabled": False}
        return {"enabled": True, **self.privacy.as_dict(), "clip": settings.clip,
                "on_spent": settings.on_spent}  # fmt: skip

    def peer_table(self, protocol: ProtocolStatus | None = None) -> list[dict[str, Any]]:
        """This node's view: membership state and what it exchanged with each peer."""
        now = self._clock()
        rows = []
        for peer in (protocol or self.gossip.status()).peers:
            traffic = self.gossip.traffic.get(peer.node_id)
            certificate = self.gossip.directory.get(peer.node_id)
            last_model = traffic.last_model_at if traffic else None
            rows.append({
                "node_id": peer.node_id.hex(),
                "state": peer.state.value,
                "last_seen": now - peer.last_seen,
                "messages_in": traffic.messages_in if traffic else 0,
                "messages_out": traffic.messages_out if traffic else 0,
                "bytes_in": traffic.bytes_in if traffic else 0,
                "bytes_out": traffic.bytes_out if traffic else 0,
                "model_age": None if last_model is None else now - last_model,
                "trust": _trust(certificate.not_after if certificate else None, now),
                "clipped": peer.clipped,
                "refused": peer.refused,
                "strikes": peer.strikes,
                "quarantined": peer.quarantined,
            })  # fmt: skip
        return sorted(rows, key=lambda row: (row["state"], row["node_id"]))

    def network_view(self) -> list[dict[str, Any]]:
        """Every node whose signed beacon this node holds: the network as presence shows it."""
        now = self._clock()
        protocol = self.gossip.status()
        views = {p.node_id: p for p in protocol.peers}
        rows = [{"node_id": self.identity.node_id.hex(), "state": "self", "last_seen": 0.0,
                 "model_version": protocol.version, "status": self._beacon(), "clipped": 0,
                 "quarantined": False}]  # fmt: skip
        for node_id, presence in sorted(self.gossip.presence.items()):
            # What a peer says about itself stays under "status": it can never pose as another
            # node's id, state or version.
            view = views.get(node_id)
            rows.append({"node_id": node_id.hex(),
                         "state": view.state.value if view else "unsampled",
                         "last_seen": now - presence.last_seen,
                         "model_version": presence.model_version,
                         "status": presence.status,
                         "clipped": view.clipped if view else 0,
                         "quarantined": view.quarantined if view else False})  # fmt: skip
        return rows

    def _peer_rows(self) -> list[PeerRow]:
        return [PeerRow(bytes.fromhex(r["node_id"]), r["state"], self._clock() - r["last_seen"],
                        r["messages_in"], r["messages_out"], r["bytes_in"], r["bytes_out"])
                for r in self.peer_table()]  # fmt: skip


def _radii(radii: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    """How far one message may move each array now: per row, and as a whole."""
    return {name: {"row": row, "array": array} for name, (row, array) in radii.items()}


def _trust(not_after: float | None, now: float) -> str:
    if not_after is None:
        return "no certificate"
    days = (not_after - now) / 86_400
    return f"certified, {days:.0f} d left" if days > 0 else "expired"
