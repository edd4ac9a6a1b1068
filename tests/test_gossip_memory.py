"""The driver over the in-memory broker: the same node code as over MQTT."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.envelope import Sealer
from gossiprec.crypto.replay import SequenceCounter
from gossiprec.gossip import topics
from gossiprec.gossip.codec import Codec, encode
from gossiprec.gossip.driver import (
    INBOX_BACKLOG,
    Identity,
    beacon,
    beacon_status,
    last_will,
    leave_statement,
    subscriptions,
)
from gossiprec.gossip.errors import DecodeError
from gossiprec.gossip.membership import MembershipConfig, PeerState
from gossiprec.gossip.memory import InMemoryBroker
from gossiprec.gossip.messages import Kind, ModelUpdate
from gossiprec.gossip.transport import LastWill, Transport
from tests.gossipnet import admit, make_nodes, running


def memory_factory(broker: InMemoryBroker):  # type: ignore[no-untyped-def]
    def make(identity: Identity, topics_: list[str], will: LastWill) -> Transport:
        return broker.client(identity.node_id.hex(), topics_, will)

    return make


async def test_push_sum_over_the_in_memory_broker_reaches_the_mean(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "ca", "memnet")
    made, truth = make_nodes(tmp_path, authority, 8, "push-sum")
    # Room for every update: push-sum keeps the mean only if none is shed (nothing is, below).
    transports = memory_factory(InMemoryBroker())
    async with running(tmp_path, made, truth, transports, inbox_backlog=1024) as cluster:
        assert await cluster.until(lambda: cluster.error() < 1e-4, timeout=30)
        assert all(not n.rejected() for n in cluster.nodes), [n.rejected() for n in cluster.nodes]


async def test_crashed_node_is_dead_at_once_through_its_last_will(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "ca", "memnet")
    broker = InMemoryBroker()
    # Silence alone would take a minute to declare it dead: within the wait below, only the
    # last will can, however busy the machine is.
    slow = MembershipConfig(suspect_after=30.0, dead_after=60.0)
    made, truth = make_nodes(tmp_path, authority, 4, "pairwise", membership=slow)
    async with running(tmp_path, made, truth, memory_factory(broker)) as cluster:
        victim = cluster.nodes[0].identity.node_id
        others = cluster.nodes[1:]
        assert await cluster.until(
            lambda: all(victim in n.status().alive() for n in others), timeout=10
        )
        broker.crash(victim.hex())
        crashed_at = time.monotonic()
        assert await cluster.until(
            lambda: all(n.status().state_of(victim) is PeerState.DEAD for n in others), 20
        )
        assert time.monotonic() - crashed_at < slow.suspect_after


async def test_messages_from_a_non_admitted_key_are_dropped_and_counted(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "ca", "memnet")
    outsider_ca = Authority.create(tmp_path / "evil-ca", "memnet")  # same name, other key
    broker = InMemoryBroker()
    made, truth = make_nodes(tmp_path, authority, 3, "pairwise")
    async with running(tmp_path, made, truth, memory_factory(broker)) as cluster:
        target = cluster.nodes[0]
        mallory = admit(outsider_ca)
        async with broker.client("mallory", subscriptions(mallory), last_will(mallory)) as link:
            signed = beacon(mallory, 0, {}, time.time(), os.urandom(32))
            await link.publish(topics.presence("memnet", mallory.node_id), signed, retain=True)
            update = ModelUpdate(Kind.MERGE_REQUEST, {"v": target.protocol.params["v"] * 1e6})
            sealer = Sealer(mallory.keys, "memnet", SequenceCounter(tmp_path / "mallory-seq"))
            prekey = target.prekeys.current(time.time())
            sealed = sealer.seal(
                encode(update, Codec()), target.identity.certificate, prekey, 1, time.time()
            )
            await link.publish(topics.inbox("memnet", target.identity.node_id), sealed)
            await link.publish(topics.inbox("memnet", target.identity.node_id), b"\x00garbage")
            wanted = {"envelope:unknown_sender": 1, "envelope:malformed": 1}
            assert await cluster.until(
                lambda: all(target.rejected().get(k, 0) == n for k, n in wanted.items()),
                timeout=5,
            )
        rejected = target.rejected()
        assert rejected["beacon:certificate_foreign"] >= 1
        assert rejected["envelope:malformed"] == 1
        assert mallory.node_id not in target.directory
        assert float(np.abs(target.protocol.params["v"]).max()) < 100  # the poison never merged


async def test_a_node_busy_merging_still_admits_peers_and_sheds_its_oldest_updates(
    tmp_path: Path,
) -> None:
    authority = Authority.create(tmp_path / "ca", "memnet")
    broker = InMemoryBroker()
    made, truth = make_nodes(tmp_path, authority, 2, "pairwise")
    async with running(tmp_path, made, truth, memory_factory(broker)) as cluster:
        target = cluster.nodes[0]
        newcomer = admit(authority)
        await asyncio.to_thread(target.lock.acquire)  # a training step that takes long
        try:
            async with broker.client("new", subscriptions(newcomer), last_will(newcomer)) as link:
                signed = beacon(newcomer, 0, {}, time.time(), os.urandom(32))
                await link.publish(topics.presence("memnet", newcomer.node_id), signed, retain=True)
                sealer = Sealer(newcomer.keys, "memnet", SequenceCounter(tmp_path / "new-seq"))
                update = ModelUpdate(Kind.MERGE_REQUEST, {"v": target.protocol.params["v"] + 1})
                for _ in range(INBOX_BACKLOG + 5):
                    sealed = sealer.seal(encode(update, Codec()), target.identity.certificate,
                                         target.prekeys.current(time.time()), 1,
                                         time.time())  # fmt: skip
                    await link.publish(topics.inbox("memnet", target.identity.node_id), sealed)
                # The beacon is handled while the model waits for the lock; the surplus of
                # updates beyond the backlog (one is already waiting for the lock) is dropped.
                assert await cluster.until(lambda: newcomer.node_id in target.presence, 10)
                assert await cluster.until(
                    lambda: target.rejected().get("inbox:overflow", 0) >= 4, 10
                ), target.rejected()
                merged_while_busy = target.status().merged
        finally:
            target.lock.release()
        assert await cluster.until(
            lambda: target.status().state_of(newcomer.node_id) is not None, 10
        )
        assert await cluster.until(lambda: target.status().merged > merged_while_busy, 10)
        # Of the newcomer's updates, the backlog's worth and the one waiting for the lock merged.
        assert target.traffic[newcomer.node_id].messages_in <= INBOX_BACKLOG + 1


def test_a_beacons_status_is_typed_and_bounded_or_the_beacon_is_refused() -> None:
    assert beacon_status({"uptime": 12, "codec": "float16"}) == {"uptime": 12, "codec": "float16"}
    for hostile in ({"uptime": b"\x00"}, {"x": [1]}, {"x": float("inf")}, {"x": "y" * 65},
                    {str(k): k for k in range(17)}, [("uptime", 1)], {"x": 2**60}):  # fmt: skip
        with pytest.raises(DecodeError):
            beacon_status(hostile)


async def test_only_a_signed_leave_of_the_current_session_marks_a_node_dead(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "ca", "memnet")
    broker = InMemoryBroker()
    slow = MembershipConfig(suspect_after=30.0, dead_after=60.0)
    made, truth = make_nodes(tmp_path, authority, 3, "pairwise", membership=slow)
    async with running(tmp_path, made, truth, memory_factory(broker)) as cluster:
        victim, others = cluster.nodes[0].identity, cluster.nodes[1:]
        assert await cluster.until(
            lambda: all(victim.node_id in n.status().alive() for n in others), timeout=10
        )
        topic = topics.presence("memnet", victim.node_id)
        earlier_run = Identity(victim.keys, victim.certificate, victim.trust)  # another session
        async with broker.client("intruder", []) as intruder:
            await intruder.publish(topic, b"", retain=True)  # what a last will looked like
            await intruder.publish(topic, leave_statement(earlier_run), retain=True)  # replayed

        def counted(reason: str) -> bool:
            return all(n.rejected().get(reason, 0) >= 1 for n in others)

        assert await cluster.until(
            lambda: counted("presence:unsigned_leave") and counted("presence:stale_leave"), 10
        )
        assert all(victim.node_id in n.status().alive() for n in others)
        broker.crash(victim.node_id.hex())  # its own will, for the session they know
        assert await cluster.until(
            lambda: all(n.status().state_of(victim.node_id) is PeerState.DEAD for n in others), 20
        )


async def test_liveness_counts_from_the_time_a_beacon_was_signed(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "ca", "memnet")
    broker = InMemoryBroker()
    made, truth = make_nodes(tmp_path, authority, 1, "pairwise")
    async with running(tmp_path, made, truth, memory_factory(broker)) as cluster:
        (target,) = cluster.nodes
        peer = admit(authority)
        signed_at = time.time() - 4.0  # held back, then replayed: it proves nothing newer
        async with broker.client("peer", []) as link:
            signed = beacon(peer, 0, {}, signed_at, os.urandom(32))
            await link.publish(topics.presence("memnet", peer.node_id), signed, retain=True)
        assert await cluster.until(lambda: peer.node_id in target.presence, 10)
        assert target.presence[peer.node_id].last_seen == pytest.approx(signed_at, abs=0.01)


async def test_a_revocation_list_only_one_node_holds_reaches_the_others_through_it(
    tmp_path: Path,
) -> None:
    # On a broker cluster a retained list may live on one broker only (RabbitMQ keeps retained
    # messages per node): nodes that subscribed elsewhere never see it. Beacons carry the
    # version each node holds; a node ahead relays the signed list to those behind.
    authority = Authority.create(tmp_path / "ca", "memnet")
    made, truth = make_nodes(tmp_path, authority, 3, "pairwise")
    stranger = admit(authority)
    crl = authority.revoke({stranger.certificate.serial}, int(time.time()))
    assert made[0][0].trust.update_crl(crl)
    broker = InMemoryBroker()
    async with running(tmp_path, made, truth, memory_factory(broker)) as cluster:
        assert await cluster.until(
            lambda: all(n.identity.trust.crl.version == crl.version for n in cluster.nodes), 10
        ), cluster.report()
        relayed = [n.counters.crl_relayed for n in cluster.nodes]
        assert relayed[0] >= 1 and sum(relayed) <= 3, relayed
        revoked = cluster.nodes[2].identity.trust.crl.revoked
        assert stranger.certificate.serial in revoked


async def test_a_revoked_members_live_session_is_refused_once_the_list_arrives(
    tmp_path: Path,
) -> None:
    # A compromised member keeps sending on the session it opened while it was admitted.
    authority = Authority.create(tmp_path / "ca", "memnet")
    broker = InMemoryBroker()
    made, truth = make_nodes(tmp_path, authority, 1, "pairwise")
    heartbeat = 5.0  # the default: the list must take effect within one
    async with running(tmp_path, made, truth, memory_factory(broker), heartbeat) as cluster:
        (target,) = cluster.nodes
        member = admit(authority)
        sealer = Sealer(member.keys, "memnet", SequenceCounter(tmp_path / "member-seq"))
        inbox = topics.inbox("memnet", target.identity.node_id)
        update = ModelUpdate(Kind.MERGE_REQUEST, {"v": target.protocol.params["v"].copy()})

        def sealed() -> bytes:
            prekey = target.prekeys.current(time.time())
            return sealer.seal(encode(update, Codec()), target.identity.certificate, prekey, 1,
                               time.time())  # fmt: skip

        async with broker.client("member", subscriptions(member), last_will(member)) as link:
            signed = beacon(member, 0, {}, time.time(), os.urandom(32))
            await link.publish(topics.presence("memnet", member.node_id), signed, retain=True)
            assert await cluster.until(lambda: member.node_id in target.directory, 10)
            await link.publish(inbox, sealed())
            assert await cluster.until(lambda: target.counters.updates_received == 1, 10)
            crl = authority.revoke({member.certificate.serial}, int(time.time()))
            published = time.monotonic()
            await link.publish(topics.crl("memnet"), crl.encode(), retain=True)
            assert await cluster.until(lambda: target.identity.trust.crl.version == 1, heartbeat)
            await link.publish(inbox, sealed())  # the same live session
            assert await cluster.until(
                lambda: target.rejected().get("envelope:certificate_revoked", 0) == 1, 10
            ), target.rejected()
            print(f"refused {time.monotonic() - published:.3f} s after the list was published")
        assert sealer.sessions_opened == 1 and target.sessions()["opened_in"] == 1
        assert target.counters.updates_received == 1
