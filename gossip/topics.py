"""MQTT topics, one place. A node publishes only its presence and into other nodes' inboxes.

Presence can be sharded so that membership does not cost every node O(N) beacons: with S shards
(a power of two) a node's beacon goes to `presence/{shard}/{node_id}`, its shard taken from the
top bits of its id, and it subscribes to its own shard and the shards one bit away from it. That
relation is symmetric, so whoever can send to a node is also known to it (its certificate came
with its beacon): each node sees about N * (log2 S + 1) / S peers.
"""

from __future__ import annotations

PREFIX = "gossiprec/v1"
MAX_SHARDS = 256


def shard_of(node_id: bytes, shards: int) -> int:
    return node_id[0] * shards // MAX_SHARDS


def neighbour_shards(shard: int, shards: int) -> list[int]:
    """The shard itself and those differing from it in one bit (a hypercube: symmetric)."""
    return [shard] + [shard ^ bit for bit in (1 << k for k in range(shards.bit_length() - 1))]


def presence(network: str, node_id: bytes, shards: int = 1) -> str:
    if shards == 1:
        return f"{PREFIX}/{network}/presence/{node_id.hex()}"
    return f"{PREFIX}/{network}/presence/{shard_of(node_id, shards):02x}/{node_id.hex()}"


def presence_subscriptions(network: str, node_id: bytes, shards: int = 1) -> list[str]:
    if shards == 1:
        return [all_presence(network)]
    shard = shard_of(node_id, shards)
    return [f"{PREFIX}/{network}/presence/{t:02x}/+" for t in neighbour_shards(shard, shards)]


def inbox(network: str, node_id: bytes) -> str:
    return f"{PREFIX}/{network}/inbox/{node_id.hex()}"


def crl(network: str) -> str:
    return f"{PREFIX}/{network}/crl"


def catalogue(network: str) -> str:
    return f"{PREFIX}/{network}/catalogue"


def all_presence(network: str) -> str:
    return f"{PREFIX}/{network}/presence/+"


def parse(topic: str, network: str) -> tuple[str, bytes | None]:
    """("presence" | "inbox" | "crl" | "catalogue" | "other", node id or None) for a received
    topic."""
    parts = topic.split("/")
    if parts[:3] != [*PREFIX.split("/"), network]:
        return "other", None
    if parts[3:] == ["crl"]:
        return "crl", None
    if parts[3:] == ["catalogue"]:
        return "catalogue", None
    if len(parts) == 6 and parts[3] == "presence":  # sharded: presence/{shard}/{node_id}
        if len(parts[4]) != 2 or any(c not in "0123456789abcdef" for c in parts[4]):
            return "other", None
        parts = parts[:4] + parts[5:]
    if len(parts) == 5 and parts[3] in ("presence", "inbox"):
        try:
            node_id = bytes.fromhex(parts[4])
        except ValueError:
            return "other", None
        return (parts[3], node_id) if len(node_id) == 16 else ("other", None)
    return "other", None


def matches(pattern: str, topic: str) -> bool:
    """MQTT wildcard matching: + is one level, # the rest."""
    pattern_parts, topic_parts = pattern.split("/"), topic.split("/")
    for index, part in enumerate(pattern_parts):
        if part == "#":
            return True
        if index >= len(topic_parts) or (part != "+" and part != topic_parts[index]):
            return False
    return len(pattern_parts) == len(topic_parts)
