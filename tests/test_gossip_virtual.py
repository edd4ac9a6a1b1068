"""Averaging in virtual time over the in-memory path (codec included, crypto tested elsewhere)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from gossiprec.gossip.averaging import mean_of, relative_error
from gossiprec.gossip.codec import Codec
from gossiprec.gossip.membership import MembershipConfig, PeerState
from gossiprec.gossip.messages import Arrays, Kind, ModelUpdate
from gossiprec.gossip.protocol import ESTABLISHED, MAX_VERSION_LEAD, GossipConfig, GossipProtocol
from gossiprec.gossip.virtual import VirtualNetwork

NEVER = MembershipConfig(suspect_after=1e6, dead_after=2e6)


def cluster(
    n: int,
    strategy: str,
    *,
    drop: float = 0.0,
    seed: int = 0,
    codec: str = "float32",
    view: int = 4_096,
    versions: tuple[int, ...] = (),
) -> tuple[VirtualNetwork, list[GossipProtocol], Arrays]:
    """`n` cores that know each other; `versions` are the first ones' restored model versions."""
    rng = np.random.default_rng(seed)
    membership = MembershipConfig(suspect_after=1e6, dead_after=2e6, view_size=view)
    config = GossipConfig(strategy=strategy, codec=Codec(codec), membership=membership)
    nodes = [
        GossipProtocol(
            i.to_bytes(16, "big"),
            {"v": rng.normal(1.0, 1.0, (50, 4)).astype(np.float32)},
            config,
            random.Random(seed * 100_003 + i),
            0.0,
            version=versions[i] if i < len(versions) else 0,
        )
        for i in range(n)
    ]
    truth = mean_of([p.params for p in nodes])
    network = VirtualNetwork(nodes, seed=seed, drop_rate=drop)
    network.introduce_all()
    return network, nodes, truth


def worst_error(nodes: list[GossipProtocol], reference: Arrays) -> float:
    return max(relative_error(p.params, reference) for p in nodes)


def rounds_to(target: float, n: int, strategy: str = "push-sum", view: int = 4_096) -> float:
    network, nodes, truth = cluster(n, strategy, view=view)
    assert network.run(300.0, lambda: worst_error(nodes, truth) < target, check_every=0.25)
    return sum(p.status().rounds for p in nodes) / n


def test_push_sum_over_64_nodes_reaches_the_exact_mean() -> None:
    network, nodes, truth = cluster(64, "push-sum")
    assert network.run(300.0, lambda: worst_error(nodes, truth) < 1e-6, check_every=0.5)
    assert worst_error(nodes, truth) < 1e-6
    assert network.stats.dropped == 0


def test_pairwise_without_loss_also_conserves_the_mean() -> None:
    network, nodes, truth = cluster(64, "pairwise")
    assert network.run(300.0, lambda: worst_error(nodes, truth) < 1e-5, check_every=0.5)


def test_pairwise_with_20_percent_loss_still_converges() -> None:
    network, nodes, truth = cluster(64, "pairwise", drop=0.2, seed=1)

    def consensus() -> float:
        return worst_error(nodes, mean_of([p.params for p in nodes]))

    assert network.run(300.0, lambda: consensus() < 1e-3, check_every=0.5)
    assert consensus() < 1e-3
    assert 0.15 < network.stats.dropped / (network.stats.dropped + network.stats.delivered) < 0.25
    # Lost replies move the consensus; it stays near the true mean (measured: a few 1e-2).
    assert relative_error(mean_of([p.params for p in nodes]), truth) < 0.1


def test_exchanges_to_reach_1e4_grow_like_log_n() -> None:
    measured = {n: rounds_to(1e-4, n) for n in (16, 64, 256)}
    measured[1024] = rounds_to(1e-4, 1024, view=64)  # partial view, as large networks keep
    # log2 n goes 4 -> 10 (x2.5); linear growth would be x64.
    assert measured[1024] < 2.0 * measured[16], measured
    assert all(r < 60 for r in measured.values()), measured


@pytest.mark.parametrize("codec", ["float16", "int8", "sparse-float16", "sparse-int8"])
def test_lossy_codecs_still_reach_consensus_near_the_mean(codec: str) -> None:
    network, nodes, truth = cluster(32, "pairwise", codec=codec, seed=2)

    def consensus() -> float:
        return worst_error(nodes, mean_of([p.params for p in nodes]))

    assert network.run(300.0, lambda: consensus() < 1e-2, check_every=0.5)
    assert relative_error(mean_of([p.params for p in nodes]), truth) < 0.05


def test_push_sum_rejects_sparse_codecs() -> None:
    with pytest.raises(ValueError, match="push-sum needs whole arrays"):
        GossipConfig(strategy="push-sum", codec=Codec("sparse-int8"))


def test_model_version_is_a_logical_clock_a_peer_can_push_only_so_far() -> None:
    _, (veteran, newcomer), _ = cluster(2, "pairwise", versions=(300,))
    update = ModelUpdate(Kind.MERGE_REQUEST, {k: v.copy() for k, v in veteran.params.items()},
                         version=veteran.version)  # fmt: skip
    newcomer.receive(veteran.node_id, update, 0.0)
    assert newcomer.version == 301  # caught up with the model it merged
    forged = ModelUpdate(Kind.MERGE_REQUEST, update.params, version=10**12)
    newcomer.receive(veteran.node_id, forged, 0.0)
    assert newcomer.version == 301 + MAX_VERSION_LEAD + 1


@pytest.mark.parametrize("fresh_asks", [True, False])
def test_a_fresh_node_adopts_an_established_model_and_leaves_it_untouched(fresh_asks: bool) -> None:
    _, (veteran, fresh), _ = cluster(2, "pairwise", versions=(ESTABLISHED,))
    established = {k: v.copy() for k, v in veteran.params.items()}
    asker, answerer = (fresh, veteran) if fresh_asks else (veteran, fresh)
    now = asker.next_tick
    [request] = asker.tick(now)
    [reply] = answerer.receive(asker.node_id, request.update, now)
    asker.receive(answerer.node_id, reply.update, now)
    # Averaging would have set the veteran back halfway to the common start.
    np.testing.assert_array_equal(veteran.params["v"], established["v"])
    np.testing.assert_allclose(fresh.params["v"], established["v"], atol=1e-6)
    assert fresh.version > ESTABLISHED


def test_nodes_that_are_both_established_or_both_fresh_average() -> None:
    for version in (0, ESTABLISHED):
        _, (a, b), _ = cluster(2, "pairwise", versions=(version, version))
        before = (a.params["v"] + b.params["v"]) / 2
        now = a.next_tick
        [request] = a.tick(now)
        [reply] = b.receive(a.node_id, request.update, now)
        a.receive(b.node_id, reply.update, now)
        np.testing.assert_allclose(a.params["v"], before, atol=1e-6)
        np.testing.assert_allclose(b.params["v"], before, atol=1e-6)


def test_a_model_message_refreshes_a_live_peer_but_never_revives_a_dead_one() -> None:
    _, (a, b), _ = cluster(2, "pairwise")
    update = ModelUpdate(Kind.MERGE_REQUEST, {k: v.copy() for k, v in b.params.items()})
    a.peer_left(b.node_id)  # its last will arrived first
    a.receive(b.node_id, update, 5.0)  # then a request it had sent before dying
    assert a.status().state_of(b.node_id) is PeerState.DEAD
    a.peer_heard(b.node_id, 6.0)  # a new beacon: back
    assert a.status().state_of(b.node_id) is PeerState.ALIVE


def test_a_node_whose_requests_go_unanswered_waits_then_forgets_them() -> None:
    from gossiprec.gossip.protocol import REPLY_WAIT_PERIODS

    config = GossipConfig(membership=NEVER, jitter=0.0)
    node = GossipProtocol(b"\x00" * 16, {"v": np.zeros((5, 2), np.float32)}, config,
                          random.Random(0), 0.0)  # fmt: skip
    peers = [i.to_bytes(16, "big") for i in range(1, 40)]
    for peer in peers:
        node.peer_heard(peer, 0.0)
    now, asked, held = 0.0, list[tuple[float, bytes]](), 0
    for _ in range(40):  # every peer dead to replies: a crashed or overloaded network
        now += config.period
        asked += [(now, send.peer) for send in node.tick(now)]
        held = max(held, len(node._outstanding))
    assert held == 1, "one copy of the model awaits a reply, not one per round"
    gaps = {later - earlier for (earlier, _), (later, _) in itertools.pairwise(asked)}
    assert gaps == {(REPLY_WAIT_PERIODS + 1) * config.period}, "a new request once the wait is over"

    def reply_to(sent_at: float) -> ModelUpdate:
        return ModelUpdate(Kind.MERGE_REPLY, {"v": np.ones((5, 2), np.float32)}, 1.0, 1, now,
                           alpha=0.5, reply_to=sent_at)  # fmt: skip

    (first_at, first), (last_at, last) = asked[0], asked[-1]
    node.receive(first, reply_to(first_at), now)  # long forgotten: ignored like a lost one
    assert node.status().merged == 0 and node.status().ignored == 1
    node.receive(last, reply_to(last_at), now)
    assert node.status().merged == 1 and float(node.params["v"].mean()) == pytest.approx(0.5)
    assert node.tick(now + config.period), "answered: the next round asks again"


def test_a_request_to_a_peer_that_left_is_not_awaited() -> None:
    config = GossipConfig(membership=NEVER)
    node = GossipProtocol(b"\x00" * 16, {"v": np.zeros((5, 2), np.float32)}, config,
                          random.Random(0), 0.0)  # fmt: skip
    for peer in (b"\x01" * 16, b"\x02" * 16):
        node.peer_heard(peer, 0.0)
    now = 2 * config.period
    (asked,) = node.tick(now)
    node.peer_left(asked.peer)  # its last will: no reply will come
    (again,) = node.tick(now + 2 * config.period)
    assert again.peer != asked.peer, "the next round asks the peer still alive"


def test_a_reply_slower_than_a_period_is_counted_late() -> None:
    config = GossipConfig(membership=NEVER, jitter=0.0)
    node = GossipProtocol(b"\x00" * 16, {"v": np.zeros((5, 2), np.float32)}, config,
                          random.Random(0), 0.0)  # fmt: skip
    peer = b"\x01" * 16
    node.peer_heard(peer, 0.0)
    for delay in (0.1 * config.period, 1.5 * config.period):
        (request,) = node.tick(node.next_tick)
        sent_at = request.update.sent_at
        reply = ModelUpdate(Kind.MERGE_REPLY, {"v": np.ones((5, 2), np.float32)}, 1.0, 1,
                            sent_at + delay, alpha=0.5, reply_to=sent_at)  # fmt: skip
        node.peer_heard(peer, sent_at + delay)
        node.receive(peer, reply, sent_at + delay)
    status = node.status()
    assert (status.merged, status.late) == (2, 1)
