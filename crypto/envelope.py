"""Sealed point-to-point envelopes over per-peer sessions: authenticated once, then one AEAD per
message.

Pattern: the signed-prekey key agreement of Signal's X3DH (without one-time prekeys), one way.
A receiver announces a short-lived X25519 prekey in its signed beacons (crypto/prekey.py). A
sender opens a session to (recipient, prekey) with a fresh ephemeral X25519 key e:
  opening = msgpack [sender, recipient, recipient_key_id, prekey, session, e_public, aead]
  info    = context || network || opening, signed once by the sender (Ed25519)
  key     = HKDF-SHA256(DH(e, prekey) || DH(e, recipient's certified key), info)
Each message is one AEAD under the key (AES-256-GCM or ChaCha20-Poly1305, the sender's pick: see
crypto/aead.py), its nonce the session's message counter, its associated data the whole header.
Every header repeats the opening and its signature (about 190 bytes), so a receiver that missed
the first message or restarted needs nothing else; it verifies the signature and derives the key
once per session.

Wire form (msgpack): [3, header, ciphertext]
  header = msgpack [3, sender, recipient, key_id, prekey, session, e_public, aead, signature,
                    counter, kind, time_ms]

What holds (tests/test_crypto_envelope.py):
- the broker learns ids and sizes only: the key needs e or the recipient's private keys;
- the sender is authentic: it signed the opening, and only e's holder can derive the key;
- the recipient is bound: its id, key id and prekey are signed and in the key derivation;
- a nonce is never reused: every session has a new key (a fresh e) and counts up in memory; a
  restarted sender opens a new session, numbered by its durable SequenceCounter;
- nothing is replayed: a per-session window; a sender's sessions older than its newest two are
  refused; a restarted receiver holds new prekeys only, so what was sent to its earlier run
  cannot be opened by it;
- forward secrecy: a sender forgets e at once and a session key at rekey (REKEY_MESSAGES or
  REKEY_SECONDS); a receiver forgets a prekey, and its sessions, two lifetimes after it began;
- revocation reaches live sessions: the sender's certificate is checked on every message.

`open` checks the cheap things first and the expensive ones last. Every failure raises the same
EnvelopeError; the reason is counted.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gossiprec.crypto import aead as aeads
from gossiprec.crypto.aead import Aead
from gossiprec.crypto.certificate import Certificate
from gossiprec.crypto.errors import CertificateError, EnvelopeError, Rejection, SealError
from gossiprec.crypto.keys import KEY_ID_BYTES, NODE_ID_BYTES, NodeKeys, raw_public
from gossiprec.crypto.prekey import PREKEY_BYTES, Prekeys
from gossiprec.crypto.replay import MAX_SEQ, ReplayWindow, SequenceCounter
from gossiprec.crypto.trust import TrustStore
from gossiprec.crypto.wire import pack, pack_with_tail, unpack, unpack_with_tail, whole

VERSION = 3
SIGNATURE_BYTES = 64
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_SKEW = 300.0  # seconds of clock difference tolerated between nodes
REKEY_MESSAGES = 1 << 20
REKEY_SECONDS = 900.0
SESSIONS_PER_SENDER = 2  # the newest and the one before it, for messages in flight at a rekey
_CONTEXT = b"gossiprec/session/v3\x00"

CertificateLookup = Callable[[bytes], Certificate | None]


@dataclass(frozen=True)
class Header:
    sender: bytes
    recipient: bytes
    recipient_key_id: bytes
    prekey: bytes
    session: int
    ephemeral: bytes
    aead: int
    signature: bytes
    counter: int
    kind: int
    time_ms: int

    @property
    def fixed(self) -> tuple[bytes, bytes, bytes, bytes, int, bytes, int]:
        """The part of the header fixed for the session."""
        return (self.sender, self.recipient, self.recipient_key_id, self.prekey, self.session,
                self.ephemeral, self.aead)  # fmt: skip

    def opening(self) -> bytes:
        """The fixed part as signed."""
        return pack(list(self.fixed))

    @classmethod
    def decode(cls, data: bytes) -> Header:
        fields = unpack(data, max_size=512)
        if not isinstance(fields, list) or len(fields) != 12:
            raise ValueError("header fields")
        version, sender, recipient, key_id, prekey, session, ephemeral, aead = fields[:8]
        signature, counter, kind, time_ms = fields[8:]
        valid = (
            whole(version, VERSION, VERSION)
            and _bytes(sender, NODE_ID_BYTES) and _bytes(recipient, NODE_ID_BYTES)
            and _bytes(key_id, KEY_ID_BYTES) and _bytes(prekey, PREKEY_BYTES)
            and whole(session, 0, MAX_SEQ) and _bytes(ephemeral, 32)
            and type(aead) is int and aead in aeads.NAMES
            and _bytes(signature, SIGNATURE_BYTES) and whole(counter, 0, MAX_SEQ)
            and whole(kind, 0, 255) and whole(time_ms)
        )  # fmt: skip
        if not valid:
            raise ValueError("bad header fields")
        return cls(sender, recipient, key_id, prekey, session, ephemeral, aead, signature,
                   counter, kind, time_ms)  # fmt: skip


def _bytes(value: object, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


@dataclass(frozen=True)
class Opened:
    sender: bytes
    header: Header
    payload: bytes


def _info(network: str, opening: bytes) -> bytes:
    return _CONTEXT + network.encode() + b"\x00" + opening


def _session_key(ephemeral: x25519.X25519PrivateKey | x25519.X25519PublicKey,
                 prekey: x25519.X25519PrivateKey | x25519.X25519PublicKey,
                 static: x25519.X25519PrivateKey | x25519.X25519PublicKey,
                 aead: int, info: bytes) -> Aead:  # fmt: skip
    """Both sides of the key agreement: the sender passes (e, prekey public, static public),
    the receiver (e public, prekey private, static private)."""
    if isinstance(ephemeral, x25519.X25519PrivateKey):
        assert isinstance(prekey, x25519.X25519PublicKey)
        assert isinstance(static, x25519.X25519PublicKey)
        shared = ephemeral.exchange(prekey) + ephemeral.exchange(static)
    else:
        assert isinstance(prekey, x25519.X25519PrivateKey)
        assert isinstance(static, x25519.X25519PrivateKey)
        shared = prekey.exchange(ephemeral) + static.exchange(ephemeral)
    key = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(shared)
    return aeads.cipher(aead, key)


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


@dataclass
class _Outbound:
    prekey: bytes
    key_id: bytes
    head: list[Any]  # the header's fixed fields: version, opening, signature
    aead: Aead
    started: float
    counter: int = 0


class Sealer:
    """Seals one node's messages, one session per recipient; session numbers come from a
    durable counter (never reused, also after a crash); `aead` is the sessions' cipher, by
    default the faster one on this machine."""

    def __init__(self, keys: NodeKeys, network: str, numbers: SequenceCounter, *,
                 rekey_messages: int = REKEY_MESSAGES, rekey_seconds: float = REKEY_SECONDS,
                 aead: int | None = None) -> None:  # fmt: skip
        self._keys = keys
        self.aead = aeads.fastest() if aead is None else aead
        self._network = network
        self._numbers = numbers
        self._rekey_messages = rekey_messages
        self._rekey_seconds = rekey_seconds
        self._sessions: dict[bytes, _Outbound] = {}
        self._lock = threading.Lock()  # two threads may seal to one peer: one counter each
        self.sessions_opened = 0

    def seal(self, payload: bytes, recipient: Certificate, prekey: bytes, kind: int,
             now: float) -> bytes:  # fmt: skip
        """Raises SealError when the recipient's announced prekey is unusable."""
        with self._lock:
            session = self._session(recipient, prekey, now)
            counter = session.counter
            session.counter += 1
        header = pack([*session.head, counter, kind, int(now * 1000)])
        ciphertext = session.aead.encrypt(_nonce(counter), payload, header)
        return pack_with_tail([VERSION, header], ciphertext)

    def _session(self, recipient: Certificate, prekey: bytes, now: float) -> _Outbound:
        session = self._sessions.get(recipient.node_id)
        current = (
            session is not None and session.prekey == prekey
            and session.key_id == recipient.encryption_key_id
            and session.counter < self._rekey_messages
            and now - session.started < self._rekey_seconds
        )  # fmt: skip
        if session is None or not current:
            session = self._sessions[recipient.node_id] = self._start(recipient, prekey, now)
        return session

    def _start(self, recipient: Certificate, prekey: bytes, now: float) -> _Outbound:
        ephemeral = x25519.X25519PrivateKey.generate()
        fields = [self._keys.node_id, recipient.node_id, recipient.encryption_key_id, prekey,
                  self._numbers.next(), raw_public(ephemeral.public_key()), self.aead]  # fmt: skip
        info = _info(self._network, pack(fields))
        try:
            aead = _session_key(ephemeral, x25519.X25519PublicKey.from_public_bytes(prekey),
                                x25519.X25519PublicKey.from_public_bytes(
                                    recipient.encryption_public), self.aead, info)  # fmt: skip
        except ValueError as error:  # a low-order point: no shared secret
            raise SealError(f"recipient {recipient.node_id.hex()}: {error}") from None
        signature = self._keys.signing.sign(info)
        self.sessions_opened += 1
        return _Outbound(prekey, recipient.encryption_key_id,
                         [VERSION, *fields, signature], aead, now)  # fmt: skip


@dataclass
class _Inbound:
    fixed: tuple[bytes, bytes, bytes, bytes, int, bytes, int]  # Header.fixed
    prekey: bytes
    certificate: Certificate
    aead: Aead
    window: ReplayWindow


class Opener:
    """Opens messages addressed to one node; rejections are counted in `rejected` by reason."""

    def __init__(
        self,
        keys: NodeKeys,
        trust: TrustStore,
        certificates: CertificateLookup,
        prekeys: Prekeys,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_skew: float = DEFAULT_MAX_SKEW,
    ) -> None:
        self._keys = keys
        self._trust = trust
        self._certificates = certificates
        self._prekeys = prekeys
        self._max_bytes = max_bytes
        self._max_skew = max_skew
        self._sessions: dict[tuple[bytes, int], _Inbound] = {}
        self._held: dict[bytes, list[int]] = {}  # per sender, its sessions held, oldest first
        self._floor: dict[bytes, int] = {}  # per sender, the lowest session still acceptable
        self._lock = threading.Lock()
        self.rejected: Counter[str] = Counter()
        self.sessions_opened = 0

    def open(self, data: bytes, now: float) -> Opened:
        try:
            with self._lock:
                return self._open(data, now)
        except Rejection as reject:
            self.rejected[reject.reason] += 1
            raise EnvelopeError() from None

    def _open(self, data: bytes, now: float) -> Opened:
        if len(data) > self._max_bytes:
            raise Rejection("oversized")
        try:
            # The ciphertext stays a view into `data`: a model-sized copy saved.
            (version, header_bytes), ciphertext = unpack_with_tail(
                data, head=2, max_size=self._max_bytes
            )
            if not whole(version, VERSION, VERSION) or not isinstance(header_bytes, bytes):
                raise ValueError("version")
            header = Header.decode(header_bytes)
        except (ValueError, TypeError):
            raise Rejection("malformed") from None
        if header.recipient != self._keys.node_id:
            raise Rejection("wrong_recipient")
        if abs(header.time_ms / 1000 - now) > self._max_skew:
            raise Rejection("clock_skew")
        if self._prekeys.private(header.prekey) is None:
            raise Rejection("unknown_prekey")  # an earlier run's, or rotated out
        cached = self._sessions.get((header.sender, header.session))
        fits = cached is not None and cached.fixed == header.fixed
        session = cached if cached is not None and fits else self._establish(header)
        new = session is not cached
        try:
            self._trust.check(session.certificate, now)
        except CertificateError as error:  # revoked, expired, or another network's
            raise Rejection(f"certificate_{error.reason}") from None
        if not session.window.is_fresh(header.counter):
            raise Rejection("replay")
        try:
            payload = session.aead.decrypt(_nonce(header.counter), ciphertext, header_bytes)
        except InvalidTag:
            raise Rejection("decrypt") from None
        session.window.commit(header.counter)
        if new:
            self._remember(header.sender, header.session, session)
        return Opened(header.sender, header, payload)

    def _establish(self, header: Header) -> _Inbound:
        """Check a session's opening and derive its key: once per session."""
        held = self._held.get(header.sender, [])
        if header.session < self._floor.get(header.sender, 0) or (
            len(held) >= SESSIONS_PER_SENDER and header.session < held[0]
        ):
            raise Rejection("superseded")  # older than the sessions this sender moved on to
        if (header.sender, header.session) in self._sessions:
            raise Rejection("reopened")  # same number, another key: a forgery or a replay
        static = self._keys.decryption_keys().get(header.recipient_key_id)
        if static is None:
            raise Rejection("unknown_key")
        cert = self._certificates(header.sender)
        if cert is None:
            raise Rejection("unknown_sender")
        info = _info(self._trust.network, header.opening())
        try:
            public = ed25519.Ed25519PublicKey.from_public_bytes(cert.signing_public)
            public.verify(header.signature, info)
        except (InvalidSignature, ValueError):
            raise Rejection("signature") from None
        prekey = self._prekeys.private(header.prekey)
        assert prekey is not None  # checked by the caller
        try:
            ephemeral = x25519.X25519PublicKey.from_public_bytes(header.ephemeral)
            aead = _session_key(ephemeral, prekey, static, header.aead, info)
        except ValueError:  # a low-order point, signed by an admitted peer
            raise Rejection("key_agreement") from None
        return _Inbound(header.fixed, header.prekey, cert, aead, ReplayWindow())

    def _remember(self, sender: bytes, number: int, session: _Inbound) -> None:
        """Keep a sender's newest sessions; older ones are refused from now on."""
        self.sessions_opened += 1
        self._sessions[(sender, number)] = session
        held = self._held.setdefault(sender, [])
        held.append(number)
        held.sort()
        while len(held) > SESSIONS_PER_SENDER:
            oldest = held.pop(0)
            del self._sessions[(sender, oldest)]
            self._floor[sender] = max(self._floor.get(sender, 0), oldest + 1)
        self._forget_expired()

    def _forget_expired(self) -> None:
        """Drop the keys of sessions whose prekey this node no longer holds (forward secrecy)."""
        for (sender, number), session in list(self._sessions.items()):
            if self._prekeys.private(session.prekey) is None:
                del self._sessions[(sender, number)]
                self._held[sender].remove(number)
