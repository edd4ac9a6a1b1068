"""A node's identity on disk: keys, its certificate and the network's trust anchor, together.

The command line (`gossiprec keys`, `ca`, `node init`) and the daemon both go through here, so
a folder that one writes the other can read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.certificate import Certificate
from gossiprec.crypto.errors import CertificateError
from gossiprec.crypto.files import write_atomic
from gossiprec.crypto.keys import PUBLIC_FILE, SIGNING_FILE, NodeKeys
from gossiprec.crypto.trust import TrustStore
from gossiprec.gossip.driver import Identity
from gossiprec.node.config import config_text, load_config
from gossiprec.node.errors import IdentityError

CERT_FILE = "node.cert"
CONFIG_FILE = "node.toml"


def init_node(folder: Path, broker: str, n_items: int, authority: Authority | None = None,
              days: float = 365.0) -> tuple[NodeKeys, Certificate | None]:  # fmt: skip
    """A node folder ready to run: node.toml, keys (mode 0600) and, with `authority`, a
    certificate. Keys already there (`gossiprec keys init`) are kept, and so is a certificate
    that matches them."""
    config_path = folder / CONFIG_FILE
    if config_path.exists():
        raise IdentityError(f"{config_path} already exists. Fix: choose another --dir, or edit "
                            "that node.toml.")  # fmt: skip
    if (folder / SIGNING_FILE).exists():
        keys = NodeKeys.load(folder)
    else:
        keys = NodeKeys.generate()
        keys.save(folder)
    write_atomic(config_path, config_text(folder.resolve(), broker, n_items).encode())
    load_config(config_path, environ={})  # the file we wrote must load
    issued = None
    if authority is not None and not _certified(folder, keys):
        issued = issue_certificate(authority, folder, days)
    return keys, issued


def _certified(folder: Path, keys: NodeKeys) -> bool:
    try:
        cert = Certificate.decode((folder / CERT_FILE).read_bytes())
    except (OSError, CertificateError):
        return False
    return cert.node_id == keys.node_id and cert.encryption_public == keys.encryption_public


def issue_certificate(authority: Authority, node_dir: Path, days: float) -> Certificate:
    """Certify the keys in NODE_DIR/node.pub.json; write the certificate and trust anchor there."""
    if not days > 0:
        raise IdentityError(f"a certificate needs a validity of > 0 days, got {days}")
    public_file = node_dir / PUBLIC_FILE
    try:
        record = json.loads(public_file.read_text())
        signing = bytes.fromhex(record["signing_public"])
        encryption = bytes.fromhex(record["encryption_public"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IdentityError(
            f"cannot read {public_file} ({exc}). Fix: run `gossiprec keys init --dir "
            f"{node_dir}` first."
        ) from exc
    now = int(time.time())
    cert = authority.issue(signing, encryption, now - 60, now + int(days * 86_400))
    write_atomic(node_dir / CERT_FILE, cert.encode())
    authority.trust_store().save(node_dir)
    return cert


def load_identity(folder: Path) -> Identity:
    """A node's keys, certificate and trust store, checked to belong together."""
    keys = NodeKeys.load(folder)
    try:
        cert = Certificate.decode((folder / CERT_FILE).read_bytes())
    except OSError as exc:
        raise IdentityError(
            f"{folder / CERT_FILE} is missing. Fix: run `gossiprec ca issue "
            f"--dir CA_DIR --node-dir {folder}`."
        ) from exc
    if cert.node_id != keys.node_id or cert.encryption_public != keys.encryption_public:
        raise IdentityError(
            f"{folder / CERT_FILE} does not match this node's keys. Fix: "
            "issue a new certificate after `keys init` or `keys rotate`."
        )
    return Identity(keys, cert, TrustStore.load(folder))
