"""Per-peer standing: peers whose differences are clipped far beyond the radius again and again
are rate-limited, then quarantined for a while, then given another chance.

A strike is a message more than `strike_at` radii long; a clean message takes a quarter strike
back, so an honest peer's rare outlier fades while a hostile one's strikes pile up.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossiprec.gossip.defence import DefenceConfig

FORGIVE = 0.25  # strikes a clean message takes back


@dataclass
class Standing:
    strikes: float = 0.0
    clipped: int = 0  # messages of this peer that were cut at all
    refused: int = 0  # messages not merged: rate-limited or quarantined
    quarantines: int = 0
    quarantined_until: float = 0.0
    last_merged: float = float("-inf")


class Reputation:
    def __init__(self, config: DefenceConfig) -> None:
        self._config = config
        self._peers: dict[bytes, Standing] = {}

    def of(self, peer: bytes) -> Standing:
        return self._peers.setdefault(peer, Standing())

    def known(self, peer: bytes) -> Standing | None:
        return self._peers.get(peer)

    def quarantined(self, peer: bytes, now: float) -> bool:
        standing = self._peers.get(peer)
        return standing is not None and now < standing.quarantined_until

    def admits(self, peer: bytes, now: float, period: float) -> bool:
        """Whether a message of `peer` may be merged now; counts the refusal if not."""
        standing = self.of(peer)
        limited = standing.strikes >= self._config.limit_at
        too_soon = now - standing.last_merged < self._config.limit_periods * period
        if now < standing.quarantined_until or (limited and too_soon):
            standing.refused += 1
            return False
        return True

    def judge(self, peer: bytes, excess: float, now: float) -> None:
        """A merged message of `peer` was `excess` radii long (<= 1: nothing cut)."""
        standing = self.of(peer)
        standing.last_merged = now
        standing.clipped += excess > 1.0
        if excess <= self._config.strike_at:
            standing.strikes = max(0.0, standing.strikes - FORGIVE)
            return
        standing.strikes += 1
        if standing.strikes >= self._config.quarantine_at:
            standing.strikes = 0.0
            standing.quarantines += 1
            standing.quarantined_until = now + self._config.quarantine_for
