"""Gossip over a real mosquitto: every node has its own connection; every message is sealed."""

from __future__ import annotations

import asyncio
import operator
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.files import write_atomic
from gossiprec.gossip.membership import MembershipConfig, PeerState
from gossiprec.gossip.mqtt import MqttConfig, MqttTransport, _ClosedSocketRaces
from gossiprec.sim.broker import Mosquitto
from tests.gossipnet import FAST, admit, make_nodes, mqtt_factory, running


async def test_16_nodes_over_mosquitto_converge_to_the_mean(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    authority = Authority.create(tmp_path / "ca", "mqttnet")
    made, truth = make_nodes(tmp_path, authority, 16, "push-sum")
    # Push-sum keeps the mean only if no update is lost, and 16 nodes in one process on a busy
    # machine can fall behind: room for every update, then proof below that none was shed.
    transports = mqtt_factory(mosquitto.port)
    async with running(tmp_path, made, truth, transports, inbox_backlog=1024) as cluster:
        converged = await cluster.until(lambda: cluster.error() < 1e-4, timeout=60)
        assert converged, cluster.report()
        for node in cluster.nodes:
            # Nothing refused, but beacons a busy machine delivered too late to prove liveness.
            assert node.rejected().keys() <= {"beacon:stale"}, node.rejected()
            assert node.counters.updates_received > 0
            assert node.transport.stats.dropped_incoming == 0


async def test_mqtt_311_clients_gossip_too(tmp_path: Path, mosquitto: Mosquitto) -> None:
    authority = Authority.create(tmp_path / "ca", "v311")
    made, truth = make_nodes(tmp_path, authority, 4, "pairwise")
    async with running(tmp_path, made, truth, mqtt_factory(mosquitto.port, protocol=4)) as cluster:
        agreed = await cluster.until(lambda: cluster.disagreement() < 1e-4, timeout=30)
        assert agreed, cluster.report()
        # On the true mean unless a reply came after its request was replaced (ignored, so one
        # side moved alone: 4.4e-3 off on a busy CI machine); nodes start about 1.0 away.
        assert cluster.error() < 0.02, cluster.report()


async def test_broker_restart_mid_run_every_node_reconnects_and_converges(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    authority = Authority.create(tmp_path / "ca", "restart")
    made, truth = make_nodes(tmp_path, authority, 12, "pairwise", seed=3)
    async with running(tmp_path, made, truth, mqtt_factory(mosquitto.port)) as cluster:
        assert await cluster.until(lambda: cluster.nodes[0].counters.updates_received > 5, 20)
        before = cluster.disagreement()
        mosquitto.restart()  # SIGKILL, then a new broker on the same port with no state
        assert await cluster.until(
            lambda: all(n.transport.stats.connects >= 2 for n in cluster.nodes), timeout=30
        )
        assert await cluster.until(lambda: cluster.disagreement() < 1e-4, timeout=60)
        assert before > 1e-4  # the restart really happened mid-run
        # Replies lost with the broker shift the consensus (measured 0.02-0.08 from the true
        # mean); every node starts about 1.0 away, so 0.25 still rules out a node taking over.
        assert cluster.error() < 0.25, cluster.report()


NODE_PROCESS = """
import asyncio, random, sys, time
from pathlib import Path
import numpy as np
from gossiprec.gossip.driver import GossipNode, last_will, subscriptions
from gossiprec.gossip.membership import MembershipConfig
from gossiprec.gossip.mqtt import MqttConfig, MqttTransport
from gossiprec.gossip.protocol import GossipConfig, GossipProtocol
from gossiprec.node.identity import load_identity

async def main() -> None:
    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    identity = load_identity(folder)
    keys = identity.keys
    membership = MembershipConfig(suspect_after=1.0, dead_after=2.5)
    config = GossipConfig(period=0.1, membership=membership)
    protocol = GossipProtocol(identity.node_id, {"v": np.ones((32, 4), np.float32)}, config,
                              random.Random(0), time.time())
    transport = MqttTransport(MqttConfig(port=port, keepalive=60), keys.node_id.hex(),
                              subscriptions(identity), last_will(identity))
    async with transport:
        print("up", flush=True)
        await GossipNode(identity, transport, protocol, folder / "state", heartbeat=0.3).run()

asyncio.run(main())
"""


@pytest.mark.parametrize("death", ["SIGKILL", "SIGSTOP"])
async def test_node_dying_uncleanly_leaves_live_views_within_the_dead_timeout(
    tmp_path: Path, mosquitto: Mosquitto, death: str
) -> None:
    authority = Authority.create(tmp_path / "ca", "deaths")
    victim = admit(authority)
    folder = tmp_path / "victim"
    victim.keys.save(folder)
    write_atomic(folder / "node.cert", victim.certificate.encode())
    victim.trust.save(folder)
    # SIGKILL: the broker publishes the last will at once, so the observers wait a minute of
    # silence before a timeout could; what declares the victim dead sooner is the will.
    # SIGSTOP: the socket stays open (keepalive 60 s), so only the dead timeout (FAST) can.
    membership = MembershipConfig(suspect_after=30, dead_after=60) if death == "SIGKILL" else FAST
    made, truth = make_nodes(tmp_path, authority, 3, "pairwise", membership=membership)
    command = [sys.executable, "-c", NODE_PROCESS, str(folder), str(mosquitto.port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, cwd=Path(__file__).parents[1]) as child:
        try:
            async with running(tmp_path, made, truth, mqtt_factory(mosquitto.port)) as cluster:
                node_id = victim.node_id
                assert await cluster.until(
                    lambda: all(node_id in n.status().alive() for n in cluster.nodes), 20
                )
                os.kill(child.pid, getattr(signal, death))
                killed_at = time.monotonic()
                dead = lambda: all(  # noqa: E731
                    n.status().state_of(node_id) is PeerState.DEAD for n in cluster.nodes
                )
                assert await cluster.until(dead, timeout=20)
                if death == "SIGKILL":  # the will, not a minute of silence
                    assert time.monotonic() - killed_at < membership.suspect_after
                await asyncio.sleep(0)
        finally:
            child.kill()


async def test_a_cancel_arriving_as_a_publish_completes_is_not_lost(mosquitto: Mosquitto) -> None:
    async with MqttTransport(MqttConfig(port=mosquitto.port), "canceller", []) as link:
        assert await link.wait_connected(10)

        async def publish_forever() -> None:
            while True:
                await link.publish("gossiprec/test/spam", b"x" * 1_000)

        for _ in range(200):  # cancel at many points of the publish cycle
            task = asyncio.create_task(publish_forever())
            await asyncio.sleep(0.001 * (_ % 7))
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=5)
            assert done, "a cancellation was swallowed"


async def test_non_admitted_key_over_mosquitto_is_dropped_and_counted(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    from gossiprec.crypto.envelope import Sealer
    from gossiprec.crypto.replay import SequenceCounter
    from gossiprec.crypto.statement import sign_statement
    from gossiprec.crypto.wire import pack
    from gossiprec.gossip import topics
    from gossiprec.gossip.codec import Codec, encode
    from gossiprec.gossip.driver import last_will, subscriptions
    from gossiprec.gossip.messages import Kind, ModelUpdate

    authority = Authority.create(tmp_path / "ca", "guarded")
    outsider = admit(Authority.create(tmp_path / "evil", "guarded"))  # same name, other CA
    made, truth = make_nodes(tmp_path, authority, 3, "pairwise")
    async with running(tmp_path, made, truth, mqtt_factory(mosquitto.port)) as cluster:
        target = cluster.nodes[0]
        link = MqttTransport(
            MqttConfig(port=mosquitto.port),
            "outsider",
            subscriptions(outsider),
            last_will(outsider),
        )
        async with link:
            assert await link.wait_connected(10)
            beacon = sign_statement(
                outsider.keys, outsider.certificate, pack({"v": 0}), time.time()
            )
            await link.publish(topics.presence("guarded", outsider.node_id), beacon, retain=True)
            poison = ModelUpdate(Kind.MERGE_REQUEST, {"v": target.protocol.params["v"] * 1e6})
            sealer = Sealer(outsider.keys, "guarded", SequenceCounter(tmp_path / "evil-seq"))
            prekey = target.prekeys.current(time.time())
            sealed = sealer.seal(
                encode(poison, Codec()), target.identity.certificate, prekey, 1, time.time()
            )
            inbox = topics.inbox("guarded", target.identity.node_id)
            assert await link.publish(inbox, sealed)
            assert await cluster.until(
                lambda: target.rejected().get("envelope:unknown_sender", 0) == 1, timeout=10
            )
        assert target.rejected()["beacon:certificate_foreign"] >= 1
        assert target.status().state_of(outsider.node_id) is None
        assert float(np.abs(target.protocol.params["v"]).max()) < 100


async def test_a_full_incoming_queue_drops_and_counts(mosquitto: Mosquitto) -> None:
    topic = "gossiprec/test/flood"
    slow = MqttTransport(MqttConfig(port=mosquitto.port, queue_size=3), "slow", [topic])
    fast = MqttTransport(MqttConfig(port=mosquitto.port), "fast", [])
    async with slow as rx, fast as tx:
        assert await rx.wait_connected(10) and await tx.wait_connected(10)
        for index in range(10):
            assert await tx.publish(topic, str(index).encode())
        deadline = time.monotonic() + 10
        while rx.stats.dropped_incoming < 7 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert rx.stats.dropped_incoming == 7  # nobody read: 3 kept, 7 dropped and counted
        received = rx.incoming()
        kept = [(await anext(received)).payload for _ in range(3)]
        assert kept == [b"0", b"1", b"2"]


async def test_an_mqtt5_node_never_reads_a_packet_over_its_limit(mosquitto: Mosquitto) -> None:
    node = MqttTransport(MqttConfig(port=mosquitto.port, protocol=5), "node", ["g/#"])
    sender = MqttTransport(MqttConfig(port=mosquitto.port), "sender", [])
    async with node as rx, sender as tx:
        assert await rx.wait_connected(10) and await tx.wait_connected(10)
        huge = 8 * 1024 * 1024  # twice what the node takes: the broker must not send it
        assert await tx.publish("g/huge", b"\x00" * huge)
        assert await tx.publish("g/small", b"after")
        received = rx.incoming()
        first = await asyncio.wait_for(anext(received), 30)
        assert (first.topic, first.payload) == ("g/small", b"after")
        assert rx.stats.bytes_in < 1_000_000


def _roaming_link(first: Mosquitto, second: Mosquitto, name: str, topic: str,
                  failback: float = 0.0) -> MqttTransport:  # fmt: skip
    """A link on `first` with `second` as its fallback, subscribed to `topic`."""
    config = MqttConfig(port=first.port, fallbacks=(("127.0.0.1", second.port),),
                        backoff_initial=0.1, keepalive=5, failback=failback)  # fmt: skip
    return MqttTransport(config, name, [topic])


async def _arrives(link: MqttTransport, topic: str, payload: bytes) -> bool:
    """Does a message the link publishes on `topic` come back to it (its subscription holds)?"""
    assert await link.publish(topic, payload)
    return (await asyncio.wait_for(anext(link.incoming()), 10)).payload == payload


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_a_link_to_a_broker_cluster_fails_over_to_the_next_broker(tmp_path: Path) -> None:
    topic = "gossiprec/test/failover"
    with Mosquitto() as first, Mosquitto() as second:
        async with _roaming_link(first, second, "roaming", topic) as link:
            assert await link.wait_connected(10)
            assert link.stats.broker == f"127.0.0.1:{first.port}"
            first.kill()
            await _until(lambda: link.stats.failovers > 0, 20)
            assert link.stats.broker == f"127.0.0.1:{second.port}" and link.connected
            assert link.stats.failovers == 1 and 0 < link.stats.last_outage < 10
            # Subscriptions came along: a message published on the second broker arrives.
            assert await _arrives(link, topic, b"still here")


async def test_a_link_moves_back_to_its_first_broker_once_it_answers_again() -> None:
    topic = "gossiprec/test/failback"
    with Mosquitto() as first, Mosquitto() as second:
        first.kill()  # down when the link starts, as a cluster node still booting
        async with _roaming_link(first, second, "returning", topic, failback=0.5) as link:
            assert await link.wait_connected(20)
            assert link.stats.broker == f"127.0.0.1:{second.port}"
            first.start()
            await _until(lambda: link.stats.failbacks > 0, 30)
            assert await link.wait_connected(20)
            assert link.stats.broker == f"127.0.0.1:{first.port}"
            assert (link.stats.failbacks, link.stats.failovers) == (1, 0)
            # Subscriptions came along, and the link stays on the first broker.
            assert await _arrives(link, topic, b"home again")
            assert link.stats.broker == f"127.0.0.1:{first.port}"


async def test_a_socket_closed_before_the_loop_watches_it_is_dropped_other_errors_pass() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    _ClosedSocketRaces.install(loop)
    _ClosedSocketRaces.install(loop)  # once per loop, however many links start on it
    closed = socket.socket()
    fd = closed.fileno()
    closed.close()
    # aiomqtt's race: paho asks to watch a socket that a disconnect closed in between.
    loop.call_soon(loop.add_writer, fd, lambda: None)
    loop.call_soon(operator.truediv, 1, 0)  # any other error still reaches the earlier handler
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [type(context["exception"]) for context in seen] == [ZeroDivisionError]
