"""Node identity: an Ed25519 signing key and X25519 encryption keys, stored as 0600 files.

The node_id is the first 16 bytes of SHA-256 over the signing public key, so an id cannot be
claimed without the key. Encryption keys rotate without downtime: the previous key keeps
opening messages sealed to it until the node retires it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from gossiprec.crypto.errors import KeyFileError
from gossiprec.crypto.files import read_private, write_atomic

NODE_ID_BYTES = 16
KEY_ID_BYTES = 4

SIGNING_FILE = "signing.key"
ENCRYPTION_FILE = "encryption.key"
PREVIOUS_ENCRYPTION_FILE = "encryption.prev.key"
PUBLIC_FILE = "node.pub.json"


def node_id_of(signing_public: bytes) -> bytes:
    return hashlib.sha256(b"gossiprec/node-id/v1" + signing_public).digest()[:NODE_ID_BYTES]


def key_id_of(encryption_public: bytes) -> bytes:
    """Short id of an encryption key, so a sealed message says which of the recipient's keys."""
    return hashlib.sha256(b"gossiprec/key-id/v1" + encryption_public).digest()[:KEY_ID_BYTES]


def raw_public(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_pem(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_pem(path: Path) -> PrivateKeyTypes:
    data = read_private(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"{path} is not a PEM private key. Fix: restore it from backup, or run "
            "`gossiprec keys init` for a new identity (which needs a new certificate)."
        ) from exc


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    key = _load_pem(path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, expected an Ed25519 key")
    return key


def load_encryption_key(path: Path) -> x25519.X25519PrivateKey:
    key = _load_pem(path)
    if not isinstance(key, x25519.X25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, expected an X25519 key")
    return key


@dataclass(frozen=True)
class NodeKeys:
    signing: ed25519.Ed25519PrivateKey
    encryption: x25519.X25519PrivateKey
    previous_encryption: x25519.X25519PrivateKey | None = None

    @classmethod
    def generate(cls) -> NodeKeys:
        return cls(ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    # Cached: every message asks for them, and the keys of an instance never change.
    @functools.cached_property
    def signing_public(self) -> bytes:
        return raw_public(self.signing.public_key())

    @functools.cached_property
    def encryption_public(self) -> bytes:
        return raw_public(self.encryption.public_key())

    @functools.cached_property
    def node_id(self) -> bytes:
        return node_id_of(self.signing_public)

    @functools.cached_property
    def _decryption_keys(self) -> dict[bytes, x25519.X25519PrivateKey]:
        keys = {key_id_of(self.encryption_public): self.encryption}
        if self.previous_encryption is not None:
            previous = raw_public(self.previous_encryption.public_key())
            keys[key_id_of(previous)] = self.previous_encryption
        return keys

    def decryption_keys(self) -> dict[bytes, x25519.X25519PrivateKey]:
        """Encryption private keys by key id: the current one and, during rotation, the previous."""
        return dict(self._decryption_keys)

    def rotated(self) -> NodeKeys:
        """A new encryption key; the current one becomes previous and keeps working."""
        return NodeKeys(self.signing, x25519.X25519PrivateKey.generate(), self.encryption)

    def retired(self) -> NodeKeys:
        """Drop the previous encryption key once every peer has the new certificate."""
        return NodeKeys(self.signing, self.encryption, None)

    def public_record(self) -> dict[str, str]:
        return {
            "node_id": self.node_id.hex(),
            "signing_public": self.signing_public.hex(),
            "encryption_public": self.encryption_public.hex(),
        }

    # -- files -----------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        write_atomic(folder / SIGNING_FILE, private_pem(self.signing), private=True)
        write_atomic(folder / ENCRYPTION_FILE, private_pem(self.encryption), private=True)
        previous = folder / PREVIOUS_ENCRYPTION_FILE
        if self.previous_encryption is not None:
            write_atomic(previous, private_pem(self.previous_encryption), private=True)
        elif previous.exists():
            previous.unlink()
        record = json.dumps(self.public_record(), indent=2).encode()
        write_atomic(folder / PUBLIC_FILE, record)

    @classmethod
    def load(cls, folder: Path) -> NodeKeys:
        previous_path = folder / PREVIOUS_ENCRYPTION_FILE
        return cls(
            load_signing_key(folder / SIGNING_FILE),
            load_encryption_key(folder / ENCRYPTION_FILE),
            load_encryption_key(previous_path) if previous_path.exists() else None,
        )

    def __repr__(self) -> str:  # never print key material
        return f"NodeKeys(node_id={self.node_id.hex()})"
