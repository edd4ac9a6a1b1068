"""What a node trusts: its network's CA public key and the newest revocation list it has seen."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from gossiprec.crypto.certificate import Certificate, RevocationList
from gossiprec.crypto.errors import CertificateError
from gossiprec.crypto.files import write_atomic

ANCHOR_FILE = "network.json"
CRL_FILE = "crl.bin"


class TrustStore:
    """Checks certificates against one network's CA, validity window and revocation list."""

    def __init__(self, network: str, ca_public: bytes, crl: RevocationList | None = None) -> None:
        self.network = network
        self.ca_public = ca_public
        self._ca_key = ed25519.Ed25519PublicKey.from_public_bytes(ca_public)
        self._crl = RevocationList(network, 0, 0, frozenset())
        self._verified: set[bytes] = set()  # digests of certificates whose signature verified
        self._lock = threading.Lock()
        if crl is not None:
            self.update_crl(crl)

    @property
    def crl(self) -> RevocationList:
        return self._crl

    def check(self, cert: Certificate, now: float) -> None:
        """Raise CertificateError unless cert is this network's, signed, current and unrevoked."""
        if cert.network != self.network:
            raise CertificateError(f"certificate is for network {cert.network!r}", "foreign")
        digest = cert.digest
        if digest not in self._verified:
            try:
                cert.verify(self._ca_key)
            except CertificateError as error:  # another CA's, or forged
                raise CertificateError(str(error), "foreign") from None
            with self._lock:
                self._verified.add(digest)
        if not cert.not_before <= now <= cert.not_after:
            raise CertificateError("certificate is outside its validity window", "expired")
        if cert.serial in self._crl.revoked:
            raise CertificateError(f"certificate serial {cert.serial} is revoked", "revoked")

    def update_crl(self, crl: RevocationList) -> bool:
        """Adopt a newer, validly signed list; returns False for one that is not newer."""
        if crl.network != self.network:
            raise CertificateError(f"revocation list is for network {crl.network!r}")
        crl.verify(self._ca_key)
        with self._lock:
            if crl.version <= self._crl.version:
                return False
            self._crl = crl
        return True

    # -- files -----------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        anchor = {"network": self.network, "ca_public": self.ca_public.hex()}
        write_atomic(folder / ANCHOR_FILE, json.dumps(anchor, indent=2).encode())
        if self._crl.version:
            write_atomic(folder / CRL_FILE, self._crl.encode())

    @classmethod
    def load(cls, folder: Path) -> TrustStore:
        path = folder / ANCHOR_FILE
        try:
            anchor = json.loads(path.read_text())
            store = cls(str(anchor["network"]), bytes.fromhex(anchor["ca_public"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CertificateError(
                f"{path} is missing or invalid ({exc}). Fix: copy the network's ca.pub.json "
                "there, or re-run `gossiprec ca issue` for this node."
            ) from exc
        if (folder / CRL_FILE).exists():
            store.update_crl(RevocationList.decode((folder / CRL_FILE).read_bytes()))
        return store
