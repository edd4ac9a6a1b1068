"""MQTT topics, one place. A node publishes only its presence and into other nodes' inboxes."""

from __future__ import annotations

PREFIX = "gossiprec/v1"


def presence(network: str, node_id: bytes) -> str:
    return f"{PREFIX}/{network}/presence/{node_id.hex()}"


def inbox(network: str, node_id: bytes) -> str:
    return f"{PREFIX}/{network}/inbox/{node_id.hex()}"


def crl(network: str) -> str:
    return f"{PREFIX}/{network}/crl"


def all_presence(network: str) -> str:
    return f"{PREFIX}/{network}/presence/+"


def parse(topic: str, network: str) -> tuple[str, bytes | None]:
    """("presence" | "inbox" | "crl" | "other", node id or None) for a received topic."""
    parts = topic.split("/")
    if parts[:3] != [*PREFIX.split("/"), network]:
        return "other", None
    if parts[3:] == ["crl"]:
        return "crl", None
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
