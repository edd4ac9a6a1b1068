"""Sealed point-to-point envelopes: signed by the sender, encrypted to the recipient.

Wire form (msgpack): [1, header, ciphertext]
  header     = msgpack [version, sender_id, recipient_id, recipient_key_id, kind, seq, time_ms]
  ciphertext = HPKE(X25519, HKDF-SHA256, ChaCha20-Poly1305) to the recipient's key, with
               info = context || network || header, so the network and every header field are
               authenticated; a fresh ephemeral key per message gives forward secrecy.
  plaintext  = Ed25519 signature (64 bytes) || payload
  signature  = Ed25519 over context || network || header || SHA-256(payload)
Sign-then-encrypt: only the recipient learns who signed; the broker sees ids and sizes only.
Prehashing keeps the signature cost independent of the payload size.

`open` checks the cheap things first (size, framing, recipient, clock, certificate, replay) and
the expensive ones last. Every failure raises the same EnvelopeError; the reason is counted.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from gossiprec.crypto.certificate import Certificate
from gossiprec.crypto.errors import CertificateError, EnvelopeError, Rejection
from gossiprec.crypto.keys import KEY_ID_BYTES, NODE_ID_BYTES, NodeKeys
from gossiprec.crypto.replay import MAX_SEQ, ReplayGuard, SequenceCounter
from gossiprec.crypto.trust import TrustStore
from gossiprec.crypto.wire import pack, pack_with_tail, unpack, whole

VERSION = 1
SIGNATURE_BYTES = 64
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_SKEW = 300.0  # seconds of clock difference tolerated between nodes
_CONTEXT = b"gossiprec/envelope/v1\x00"
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)

CertificateLookup = Callable[[bytes], Certificate | None]


@dataclass(frozen=True)
class Header:
    sender: bytes
    recipient: bytes
    recipient_key_id: bytes
    kind: int
    seq: int
    time_ms: int

    def encode(self) -> bytes:
        return pack(
            [
                VERSION,
                self.sender,
                self.recipient,
                self.recipient_key_id,
                self.kind,
                self.seq,
                self.time_ms,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> Header:
        version, sender, recipient, key_id, kind, seq, time_ms = unpack(data, max_size=256)
        valid = (
            whole(version, VERSION, VERSION)
            and isinstance(sender, bytes) and len(sender) == NODE_ID_BYTES
            and isinstance(recipient, bytes) and len(recipient) == NODE_ID_BYTES
            and isinstance(key_id, bytes) and len(key_id) == KEY_ID_BYTES
            and whole(kind, 0, 255)
            and whole(seq, 0, MAX_SEQ)
            and whole(time_ms)
        )  # fmt: skip
        if not valid:
            raise ValueError("bad header fields")
        return cls(sender, recipient, key_id, kind, seq, time_ms)


@dataclass(frozen=True)
class Opened:
    sender: bytes
    header: Header
    payload: bytes


def _info(network: str, header: bytes) -> bytes:
    return _CONTEXT + network.encode() + b"\x00" + header


class Sealer:
    """Seals messages from one node; sequence numbers come from a durable counter."""

    def __init__(self, keys: NodeKeys, network: str, counter: SequenceCounter) -> None:
        self._keys = keys
        self._network = network
        self._counter = counter

    def seal(self, payload: bytes, recipient: Certificate, kind: int, now: float) -> bytes:
        header = Header(
            self._keys.node_id,
            recipient.node_id,
            recipient.encryption_key_id,
            kind,
            self._counter.next(),
            int(now * 1000),
        ).encode()
        info = _info(self._network, header)
        signature = self._keys.signing.sign(info + hashlib.sha256(payload).digest())
        public = x25519.X25519PublicKey.from_public_bytes(recipient.encryption_public)
        ciphertext = _SUITE.encrypt(signature + payload, public, info=info)
        return pack_with_tail([VERSION, header], ciphertext)


class Opener:
    """Opens messages addressed to one node; rejections are counted in `rejected` by reason."""

    def __init__(
        self,
        keys: NodeKeys,
        trust: TrustStore,
        certificates: CertificateLookup,
        replay: ReplayGuard,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_skew: float = DEFAULT_MAX_SKEW,
    ) -> None:
        self._keys = keys
        self._trust = trust
        self._certificates = certificates
        self._replay = replay
        self._max_bytes = max_bytes
        self._max_skew = max_skew
        self.rejected: Counter[str] = Counter()

    def open(self, data: bytes, now: float) -> Opened:
        try:
            return self._open(data, now)
        except Rejection as reject:
            self.rejected[reject.reason] += 1
            raise EnvelopeError() from None

    def _open(self, data: bytes, now: float) -> Opened:
        if len(data) > self._max_bytes:
            raise Rejection("oversized")
        try:
            version, header_bytes, ciphertext = unpack(data, max_size=self._max_bytes)
            if not whole(version, VERSION, VERSION) or not isinstance(header_bytes, bytes):
                raise ValueError("version")
            if not isinstance(ciphertext, bytes):
                raise ValueError("ciphertext")
            header = Header.decode(header_bytes)
        except (ValueError, TypeError):
            raise Rejection("malformed") from None
        if header.recipient != self._keys.node_id:
            raise Rejection("wrong_recipient")
        private = self._keys.decryption_keys().get(header.recipient_key_id)
        if private is None:
            raise Rejection("unknown_key")
        if abs(header.time_ms / 1000 - now) > self._max_skew:
            raise Rejection("clock_skew")
        cert = self._certificates(header.sender)
        if cert is None:
            raise Rejection("unknown_sender")
        try:
            self._trust.check(cert, now)
        except CertificateError as error:  # revoked, expired, or another network's
            raise Rejection(f"certificate_{error.reason}") from None
        if not self._replay.is_fresh(header.sender, header.seq):
            raise Rejection("replay")
        info = _info(self._trust.network, header_bytes)
        try:
            plaintext = _SUITE.decrypt(ciphertext, private, info=info)
        except (InvalidTag, ValueError):
            raise Rejection("decrypt") from None
        signature, payload = plaintext[:SIGNATURE_BYTES], plaintext[SIGNATURE_BYTES:]
        try:
            public = ed25519.Ed25519PublicKey.from_public_bytes(cert.signing_public)
            public.verify(signature, info + hashlib.sha256(payload).digest())
        except (InvalidSignature, ValueError):
            raise Rejection("signature") from None
        self._replay.commit(header.sender, header.seq)
        return Opened(header.sender, header, payload)
