"""Node certificates and revocation lists, msgpack-encoded and Ed25519-signed by the network CA."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from gossiprec.crypto.errors import CertificateError
from gossiprec.crypto.keys import NODE_ID_BYTES, key_id_of, node_id_of
from gossiprec.crypto.wire import pack, unpack, whole

CERT_VERSION = 1
CRL_VERSION = 1
MAX_CERT_BYTES = 1_024
MAX_CRL_BYTES = 1_048_576
_CERT_CONTEXT = b"gossiprec/certificate/v1\x00"
_CRL_CONTEXT = b"gossiprec/crl/v1\x00"


@dataclass(frozen=True)
class Certificate:
    network: str
    node_id: bytes
    signing_public: bytes
    encryption_public: bytes
    not_before: int  # unix seconds
    not_after: int
    serial: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        if len(self.node_id) != NODE_ID_BYTES or node_id_of(self.signing_public) != self.node_id:
            raise CertificateError("certificate node_id does not match its signing key")
        if len(self.signing_public) != 32 or len(self.encryption_public) != 32:
            raise CertificateError("certificate public keys must be 32 bytes")
        if not self.network or self.not_after <= self.not_before or self.serial < 0:
            raise CertificateError(
                "certificate has an empty network, an empty validity or a negative serial"
            )

    # Cached: a sender looks its recipient's key id up, and a receiver checks its sender's
    # certificate, on every message.
    @functools.cached_property
    def encryption_key_id(self) -> bytes:
        return key_id_of(self.encryption_public)

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of the encoded certificate, signature included."""
        return hashlib.sha256(self.encode()).digest()

    def body(self) -> bytes:
        return pack(
            [
                CERT_VERSION,
                self.network,
                self.node_id,
                self.signing_public,
                self.encryption_public,
                self.not_before,
                self.not_after,
                self.serial,
            ]
        )

    def signed_by(self, ca: ed25519.Ed25519PrivateKey) -> Certificate:
        return _replace_signature(self, ca.sign(_CERT_CONTEXT + self.body()))

    def encode(self) -> bytes:
        return pack([self.body(), self.signature])

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        try:
            body, signature = unpack(data, max_size=MAX_CERT_BYTES)
            fields = unpack(body, max_size=MAX_CERT_BYTES)
            version, network, node_id, sig_pub, enc_pub, not_before, not_after, serial = fields
            if not whole(version, CERT_VERSION, CERT_VERSION) or not isinstance(signature, bytes):
                raise ValueError("unsupported certificate version")
            if not (isinstance(network, str) and all(isinstance(k, bytes) for k in (
                    node_id, sig_pub, enc_pub)) and whole(not_before) and whole(not_after)
                    and whole(serial)):  # fmt: skip
                raise ValueError("fields of the wrong type or out of range")
            return cls(network, node_id, sig_pub, enc_pub, not_before, not_after, serial, signature)
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"malformed certificate: {exc}") from exc

    def verify(self, ca_public: ed25519.Ed25519PublicKey) -> None:
        try:
            ca_public.verify(self.signature, _CERT_CONTEXT + self.body())
        except InvalidSignature:
            raise CertificateError("certificate signature does not verify") from None


def _replace_signature(cert: Certificate, signature: bytes) -> Certificate:
    return Certificate(
        cert.network,
        cert.node_id,
        cert.signing_public,
        cert.encryption_public,
        cert.not_before,
        cert.not_after,
        cert.serial,
        signature,
    )


@dataclass(frozen=True)
class RevocationList:
    """Revoked certificate serials. A node only ever moves to a higher version."""

    network: str
    version: int
    issued_at: int
    revoked: frozenset[int]
    signature: bytes = b""

    def body(self) -> bytes:
        return pack([CRL_VERSION, self.network, self.version, self.issued_at, sorted(self.revoked)])

    def signed_by(self, ca: ed25519.Ed25519PrivateKey) -> RevocationList:
        signature = ca.sign(_CRL_CONTEXT + self.body())
        return RevocationList(self.network, self.version, self.issued_at, self.revoked, signature)

    def encode(self) -> bytes:
        return pack([self.body(), self.signature])

    @classmethod
    def decode(cls, data: bytes) -> RevocationList:
        try:
            body, signature = unpack(data, max_size=MAX_CRL_BYTES)
            version, network, number, issued_at, revoked = unpack(body, max_size=MAX_CRL_BYTES)
            if not whole(version, CRL_VERSION, CRL_VERSION) or not isinstance(signature, bytes):
                raise ValueError("unsupported revocation list version")
            if not (isinstance(network, str) and whole(number) and whole(issued_at)
                    and isinstance(revoked, list) and all(whole(s) for s in revoked)):  # fmt: skip
                raise ValueError("fields of the wrong type or out of range")
            return cls(network, number, issued_at, frozenset(revoked), signature)
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"malformed revocation list: {exc}") from exc

    def verify(self, ca_public: ed25519.Ed25519PublicKey) -> None:
        try:
            ca_public.verify(self.signature, _CRL_CONTEXT + self.body())
        except InvalidSignature:
            raise CertificateError("revocation list signature does not verify") from None
