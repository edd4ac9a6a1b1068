"""Topic layout: parse inverts the builders; sharded presence views are symmetric."""

from __future__ import annotations

import os

from gossiprec.gossip import topics


def test_parse_inverts_presence_inbox_and_sharded_presence() -> None:
    node_id = bytes(range(16))
    assert topics.parse(topics.inbox("n", node_id), "n") == ("inbox", node_id)
    for shards in (1, 2, 64, 256):
        assert topics.parse(topics.presence("n", node_id, shards), "n") == ("presence", node_id)
    assert topics.parse(topics.presence("other", node_id), "n") == ("other", None)
    assert topics.parse("gossiprec/v1/n/presence/zz/" + node_id.hex(), "n") == ("other", None)


def test_sharded_views_are_symmetric_and_partial() -> None:
    ids = [os.urandom(16) for _ in range(2_000)]
    shards = 128

    def sees(a: bytes, b: bytes) -> bool:
        topic = topics.presence("n", b, shards)
        return any(topics.matches(p, topic) for p in topics.presence_subscriptions("n", a, shards))

    for a, b in zip(ids[:300], ids[300:600], strict=True):
        assert sees(a, b) == sees(b, a)
    view = sum(sees(ids[0], b) for b in ids[1:])
    # Expected: 8 of 128 shards (itself and 7 one bit away) = 1/16 of the network.
    assert 60 < view < 200
    assert len(topics.neighbour_shards(5, shards)) == 8 and topics.presence_subscriptions(
        "n", ids[0]
    ) == ["gossiprec/v1/n/presence/+"]
