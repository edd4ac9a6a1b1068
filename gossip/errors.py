"""The error tree of gossip/: one base, so callers can tell our errors from everything else."""

from __future__ import annotations


class GossipError(Exception):
    """Base of every error gossip/ raises on purpose."""


class DecodeError(GossipError):
    """A payload is malformed or violates a limit; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
