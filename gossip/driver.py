"""The async driver: asks the protocol core what to send, seals it, publishes it; opens what
arrives and feeds it back. Presence beacons feed membership and the certificate directory; the
revocation list topic updates the trust store. A bad message is counted and dropped, always.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple, TypeVar

from gossiprec.crypto.catalogue import CATALOGUE_FILE, SignedCatalogue
from gossiprec.crypto.certificate import Certificate, RevocationList
from gossiprec.crypto.envelope import DEFAULT_MAX_BYTES, Opener, Sealer
from gossiprec.crypto.errors import CertificateError, EnvelopeError, SealError
from gossiprec.crypto.files import write_atomic
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.prekey import PREKEY_BYTES, Prekeys
from gossiprec.crypto.replay import SequenceCounter
from gossiprec.crypto.statement import StatementVerifier, sign_statement
from gossiprec.crypto.trust import CRL_FILE, TrustStore
from gossiprec.crypto.wire import pack, unpack
from gossiprec.gossip import topics
from gossiprec.gossip.codec import CodecStats, decode, encode
from gossiprec.gossip.errors import DecodeError
from gossiprec.gossip.fairlock import FairLock
from gossiprec.gossip.messages import ModelUpdate, Send
from gossiprec.gossip.protocol import GossipProtocol, ProtocolStatus
from gossiprec.gossip.transport import Incoming, LastWill, Transport

log = logging.getLogger(__name__)
T = TypeVar("T")

KIND_MODEL = 1
# Model updates waiting to be opened and merged. When more arrive than the node can merge, the
# oldest (stalest) are dropped first; beacons never wait in this queue.
INBOX_BACKLOG = 8
SESSION_BYTES = 16


@dataclass(frozen=True)
class Identity:
    keys: NodeKeys
    certificate: Certificate
    trust: TrustStore
    # Names this run of the node in its beacons and its signed last will: a will is believed only
    # for the session peers last saw, so an old will replayed cannot mark a live node dead.
    session: bytes = field(default_factory=lambda: os.urandom(SESSION_BYTES))

    @property
    def network(self) -> str:
        return self.trust.network

    @property
    def node_id(self) -> bytes:
        return self.keys.node_id


def subscriptions(identity: Identity, shards: int = 1) -> list[str]:
    network, node_id = identity.network, identity.node_id
    presence = topics.presence_subscriptions(network, node_id, shards)
    return [topics.inbox(network, node_id), *presence, topics.crl(network),
            topics.catalogue(network)]  # fmt: skip


def last_will(identity: Identity, shards: int = 1) -> LastWill:
    """A signed leave for this session, retained: the broker publishes it in the beacon's place
    when the node dies uncleanly (and the node itself when it stops)."""
    topic = topics.presence(identity.network, identity.node_id, shards)
    return LastWill(topic, leave_statement(identity), retain=True)


def beacon(identity: Identity, version: int, status: dict[str, int | float | str],
           now: float, prekey: bytes) -> bytes:  # fmt: skip
    """A signed presence beacon: model version, public status, this run's session, the version
    of the revocation list it holds (peers behind it are sent the list) and the prekey peers
    open their sessions to (crypto/envelope.py)."""
    body = pack({"v": version, "s": status, "n": identity.session,
                 "c": identity.trust.crl.version, "k": prekey})  # fmt: skip
    return sign_statement(identity.keys, identity.certificate, body, now)


def leave_statement(identity: Identity) -> bytes:
    body = pack({"leave": identity.session})
    return sign_statement(identity.keys, identity.certificate, body, time.time())


MAX_STATUS_KEYS = 16


def beacon_status(raw: object) -> dict[str, int | float | str]:
    """A beacon's public status, typed and bounded: a flat map of short keys to numbers or
    short text. Whatever a peer puts there, `peers` shows it as data beside its own fields."""
    if not isinstance(raw, dict) or len(raw) > MAX_STATUS_KEYS:
        raise DecodeError("beacon", "status")
    status: dict[str, int | float | str] = {}
    for key, value in raw.items():
        fits = (
            (type(value) is int and abs(value) < 2**53)
            or (type(value) is float and math.isfinite(value))
            or (isinstance(value, str) and len(value) <= 64)
        )
        if not isinstance(key, str) or len(key) > 32 or not fits:
            raise DecodeError("beacon", "status")
        status[key] = value
    return status


class Sealed(NamedTuple):
    """A sealed model message and the peer it goes to."""

    peer: bytes
    message: bytes


@dataclass
class PeerTraffic:
    """What this node exchanged with one peer, and when it last merged that peer's model."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    last_model_at: float | None = None


@dataclass(frozen=True)
class Presence:
    """The last verified beacon of a node: the network-wide view `gossiprec peers` shows."""

    last_seen: float
    model_version: int
    status: dict[str, int | float | str]
    session: bytes
    prekey: bytes


@dataclass
class NodeCounters:
    rejected: Counter[str] = field(default_factory=Counter)  # "where:reason" -> count
    codec: CodecStats = field(default_factory=CodecStats)
    beacons_sent: int = 0
    beacons_received: int = 0
    updates_received: int = 0
    updates_sent: int = 0
    crl_relayed: int = 0  # revocation lists sent to peers behind


async def _let_io_through() -> None:
    """One whole turn of the event loop, its I/O poll included, before a long step on it (an
    update's open, decode and merge: 100-200 us for 222 KB). The first yield runs what is ready
    now; the second, what that poll found: the socket ready for a publish just queued, an
    acknowledgement that lets the next one go. Then sends leave before the step instead of
    after it and cross the broker while it runs: `gossiprec bench gossip` 0.76-0.78 of raw
    aiomqtt without, 0.83-0.88 with (one yield: 0.75-0.82, the poll's callbacks wait behind it)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class GossipNode:
    """One node's gossip over a transport. `lock` guards the parameters shared with training."""

    def __init__(
        self,
        identity: Identity,
        transport: Transport,
        protocol: GossipProtocol,
        state_dir: Path,
        *,
        heartbeat: float = 5.0,
        max_message_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        lock: FairLock | None = None,
        status: Callable[[], dict[str, int | float | str]] | None = None,
        presence_shards: int = 1,
        on_catalogue: Callable[[SignedCatalogue], None] | None = None,
        inbox_backlog: int = INBOX_BACKLOG,
    ) -> None:
        self.identity = identity
        self.transport = transport
        self._protocol = protocol
        self.heartbeat = heartbeat
        self.counters = NodeCounters()
        self.directory: dict[bytes, Certificate] = {}
        self.presence: dict[bytes, Presence] = {}
        self.traffic: dict[bytes, PeerTraffic] = {}
        self.lock = lock or FairLock()
        self._clock = clock
        self._status = status or (lambda: {})
        self._max_bytes = max_message_bytes
        self._expected = {name: array.shape for name, array in protocol.params.items()}
        state_dir.mkdir(parents=True, exist_ok=True)
        # The newest revocation list this node adopted, kept across restarts: a broker that
        # lost its retained copy must not let a revoked node back in.
        self._crl_file = state_dir / CRL_FILE
        self._load_crl()
        self._crl_behind = False  # a peer's beacon showed an older revocation list than ours
        self.revoked = self._own_certificate_revoked()
        # The newest catalogue adopted (its entries live with the node); older ones are ignored.
        self._on_catalogue_adopted = on_catalogue or (lambda catalogue: None)
        self._catalogue_file = state_dir / CATALOGUE_FILE
        self.catalogue_version = self._stored_catalogue_version()
        self._sealer = Sealer(identity.keys, identity.network, SequenceCounter(state_dir / "seq"))
        self.prekeys = Prekeys(clock())
        self._opener = Opener(identity.keys, identity.trust, self.directory.get, self.prekeys,
                              max_bytes=max_message_bytes)  # fmt: skip
        self._beacons = StatementVerifier(
            identity.trust, max_age=protocol.config.membership.dead_after
        )
        self._presence_topic = topics.presence(identity.network, identity.node_id, presence_shards)
        self._leave = leave_statement(identity)
        self._inbox: collections.deque[Incoming] = collections.deque(maxlen=inbox_backlog)
        self._inbox_ready = asyncio.Event()
        # Beacons arrive on the event loop, which must never wait for the lock (a training step):
        # (peer, heard at, model version), or (peer, None, 0) for a peer that left, applied to
        # membership under the lock at the next tick or merge.
        self._membership_news: collections.deque[tuple[bytes, float | None, int]] = (
            collections.deque()
        )

    # -- what callers read, and the one setting they may change ---------------------------------

    @property
    def protocol(self) -> GossipProtocol:
        """The core, to read (`params`, `status()`); its state changes only through this node."""
        return self._protocol

    @property
    def version(self) -> int:
        return self._protocol.version

    def status(self) -> ProtocolStatus:
        return self._protocol.status()

    def set_period(self, period: float) -> None:
        # One reference swap inside the core: safe beside a tick in a worker thread, and the
        # event loop never waits for the lock (a training step).
        self._protocol.set_period(period)

    # -- lifetime --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Gossip until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._receive_loop())
            group.create_task(self._model_loop())
            group.create_task(self._gossip_loop())
            group.create_task(self._heartbeat_loop())

    async def leave(self) -> None:
        """Clean shutdown: a signed leave in our presence, so peers drop us at once."""
        await self.transport.publish(self._presence_topic, self._leave, retain=True)

    # -- outgoing --------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            announced = await self.announce()
            # Not connected yet (or the broker is away): try again soon, not a heartbeat later.
            await asyncio.sleep(self.heartbeat if announced else min(self.heartbeat, 0.5))

    async def announce(self) -> bool:
        if self.revoked:
            return False
        now = self._clock()
        signed = beacon(self.identity, self._protocol.version, self._status(), now,
                        self.prekeys.current(now))  # fmt: skip
        if await self.transport.publish(self._presence_topic, signed, retain=True):
            self.counters.beacons_sent += 1
            await self._relay_crl()
            return True
        return False

    async def _relay_crl(self) -> None:
        """Send our revocation list to peers whose beacons show an older one. On a broker cluster
        a retained list may live on one broker only (RabbitMQ keeps retained messages per node),
        so a node that joined elsewhere never got it. The list is signed: any node may relay it.
        Waiting for our own heartbeat spreads the relays; one from anyone clears the others'."""
        if not self._crl_behind or self.identity.trust.crl.version == 0:
            return
        self._crl_behind = False
        if await self.transport.publish(topics.crl(self.identity.network),
                                        self.identity.trust.crl.encode(), retain=True):  # fmt: skip
            self.counters.crl_relayed += 1

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self._protocol.next_tick - self._clock()))
            sends = await self._holding_lock(self._tick)
            await self.publish_all(self.seal_all(sends))

    def _tick(self) -> list[Send]:
        self._apply_membership_news()
        return self._protocol.tick(self._clock())

    async def _holding_lock(self, step: Callable[[], T]) -> T:
        """`step()` under the model lock: here if the lock is free, else in a worker thread, so
        the event loop, which every node of a simulation shares, never waits for a training
        step. A tick or a merge, like the sealing and opening around it, costs less than a
        hand-off to a thread (GIL switches: 100-130 us a round trip, more than sealing 215 KB);
        AEAD releases the GIL, so training threads go on meanwhile."""
        if self.lock.acquire(blocking=False):
            try:
                return step()
            finally:
                self.lock.release()
        return await asyncio.to_thread(self._wait_for_lock, step)

    def _wait_for_lock(self, step: Callable[[], T]) -> T:
        with self.lock:
            return step()

    def _apply_membership_news(self) -> None:
        while self._membership_news:
            peer, heard_at, version = self._membership_news.popleft()
            if heard_at is None:
                self._protocol.peer_left(peer)
            else:
                self._protocol.peer_heard(peer, heard_at, version)

    def seal_all(self, sends: list[Send]) -> list[Sealed]:
        """Encode and seal each send to a peer this node can address (its certificate and
        prekey known); thread-safe: each update is a snapshot, not live state."""
        if self.revoked:  # a revoked node keeps its model to itself
            return []
        sealed = []
        for send in sends:
            certificate, presence = self.directory.get(send.peer), self.presence.get(send.peer)
            if certificate is None or presence is None:
                continue
            try:
                sealed.append(Sealed(send.peer, self.seal_update(send.update, certificate,
                                                                 presence.prekey)))  # fmt: skip
            except SealError:
                self.counters.rejected["seal:recipient_prekey"] += 1
        return sealed

    async def publish_all(self, sealed: list[Sealed]) -> None:
        for peer, message in sealed:
            if await self.transport.publish(topics.inbox(self.identity.network, peer), message):
                self.counters.updates_sent += 1
                traffic = self.traffic.setdefault(peer, PeerTraffic())
                traffic.messages_out += 1
                traffic.bytes_out += len(message)

    def seal_update(self, update: ModelUpdate, recipient: Certificate, prekey: bytes) -> bytes:
        """Encode and seal one update (thread-safe: `update` is a snapshot, not live state)."""
        data = encode(update, self._protocol.config.codec, self.counters.codec)
        return self._sealer.seal(data, recipient, prekey, KIND_MODEL, self._clock())

    def open_update(self, payload: bytes, now: float) -> tuple[bytes, ModelUpdate] | None:
        """Open and decode one inbox message; None (and counted) when it is rejected."""
        try:
            opened = self._opener.open(payload, now)
        except EnvelopeError:
            return None  # counted by the opener
        try:
            update = decode(opened.payload, max_bytes=self._max_bytes, expected=self._expected,
                            stats=self.counters.codec)  # fmt: skip
        except DecodeError as error:
            self.counters.rejected["decode:" + error.reason] += 1
            return None
        return opened.sender, update

    # -- incoming --------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Beacons and revocations are handled as they come; model updates queue for the model
        loop, so a busy node still sees who is alive and admits new peers at once."""
        async for message in self.transport.incoming():
            try:
                kind, node_id = topics.parse(message.topic, self.identity.network)
                if kind == "presence" and node_id is not None:
                    self._on_presence(node_id, message.payload, self._clock())
                elif kind == "crl":
                    self._on_crl(message.payload)
                elif kind == "catalogue":
                    self._on_catalogue(message.payload)
                elif kind == "inbox" and node_id == self.identity.node_id:
                    if len(self._inbox) == self._inbox.maxlen:
                        self.counters.rejected["inbox:overflow"] += 1
                    self._inbox.append(message)
                    self._inbox_ready.set()
                else:
                    self.counters.rejected["topic:unexpected"] += 1
            except Exception:  # a bug must not take the node down; count it and go on
                log.exception("unexpected error handling a message on %s", message.topic)
                self.counters.rejected["internal:error"] += 1

    async def _model_loop(self) -> None:
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready.clear()
            while self._inbox:
                message = self._inbox.popleft()
                await _let_io_through()
                try:
                    replies = await self.handle_update(message.payload)
                except Exception:  # as above: count, never crash
                    log.exception("unexpected error handling a model update")
                    self.counters.rejected["internal:error"] += 1
                    continue
                await self.publish_all(replies)

    async def handle_update(self, payload: bytes) -> list[Sealed]:
        """Open, check and merge one model update from this node's inbox and seal the replies."""
        now = self._clock()
        opened = self.open_update(payload, now)
        if opened is None:
            return []
        sender, update = opened
        self.counters.updates_received += 1
        traffic = self.traffic.setdefault(sender, PeerTraffic())
        traffic.messages_in += 1
        traffic.bytes_in += len(payload)
        traffic.last_model_at = now
        return self.seal_all(await self._holding_lock(partial(self._receive, sender, update, now)))

    def _receive(self, sender: bytes, update: ModelUpdate, now: float) -> list[Send]:
        self._apply_membership_news()
        return self._protocol.receive(sender, update, now)

    def _on_presence(self, node_id: bytes, payload: bytes, now: float) -> None:
        if node_id == self.identity.node_id:
            return
        if not payload:  # anyone can publish an empty retained message: it proves nothing
            self.counters.rejected["presence:unsigned_leave"] += 1
            return
        try:
            # Freshness below: a beacon by its age, a leave by its session.
            statement = self._beacons.verify(payload, now, max_age=math.inf)
            if statement.certificate.node_id != node_id:
                raise DecodeError("beacon", "certificate of another node")
            body = unpack(statement.body, max_size=4_096)
            if not isinstance(body, dict):
                raise DecodeError("beacon", "body")
            if "leave" in body:
                self._on_leave(node_id, body["leave"])
                return
            version, session, crl = body.get("v", 0), body.get("n"), body.get("c", 0)
            prekey = body.get("k")
            if type(version) is not int or not 0 <= version < 2**63:
                raise DecodeError("beacon", "version")
            if type(crl) is not int or not 0 <= crl < 2**63:
                raise DecodeError("beacon", "crl")
            if not isinstance(session, bytes) or len(session) != SESSION_BYTES:
                raise DecodeError("beacon", "session")
            if not isinstance(prekey, bytes) or len(prekey) != PREKEY_BYTES:
                raise DecodeError("beacon", "prekey")
            status = beacon_status(body.get("s", {}))
        except EnvelopeError:
            return  # counted by the verifier
        except (DecodeError, ValueError, AttributeError):
            self.counters.rejected["beacon:malformed"] += 1
            return
        if now - statement.time > self._protocol.config.membership.dead_after:
            self.counters.rejected["beacon:stale"] += 1
            return
        known = self.presence.get(node_id)
        if known is not None and statement.time < known.last_seen:
            # An older beacon replayed: it must not bring back a prekey the node has dropped.
            self.counters.rejected["beacon:older"] += 1
            return
        self.counters.beacons_received += 1
        if crl < self.identity.trust.crl.version:
            self._crl_behind = True
        self.directory[node_id] = statement.certificate
        # Alive as of when it signed the beacon, not when it arrived: a replayed old beacon
        # cannot keep a dead node looking alive.
        heard_at = min(now, statement.time)
        self.presence[node_id] = Presence(heard_at, version, status, session, prekey)
        self._membership_news.append((node_id, heard_at, version))

    def _on_leave(self, node_id: bytes, session: object) -> None:
        """A signed leave (a last will, or a clean stop): believed for the session we know."""
        known = self.presence.get(node_id)
        if known is None or known.session != session:
            self.counters.rejected["presence:stale_leave"] += 1
            return
        del self.presence[node_id]
        self._membership_news.append((node_id, None, 0))

    def _on_crl(self, payload: bytes) -> None:
        try:
            received = RevocationList.decode(payload)
            adopted = self.identity.trust.update_crl(received)
        except CertificateError:
            self.counters.rejected["crl:invalid"] += 1
            return
        if received.version >= self.identity.trust.crl.version:
            self._crl_behind = False  # someone has just sent the list: no need to relay it too
        if not adopted:
            return
        try:
            write_atomic(self._crl_file, payload)
        except OSError as error:
            log.error("could not keep revocation list version %d on disk: %s",
                      self.identity.trust.crl.version, error)  # fmt: skip
        revoked = self.identity.trust.crl.revoked
        for node_id, certificate in list(self.directory.items()):
            if certificate.serial in revoked:
                del self.directory[node_id]
                self._membership_news.append((node_id, None, 0))
        if not self.revoked and self._own_certificate_revoked():
            self.revoked = True
            log.error("this node's certificate (serial %d) is revoked by revocation list "
                      "version %d: it stops gossiping. Fix: ask the network's authority.",
                      self.identity.certificate.serial,
                      self.identity.trust.crl.version)  # fmt: skip

    def _on_catalogue(self, payload: bytes) -> None:
        try:
            received = SignedCatalogue.decode(payload)
            received.verify(self.identity.trust.ca_public, self.identity.network)
        except CertificateError:
            self.counters.rejected["catalogue:invalid"] += 1
            return
        if received.version <= self.catalogue_version:
            return
        try:  # first the entries, durably; then the version
            self._on_catalogue_adopted(received)
        except Exception:  # the node could not take it (its log says why): try the next one
            self.counters.rejected["catalogue:unusable"] += 1
            return
        self.catalogue_version = received.version
        try:
            write_atomic(self._catalogue_file, payload)
        except OSError as error:
            log.error("could not keep catalogue version %d on disk: %s", received.version, error)

    def _stored_catalogue_version(self) -> int:
        if not self._catalogue_file.exists():
            return 0
        try:
            stored = SignedCatalogue.decode(self._catalogue_file.read_bytes())
            stored.verify(self.identity.trust.ca_public, self.identity.network)
        except (OSError, CertificateError) as error:
            log.warning("ignoring the stored catalogue %s: %s", self._catalogue_file, error)
            return 0
        return stored.version

    def _load_crl(self) -> None:
        if not self._crl_file.exists():
            return
        try:
            self.identity.trust.update_crl(RevocationList.decode(self._crl_file.read_bytes()))
        except (OSError, CertificateError) as error:
            log.warning("ignoring the stored revocation list %s: %s", self._crl_file, error)

    def _own_certificate_revoked(self) -> bool:
        return self.identity.certificate.serial in self.identity.trust.crl.revoked

    def sessions(self) -> dict[str, int]:
        """Sessions opened to peers and accepted from them (one signature and key agreement each;
        every other message is one AEAD)."""
        sealer, opener = self._sealer, self._opener
        return {"opened_out": sealer.sessions_opened, "opened_in": opener.sessions_opened}

    def rejected(self) -> dict[str, int]:
        """Every dropped message by "where:reason"."""
        merged = Counter(self.counters.rejected)
        merged.update({f"envelope:{r}": n for r, n in self._opener.rejected.items()})
        merged.update({f"beacon:{r}": n for r, n in self._beacons.rejected.items()})
        return dict(merged)
