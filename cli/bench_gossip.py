"""Benchmark: the full gossip path over one broker against raw aiomqtt on the same bytes.

Full path per message: encode (codec) -> seal (crypto) -> publish (QoS 1) -> broker ->
deliver -> open (session, certificate, replay window, decrypt) -> decode (validated arrays).
Raw: aiomqtt publish (QoS 1) and receive of a payload of the same size. Both in one process,
each side's sender waiting for its acknowledgement before the next message.
Then the raw rate of presence-beacon-sized messages, the other half of a broker's load.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.envelope import Sealer
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.prekey import Prekeys
from gossiprec.crypto.replay import SequenceCounter
from gossiprec.gossip import topics
from gossiprec.gossip.codec import CODECS, Codec, encode
from gossiprec.gossip.driver import GossipNode, Identity, Presence, Sealed, beacon
from gossiprec.gossip.messages import Arrays, Kind, ModelUpdate, Send
from gossiprec.gossip.mqtt import MqttConfig, MqttTransport
from gossiprec.gossip.protocol import GossipConfig, GossipProtocol

ROWS, DIM = 1_682, 32  # ML-100K items x embedding size: 215 KB of float32
WARM_UP_MESSAGES = 1_500


def model_update(kind: Kind = Kind.MERGE_REQUEST, seed: int = 0) -> ModelUpdate:
    rng = np.random.default_rng(seed)
    params: Arrays = {"item_embedding": rng.normal(0, 0.1, (ROWS, DIM)).astype(np.float32),
              "item_bias": rng.normal(0, 0.1, ROWS).astype(np.float32)}  # fmt: skip
    return ModelUpdate(kind, params, 1.0, 1, time.time())


def _identity(authority: Authority) -> Identity:
    keys = NodeKeys.generate()
    now = int(time.time())
    cert = authority.issue(keys.signing_public, keys.encryption_public, now - 60, now + 3_600)
    return Identity(keys, cert, authority.trust_store())


async def _raw_rate(host: str, port: int, payload: bytes, count: int, protocol: int,
                    window: int = 1) -> float:  # fmt: skip
    """Messages/s from one publisher to one subscriber, `window` publishes in flight at once (1:
    each waits for its acknowledgement, as one node's sends to one peer do)."""
    topic = "gossiprec/bench/raw"
    version = aiomqtt.ProtocolVersion.V5 if protocol == 5 else aiomqtt.ProtocolVersion.V311
    rx = aiomqtt.Client(host, port, identifier="bench-raw-rx", protocol=version)
    tx = aiomqtt.Client(host, port, identifier="bench-raw-tx", protocol=version)
    async with rx as receiver, tx as sender:
        await receiver.subscribe(topic, qos=1)
        start = time.perf_counter()

        async def receive() -> None:
            got = 0
            async for message in receiver.messages:
                got += message.payload == payload
                if got == count:
                    return

        listener = asyncio.create_task(receive())
        for first in range(0, count, window):
            await asyncio.gather(*(sender.publish(topic, payload, qos=1, timeout=30)
                                   for _ in range(min(window, count - first))))  # fmt: skip
        await asyncio.wait_for(listener, 120)
        return count / (time.perf_counter() - start)


def _protocol(identity: Identity) -> GossipProtocol:
    params = {name: array.copy() for name, array in model_update().params.items()}
    return GossipProtocol(identity.node_id, params, GossipConfig(), random.Random(0), time.time())


def _gossip_node(identity: Identity, transport: MqttTransport, folder: Path) -> GossipNode:
    return GossipNode(identity, transport, _protocol(identity), folder / identity.node_id.hex())


class _OpeningNode(GossipNode):
    """A receiving node that runs its own path (receive loop -> inbox -> model loop) and opens
    each update, stopping short of the merge: the bench times the path, not the averaging."""

    def __init__(self, *args: Any, expected: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expected = expected
        self.opened = 0
        self.all_opened = asyncio.Event()

    async def handle_update(self, payload: bytes) -> list[Sealed]:
        opened = self.open_update(payload, time.time())
        assert opened is not None, self.rejected()
        self.opened += 1
        if self.opened == self.expected:
            self.all_opened.set()
        return []


async def _full_rate(host: str, port: int, folder: Path, count: int,
                     protocol: int) -> tuple[float, int]:  # fmt: skip
    """The nodes' own path: the sender's GossipNode.seal_all (encode, seal) then publish_all, as
    its gossip loop runs them; the receiver's receive and model loops, which open and decode."""
    authority = Authority.create(folder / "ca", "bench")
    alice, bob = _identity(authority), _identity(authority)
    inbox = topics.inbox("bench", bob.node_id)
    update = model_update()
    config = MqttConfig(host=host, port=port, protocol=protocol)
    async with MqttTransport(config, "bench-rx", [inbox]) as rx, \
            MqttTransport(config, "bench-tx", []) as tx:  # fmt: skip
        assert await rx.wait_connected(10) and await tx.wait_connected(10)
        sender = _gossip_node(alice, tx, folder)
        receiver = _OpeningNode(bob, rx, _protocol(bob), folder / bob.node_id.hex(),
                                expected=count)  # fmt: skip
        receiver.directory[alice.node_id] = alice.certificate
        # What bob's beacon tells alice: its certificate and its prekey.
        sender.directory[bob.node_id] = bob.certificate
        now = time.time()
        sender.presence[bob.node_id] = Presence(now, 0, {}, bob.session,
                                                receiver.prekeys.current(now))  # fmt: skip
        running = asyncio.create_task(receiver.run())
        start = time.perf_counter()
        sends = [Send(bob.node_id, update)]
        for _ in range(count):  # as the node's gossip loop: seal, then publish
            await sender.publish_all(sender.seal_all(sends))
        await asyncio.wait_for(receiver.all_opened.wait(), 120)
        rate = count / (time.perf_counter() - start)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        assert sender.counters.updates_sent == count, sender.rejected()
    return rate, sender.traffic[bob.node_id].bytes_out // count


def _beacon(folder: Path) -> bytes:
    """A presence beacon as nodes send them (signed, with certificate and a public status)."""
    identity = _identity(Authority.create(folder / "ca-beacon", "bench"))
    status: dict[str, int | float | str] = {"users": 30, "loss": 0.1, "epsilon": 0.0}
    now = time.time()
    return beacon(identity, 1_000, status, now, Prekeys(now).current(now))


def exchange_bytes() -> dict[str, int]:
    """Sealed bytes of one pairwise exchange (request + reply) per codec."""
    with tempfile.TemporaryDirectory() as tmp:
        authority = Authority.create(Path(tmp) / "ca", "bench")
        alice, bob = _identity(authority), _identity(authority)
        sealer = Sealer(alice.keys, "bench", SequenceCounter(Path(tmp) / "seq"))
        prekey = Prekeys(time.time()).current(time.time())
        result = {}
        for name in CODECS:
            codec = Codec(name)
            total = 0
            for kind in (Kind.MERGE_REQUEST, Kind.MERGE_REPLY):
                update = model_update(kind)
                if codec.sparse:
                    rows = np.arange(0, ROWS, int(1 / codec.sparse_fraction), dtype=np.int32)
                    update = ModelUpdate(kind, update.params, rows={n: rows for n in update.params})
                sealed = sealer.seal(encode(update, codec), bob.certificate, prekey, 1, time.time())
                total += len(sealed)
            result[name] = total
    return result


def bench_gossip(broker_url: str | None, count: int = 200, protocol: int = 5,
                 rounds: int = 5) -> dict[str, object]:  # fmt: skip
    """Raw and full rates in alternating rounds of `count` messages, after a warm-up that is
    not counted; the medians, and their ratio."""
    from gossiprec.sim.broker import Mosquitto

    async def run(host: str, port: int) -> dict[str, object]:
        payload = bytes(ROWS * DIM * 4 + ROWS * 4)
        raws, fulls = [], []
        with tempfile.TemporaryDirectory() as tmp:
            # Not counted: a fresh mosquitto relays its first 900 or so messages of this size
            # faster than it does from then on (here 2,000-2,100 against 1,350 per s), and
            # whichever side went first would get them.
            await _raw_rate(host, port, payload, WARM_UP_MESSAGES, protocol)
            await _full_rate(host, port, Path(tmp) / "warm-up", count, protocol)
            for round_ in range(rounds):  # alternating: a busy moment of the machine hits both
                raws.append(await _raw_rate(host, port, payload, count, protocol))
                full, size = await _full_rate(host, port, Path(tmp) / str(round_), count, protocol)
                fulls.append(full)
            small = bytes(len(_beacon(Path(tmp))))
        # Beacons come from many nodes at once: 32 in flight.
        beacons = await _raw_rate(host, port, small, 50 * count, protocol, window=32)
        raw, full = statistics.median(raws), statistics.median(fulls)
        return {"messages": count, "rounds": rounds, "raw_aiomqtt_msgs_per_s": raw,
                "full_path_msgs_per_s": full, "ratio": full / raw,
                "raw_rounds": [round(r) for r in raws], "full_rounds": [round(f) for f in fulls],
                "sealed_message_bytes": size, "beacon_bytes": len(small),
                "raw_beacon_msgs_per_s": beacons}  # fmt: skip

    if broker_url:
        host, _, port = broker_url.removeprefix("mqtt://").partition(":")
        result = asyncio.run(run(host, int(port or 1883)))
    else:
        with Mosquitto() as broker:
            result = asyncio.run(run("127.0.0.1", broker.port))
    result["exchange_bytes_by_codec"] = exchange_bytes()
    return result
