"""The network's item catalogue, signed by its authority: which item ids exist and their
content features, so a new item reaches every node (and its recommendations) while the network
runs, from the one party that owns the catalogue.

Like the revocation list: versions only go up, the broker only relays (retained), a forged or
older catalogue is refused by every node. Each version is whole (ids with their feature names);
the authority appends to and edits the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from gossiprec.crypto.errors import CertificateError
from gossiprec.crypto.wire import pack, unpack, whole

CATALOGUE_FILE = "catalogue.bin"  # where an authority and a node keep the newest version
CATALOGUE_VERSION = 1
MAX_CATALOGUE_BYTES = 32 * 1_048_576
MAX_ENTRY_ID = 200  # characters, as node/catalogue.py allows
MAX_FEATURES = 64  # per item, as node/features.py keeps
MAX_FEATURE = 256  # characters of one feature name
_CONTEXT = b"gossiprec/catalogue/v1\x00"

Entry = tuple[str, tuple[str, ...]]  # item id, its feature names


@dataclass(frozen=True)
class SignedCatalogue:
    network: str
    version: int
    issued_at: int
    entries: tuple[Entry, ...]
    signature: bytes = b""

    def body(self) -> bytes:
        listed = [[item, list(features)] for item, features in self.entries]
        return pack([CATALOGUE_VERSION, self.network, self.version, self.issued_at, listed])

    def signed_by(self, ca: ed25519.Ed25519PrivateKey) -> SignedCatalogue:
        signature = ca.sign(_CONTEXT + self.body())
        return SignedCatalogue(self.network, self.version, self.issued_at, self.entries, signature)

    def encode(self) -> bytes:
        return pack([self.body(), self.signature])

    def verify(self, ca_public: bytes, network: str) -> None:
        if self.network != network:
            raise CertificateError(f"a catalogue of network {self.network!r}, not {network!r}")
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(ca_public)
            key.verify(self.signature, _CONTEXT + self.body())
        except InvalidSignature:
            raise CertificateError("catalogue signature does not verify") from None

    def with_entries(self, entries: list[Entry], now: int) -> SignedCatalogue:
        """The next version: these entries added, or replacing the features of existing ids."""
        merged = dict(self.entries)
        merged.update(entries)
        return SignedCatalogue(self.network, self.version + 1, now, tuple(merged.items()))

    @classmethod
    def decode(cls, data: bytes) -> SignedCatalogue:
        try:
            body, signature = unpack(data, max_size=MAX_CATALOGUE_BYTES)
            fields = unpack(body, max_size=MAX_CATALOGUE_BYTES)
            version, network, number, issued_at, listed = fields
            if not whole(version, CATALOGUE_VERSION, CATALOGUE_VERSION):
                raise ValueError("unsupported catalogue version")
            if not (isinstance(signature, bytes) and isinstance(network, str) and whole(number)
                    and whole(issued_at) and isinstance(listed, list)):  # fmt: skip
                raise ValueError("fields of the wrong type or out of range")
            return cls(network, number, issued_at, tuple(_entry(e) for e in listed), signature)
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"malformed catalogue: {exc}") from exc


def _entry(value: object) -> Entry:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and 0 < len(value[0]) <= MAX_ENTRY_ID and isinstance(value[1], list)
            and len(value[1]) <= MAX_FEATURES
            and all(isinstance(f, str) and 0 < len(f) <= MAX_FEATURE
                    for f in value[1])):  # fmt: skip
        raise ValueError("an entry that is not [id, [feature, ...]] within the limits")
    return value[0], tuple(value[1])
