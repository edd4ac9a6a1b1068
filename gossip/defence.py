"""What an admitted peer can do to this node's model, bounded by this node's own rules.

Certificates keep strangers out; a member can still be compromised. So nothing a peer says is
taken at its word (ClippedGossip: He, Karimireddy and Jaggi, ICLR 2023):
- each difference x_peer - x_local is clipped per row and per array to a radius this node learns
  from the differences it has recently seen (gossip/clipping.py), and one more than `strike_at`
  radii long is not merged at all;
- a peer whose differences are clipped far beyond that radius again and again is rate-limited,
  then quarantined for a while (gossip/reputation.py);
- the merge weight of a reply is at most the one this node would have chosen, a push-sum weight
  at most `max_weight_ratio` times this node's own;
- the model version a peer claims moves this node's only as far as the upper quartile of its
  peers' versions (so a few peers cannot run down everyone's learning-rate schedule);
- a fresh node adopts an established model only as the element-wise median of several
  established peers' models (gossip/adoption.py), never one peer's word.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DefenceConfig:
    # The clip radius, as a multiple of the median of recent differences' norms (per array: the
    # 90th percentile of its rows' norms, and the whole array's norm).
    radius: float = 3.0
    history: int = 32  # recent messages the radius is the median over
    warmup: int = 8  # until this many were seen, the local model's own row norms bound a move:
    warmup_scale: float = 0.1  # ... this share of them
    strike_at: float = 4.0  # a difference this many radii long is a strike against its sender
    limit_at: float = 2.0  # strikes (less 1/4 per clean message) that rate-limit a peer
    quarantine_at: float = 4.0  # ... and that quarantine it
    quarantine_for: float = 300.0  # seconds
    limit_periods: float = 4.0  # a rate-limited peer is merged once per this many gossip periods
    max_weight_ratio: float = 4.0  # push-sum: a share's weight counts at most this x one's own
    adopt_from: int = 3  # established peers whose median a fresh node adopts

    def __post_init__(self) -> None:
        if (
            self.radius <= 0
            or self.warmup_scale <= 0
            or self.history < 1
            or self.warmup < 1
            or self.strike_at <= 1
        ):
            raise ValueError(
                "need radius, warmup_scale > 0, history, warmup >= 1 and strike_at > 1"
            )
        if not 0 < self.limit_at <= self.quarantine_at or self.quarantine_for < 0:
            raise ValueError("need 0 < limit_at <= quarantine_at and quarantine_for >= 0")
        if self.max_weight_ratio <= 0 or self.adopt_from < 1 or self.limit_periods < 0:
            raise ValueError("need max_weight_ratio > 0, adopt_from >= 1, limit_periods >= 0")
