"""Benchmark: fuzz every parser that reads bytes from outside, and count what goes wrong.

For each parser, inputs are mutations of valid seeds (bit flips, cut, inserted, deleted and
spliced bytes), random bytes and random msgpack values. What counts:
- a crash: any exception but the parser's documented one (or, for the control API, an
  "internal error" reply);
- a hang: one input that takes more than HANG_SECONDS;
- a wrong accept: an envelope that opens as something other than what was sealed, a decoded
  model with non-finite values or a shape other than the pinned one, a beacon or revocation
  list that verifies although its bytes were changed.
The same generators run, smaller, in tests/test_fuzz.py.
"""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.catalogue import SignedCatalogue
from gossiprec.crypto.certificate import RevocationList
from gossiprec.crypto.envelope import Opener, Sealer
from gossiprec.crypto.errors import CertificateError, EnvelopeError
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.prekey import Prekeys
from gossiprec.crypto.replay import SequenceCounter
from gossiprec.crypto.statement import StatementVerifier, sign_statement
from gossiprec.crypto.wire import pack, unpack
from gossiprec.gossip.codec import Codec, decode, encode
from gossiprec.gossip.driver import beacon_status
from gossiprec.gossip.errors import DecodeError
from gossiprec.gossip.messages import Kind, ModelUpdate
from gossiprec.node.config import load_config
from gossiprec.node.control import ControlServer
from gossiprec.node.errors import ConfigError, IngestError
from gossiprec.node.interactions_csv import read_csv
from gossiprec.node.node_api import parse_rows

HANG_SECONDS = 1.0
# Shares of the inputs: the cheap parsers get more.
WEIGHTS = {"envelope": 3, "codec": 4, "beacon": 3, "crl": 3, "catalogue": 2, "control": 3,
           "config": 1, "csv": 1}  # fmt: skip


@dataclass
class Tally:
    parser: str
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    wrong_accepts: int = 0
    accepted: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)  # the first few problems, for a report

    def problem(self, kind: str, detail: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 3:
            self.examples.append(f"{kind}: {detail}"[:300])


def mutations(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    """An endless stream of inputs near the seeds, and some far from them."""
    while True:
        choice = rng.random()
        if choice < 0.02:  # a seed as it is: the parser must still accept what is valid
            yield rng.choice(seeds)
            continue
        if choice < 0.05:
            yield rng.randbytes(rng.randrange(0, 512))
            continue
        if choice < 0.10:
            yield pack(random_value(rng, 3))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.choice((1, 1, 1, 2, 4, 16))):
            if not data:
                break
            at = rng.randrange(len(data))
            how = rng.randrange(5)
            if how == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif how == 1:
                data[at] = rng.randrange(256)
            elif how == 2:
                del data[at : at + rng.randrange(1, 9)]
            elif how == 3:
                data[at:at] = rng.randbytes(rng.randrange(1, 9))
            else:
                del data[at:]
        yield bytes(data)


def random_value(rng: random.Random, depth: int) -> Any:
    kinds: list[Callable[[], Any]] = [
        lambda: None, lambda: rng.random() < 0.5, lambda: rng.randrange(-(2**63), 2**64),
        lambda: rng.choice((math.inf, -math.inf, math.nan, 1e300, rng.random())),
        lambda: rng.randbytes(rng.randrange(0, 40)).decode("latin-1"),
        lambda: rng.randbytes(rng.randrange(0, 40)),
    ]  # fmt: skip
    if depth > 0:
        kinds += [
            lambda: [random_value(rng, depth - 1) for _ in range(rng.randrange(0, 6))],
            lambda: {
                str(rng.randrange(99)): random_value(rng, depth - 1)
                for _ in range(rng.randrange(0, 6))
            },
        ]
    return rng.choice(kinds)()


class Parsers:
    """Valid seeds and the parse call, with its documented error, for each parser."""

    def __init__(self, folder: Path) -> None:
        self.now = time.time()
        self.folder = folder
        authority = Authority.create(folder / "ca", "fuzz")
        self.sender, self.receiver = NodeKeys.generate(), NodeKeys.generate()
        stamp = int(self.now)
        self.sender_cert = authority.issue(self.sender.signing_public,
                                           self.sender.encryption_public, stamp - 60,
                                           stamp + 86_400)  # fmt: skip
        self.receiver_cert = authority.issue(self.receiver.signing_public,
                                             self.receiver.encryption_public, stamp - 60,
                                             stamp + 86_400)  # fmt: skip
        self.trust = authority.trust_store()
        self.ca_key = Ed25519PublicKey.from_public_bytes(authority.public)
        self.directory = {self.sender_cert.node_id: self.sender_cert}
        sealer = Sealer(self.sender, "fuzz", SequenceCounter(folder / "seq"))
        self.prekeys = Prekeys(self.now)
        prekey = self.prekeys.current(self.now)
        self.update = ModelUpdate(
            Kind.MERGE_REQUEST,
            {"e": np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)},
            1.0, 3, self.now,
        )  # fmt: skip
        self.models = [encode(self.update, Codec(name)) for name in ("float32", "float16", "int8")]
        payloads = [b"", b"x" * 40, *self.models]
        self.envelopes = {
            sealer.seal(p, self.receiver_cert, prekey, 1, self.now): p for p in payloads
        }
        self.verifier = StatementVerifier(self.trust, max_age=60.0)
        body = pack({"v": 5, "s": {"uptime": 3, "codec": "float16"}, "n": b"s" * 16,
                     "k": prekey})  # fmt: skip
        self.beacons = [sign_statement(self.sender, self.sender_cert, body, self.now)]
        self.crls = [authority.revoke({1}, stamp).encode(), authority.revoke({2}, stamp).encode()]
        self.ca_public, self.network = authority.public, authority.network
        self.catalogues = [authority.add_to_catalogue([("sku-1", ("genre=A",))], stamp).encode(),
                           authority.add_to_catalogue([("sku-2", ())], stamp).encode()]  # fmt: skip
        self.requests = [b'{"command": "ingest", "rows": [[1, 2], [3, 4, 5]]}',
                         b'{"command": "recommend", "user": 1, "k": 10}',
                         b'{"command": "status"}']  # fmt: skip
        self.configs = [b'[node]\ndata_dir = "/d"\n[model]\nn_items = 50\n[gossip]\nperiod = 1.5\n',
                        b'[node]\ndata_dir = "/d"\n[model]\nn_items = 9\n[broker]\nurl = '
                        b'"mqtt://h:1"\nusername = "u"\n']  # fmt: skip
        self.csvs = [b"user,item,timestamp\n1,2,3\n4,5\n", b"7,8\n9,10,11\n"]
        self._loop = asyncio.new_event_loop()
        self._server = ControlServer(folder / "unused.sock", {"ingest": self._ingest,
                                                              "status": self._status})  # fmt: skip

    def close(self) -> None:
        self._loop.close()

    def seeds(self, parser: str) -> list[bytes]:
        return {
            "envelope": list(self.envelopes), "codec": self.models, "beacon": self.beacons,
            "crl": self.crls, "catalogue": self.catalogues, "control": self.requests,
            "config": self.configs, "csv": self.csvs,
        }[parser]  # fmt: skip

    def check(self, parser: str, data: bytes, tally: Tally) -> None:
        """Parse one input; count a crash or a wrong accept in `tally`."""
        check: Callable[[bytes, Tally], None] = getattr(self, f"_{parser}")
        try:
            check(data, tally)
        except Exception as error:  # anything the parser does not document
            tally.problem("crashes", f"{type(error).__name__}: {error} on {data[:60]!r}")

    def _envelope(self, data: bytes, tally: Tally) -> None:
        # A fresh replay window each time: a seed's own bytes open, and must open as sealed.
        opener = Opener(self.receiver, self.trust, self.directory.get, self.prekeys)
        try:
            opened = opener.open(data, self.now)
        except EnvelopeError:
            return
        tally.accepted += 1
        if self.envelopes.get(data) != opened.payload or opened.sender != self.sender.node_id:
            tally.problem("wrong_accepts", f"opened changed bytes {data[:60]!r}")

    def _codec(self, data: bytes, tally: Tally) -> None:
        try:
            update = decode(data, expected={"e": (8, 4)})
        except DecodeError:
            return
        tally.accepted += 1
        values = update.params["e"]
        if values.shape[1:] != (4,) or not np.all(np.isfinite(values)):
            tally.problem("wrong_accepts", f"decoded {values.shape} non-finite or misshapen")

    def _beacon(self, data: bytes, tally: Tally) -> None:
        try:
            statement = self.verifier.verify(data, self.now)
        except EnvelopeError:
            return
        if data not in self.beacons:
            tally.problem("wrong_accepts", f"verified changed bytes {data[:60]!r}")
        body = unpack(statement.body, max_size=4_096)
        try:
            beacon_status(body.get("s") if isinstance(body, dict) else body)
        except DecodeError:
            return
        tally.accepted += 1

    def _crl(self, data: bytes, tally: Tally) -> None:
        try:
            crl = RevocationList.decode(data)
            crl.verify(self.ca_key)
        except CertificateError:
            return
        tally.accepted += 1
        if data not in self.crls:
            tally.problem("wrong_accepts", f"verified changed bytes {data[:60]!r}")

    def _catalogue(self, data: bytes, tally: Tally) -> None:
        try:
            SignedCatalogue.decode(data).verify(self.ca_public, self.network)
        except CertificateError:
            return
        tally.accepted += 1
        if data not in self.catalogues:
            tally.problem("wrong_accepts", f"verified changed bytes {data[:60]!r}")

    def _control(self, data: bytes, tally: Tally) -> None:
        reply = self._loop.run_until_complete(self._server._dispatch(data.replace(b"\n", b" ")))
        if "internal error" in str(reply.get("error", "")):
            tally.problem("crashes", f"internal error on {data[:60]!r}")
        elif "error" not in reply:
            tally.accepted += 1

    async def _ingest(self, request: dict[str, Any]) -> dict[str, Any]:
        users, _, _ = parse_rows(request.get("rows"), self.now)
        return {"received": len(users)}

    async def _status(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def _config(self, data: bytes, tally: Tally) -> None:
        path = self.folder / "node.toml"
        path.write_bytes(data)
        try:
            load_config(path, environ={})
        except ConfigError:
            return
        tally.accepted += 1

    def _csv(self, data: bytes, tally: Tally) -> None:
        path = self.folder / "clicks.csv"
        path.write_bytes(data)
        try:
            for _ in read_csv(path, 1_000):
                pass
        except IngestError:
            return
        tally.accepted += 1


def fuzz(inputs: int, seed: int = 0, parsers: tuple[str, ...] = tuple(WEIGHTS),
         on_progress: Callable[[int], None] | None = None) -> list[Tally]:  # fmt: skip
    """`inputs` in all, shared over `parsers` by WEIGHTS; one Tally per parser."""
    rng = random.Random(seed)
    total_weight = sum(WEIGHTS[p] for p in parsers)
    counts = {p: max(1, inputs * WEIGHTS[p] // total_weight) for p in parsers}
    counts[parsers[0]] += max(0, inputs - sum(counts.values()))  # exactly `inputs` in all
    with tempfile.TemporaryDirectory(prefix="gossiprec-fuzz-") as tmp:
        world = Parsers(Path(tmp))
        try:
            tallies = []
            for parser in parsers:
                tally = Tally(parser)
                count = counts[parser]
                stream = mutations(world.seeds(parser), rng)
                started = time.perf_counter()
                for index in range(count):
                    data = next(stream)
                    before = time.perf_counter()
                    world.check(parser, data, tally)
                    if time.perf_counter() - before > HANG_SECONDS:
                        tally.problem("hangs", f"{data[:60]!r}")
                    if on_progress is not None and index % 1_000 == 999:
                        on_progress(1_000)
                tally.inputs = count
                tally.seconds = time.perf_counter() - started
                tallies.append(tally)
            return tallies
        finally:
            world.close()


def as_rows(tallies: list[Tally]) -> list[dict[str, Any]]:
    return [asdict(t) for t in tallies]
