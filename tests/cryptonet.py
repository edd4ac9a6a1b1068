"""A small admitted network for crypto tests: an authority and nodes with real keys and certs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.certificate import Certificate
from gossiprec.crypto.envelope import DEFAULT_MAX_BYTES, Opener, Sealer
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.prekey import Prekeys
from gossiprec.crypto.replay import SequenceCounter
from gossiprec.crypto.trust import TrustStore


@dataclass
class Member:
    keys: NodeKeys
    cert: Certificate
    folder: Path
    # This run's prekeys; `restart` gives new ones, as a restarted node has.
    prekeys: Prekeys = field(default_factory=lambda: Prekeys(time.time()))

    @property
    def prekey(self) -> bytes:
        return self.prekeys.current(time.time())

    def restart(self) -> None:
        self.prekeys = Prekeys(time.time())


@dataclass
class Network:
    authority: Authority
    folder: Path
    members: dict[str, Member] = field(default_factory=dict)
    aead: int | None = None  # the sessions' cipher (crypto/aead.py); None: this machine's pick

    def add(self, name: str, *, not_after: int | None = None) -> Member:
        keys = NodeKeys.generate()
        now = int(time.time())
        cert = self.authority.issue(
            keys.signing_public,
            keys.encryption_public,
            now - 60,
            not_after if not_after is not None else now + 86_400,
        )
        member = Member(keys, cert, self.folder / name)
        member.folder.mkdir(parents=True)
        keys.save(member.folder)
        self.members[name] = member
        return member

    def directory(self) -> dict[bytes, Certificate]:
        return {m.cert.node_id: m.cert for m in self.members.values()}

    def sealer(self, name: str) -> Sealer:
        member = self.members[name]
        counter = SequenceCounter(member.folder / "seq", block=16)
        return Sealer(member.keys, self.authority.network, counter, aead=self.aead)

    def opener(self, name: str, trust: TrustStore | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES) -> Opener:  # fmt: skip
        member = self.members[name]
        return Opener(member.keys, trust or self.authority.trust_store(), self.directory().get,
                      member.prekeys, max_bytes=max_bytes)  # fmt: skip

    def seal(self, sealer: Sealer, payload: bytes, to: str, now: float, kind: int = 1) -> bytes:
        recipient = self.members[to]
        return sealer.seal(payload, recipient.cert, recipient.prekey, kind, now)


def make_network(folder: Path, name: str = "demo", nodes: tuple[str, ...] = ("a", "b", "c"),
                 aead: int | None = None) -> Network:  # fmt: skip
    network = Network(Authority.create(folder / f"ca-{name}", name), folder, aead=aead)
    for node in nodes:
        network.add(node)
    return network
