"""The network authority: an offline CA key that issues node certificates and revokes them.

Folder layout: ca.key (0600), ca.pub.json (network name and CA public key, handed to every
node), serial (last serial issued), crl.bin (the current signed revocation list), issued.jsonl
(one line per certificate issued).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from gossiprec.crypto.catalogue import CATALOGUE_FILE, Entry, SignedCatalogue
from gossiprec.crypto.certificate import Certificate, RevocationList
from gossiprec.crypto.errors import CertificateError, KeyFileError
from gossiprec.crypto.files import write_atomic
from gossiprec.crypto.keys import load_signing_key, node_id_of, private_pem, raw_public
from gossiprec.crypto.trust import TrustStore

CA_KEY_FILE = "ca.key"
CA_PUBLIC_FILE = "ca.pub.json"
SERIAL_FILE = "serial"
CRL_FILE = "crl.bin"
LOG_FILE = "issued.jsonl"


@dataclass(frozen=True)
class Authority:
    network: str
    key: ed25519.Ed25519PrivateKey
    folder: Path

    @property
    def public(self) -> bytes:
        return raw_public(self.key.public_key())

    @classmethod
    def create(cls, folder: Path, network: str) -> Authority:
        if not network or not network.replace("-", "").replace("_", "").isalnum():
            raise CertificateError(
                f"network name {network!r} is invalid. Fix: use letters, digits, - and _ only."
            )
        if (folder / CA_KEY_FILE).exists():
            raise CertificateError(
                f"{folder / CA_KEY_FILE} already exists. Fix: choose another --dir; an "
                "authority is created once."
            )
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        authority = cls(network, ed25519.Ed25519PrivateKey.generate(), folder)
        write_atomic(folder / CA_KEY_FILE, private_pem(authority.key), private=True)
        anchor = {"network": network, "ca_public": authority.public.hex()}
        write_atomic(folder / CA_PUBLIC_FILE, json.dumps(anchor, indent=2).encode())
        write_atomic(folder / SERIAL_FILE, b"0")
        return authority

    @classmethod
    def load(cls, folder: Path) -> Authority:
        if not (folder / CA_PUBLIC_FILE).exists():
            raise KeyFileError(f"no authority in {folder}. Fix: run `gossiprec ca init` first.")
        anchor = json.loads((folder / CA_PUBLIC_FILE).read_text())
        return cls(str(anchor["network"]), load_signing_key(folder / CA_KEY_FILE), folder)

    def trust_store(self) -> TrustStore:
        return TrustStore(self.network, self.public, self.revocation_list())

    def issue(
        self, signing_public: bytes, encryption_public: bytes, not_before: int, not_after: int
    ) -> Certificate:
        serial = int((self.folder / SERIAL_FILE).read_text()) + 1
        write_atomic(self.folder / SERIAL_FILE, str(serial).encode())  # never reuse a serial
        cert = Certificate(
            self.network,
            node_id_of(signing_public),
            signing_public,
            encryption_public,
            not_before,
            not_after,
            serial,
        ).signed_by(self.key)
        entry = {"serial": serial, "node_id": cert.node_id.hex(), "not_after": not_after}
        with (self.folder / LOG_FILE).open("a") as log:
            log.write(json.dumps(entry) + "\n")
        return cert

    def revocation_list(self) -> RevocationList:
        path = self.folder / CRL_FILE
        if path.exists():
            return RevocationList.decode(path.read_bytes())
        return RevocationList(self.network, 0, 0, frozenset()).signed_by(self.key)

    def revoke(self, serials: set[int], now: int) -> RevocationList:
        current = self.revocation_list()
        crl = RevocationList(
            self.network, current.version + 1, now, current.revoked | frozenset(serials)
        ).signed_by(self.key)
        write_atomic(self.folder / CRL_FILE, crl.encode())
        return crl

    def catalogue(self) -> SignedCatalogue:
        path = self.folder / CATALOGUE_FILE
        if path.exists():
            return SignedCatalogue.decode(path.read_bytes())
        return SignedCatalogue(self.network, 0, 0, ()).signed_by(self.key)

    def add_to_catalogue(self, entries: list[Entry], now: int) -> SignedCatalogue:
        """The next catalogue version, signed and kept: these entries added or updated."""
        catalogue = self.catalogue().with_entries(entries, now).signed_by(self.key)
        write_atomic(self.folder / CATALOGUE_FILE, catalogue.encode())
        return catalogue

    def serial_of(self, node_id_hex: str) -> set[int]:
        """Every serial ever issued to a node id (for `ca revoke --node-id`)."""
        path = self.folder / LOG_FILE
        if not path.exists():
            return set()
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {int(e["serial"]) for e in lines if e["node_id"] == node_id_hex}
