"""Signed broadcast statements (presence beacons): readable by all, forgeable by none.

Wire form (msgpack): [1, certificate, body, time_ms, signature], the signature by the
certificate's signing key over context || network || certificate || body || time_ms.
Receivers check the certificate against their trust store and the time against `max_age`, so
a replayed old beacon cannot keep a dead node looking alive for long.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from gossiprec.crypto.certificate import Certificate
from gossiprec.crypto.errors import CertificateError, EnvelopeError, Rejection
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.trust import TrustStore
from gossiprec.crypto.wire import pack, unpack, whole

VERSION = 1
MAX_STATEMENT_BYTES = 8_192
_CONTEXT = b"gossiprec/statement/v1\x00"


@dataclass(frozen=True)
class Statement:
    certificate: Certificate
    body: bytes
    time: float


def _signed(network: str, cert: bytes, body: bytes, time_ms: int) -> bytes:
    return _CONTEXT + network.encode() + b"\x00" + pack([cert, body, time_ms])


def sign_statement(keys: NodeKeys, certificate: Certificate, body: bytes, now: float) -> bytes:
    cert = certificate.encode()
    time_ms = int(now * 1000)
    signature = keys.signing.sign(_signed(certificate.network, cert, body, time_ms))
    return pack([VERSION, cert, body, time_ms, signature])


class StatementVerifier:
    """Verifies statements; rejections raise EnvelopeError and are counted by reason."""

    def __init__(self, trust: TrustStore, max_age: float, max_skew: float = 300.0) -> None:
        self._trust = trust
        self._max_age = max_age
        self._max_skew = max_skew
        self.rejected: Counter[str] = Counter()

    def verify(self, data: bytes, now: float, *, max_age: float | None = None) -> Statement:
        """The statement, if validly signed by an admitted node and at most `max_age` seconds old
        (default: the verifier's); a caller that proves freshness otherwise may pass inf."""
        try:
            return self._verify(data, now, self._max_age if max_age is None else max_age)
        except Rejection as reject:
            self.rejected[reject.reason] += 1
            raise EnvelopeError() from None

    def _verify(self, data: bytes, now: float, max_age: float) -> Statement:
        try:
            version, cert_bytes, body, time_ms, signature = unpack(
                data, max_size=MAX_STATEMENT_BYTES
            )
            if not whole(version, VERSION, VERSION) or not all(
                isinstance(x, bytes) for x in (cert_bytes, body, signature)
            ):
                raise ValueError("fields")
            if not whole(time_ms):
                raise ValueError("time")
            cert = Certificate.decode(cert_bytes)
        except (ValueError, TypeError, CertificateError):
            raise Rejection("malformed") from None
        age = now - time_ms / 1000
        if age > max_age or age < -self._max_skew:
            raise Rejection("stale")
        try:
            self._trust.check(cert, now)
        except CertificateError as error:  # revoked, expired, or another network's
            raise Rejection(f"certificate_{error.reason}") from None
        try:
            public = ed25519.Ed25519PublicKey.from_public_bytes(cert.signing_public)
            public.verify(signature, _signed(self._trust.network, cert_bytes, body, time_ms))
        except (InvalidSignature, ValueError):
            raise Rejection("signature") from None
        return Statement(cert, body, time_ms / 1000)
