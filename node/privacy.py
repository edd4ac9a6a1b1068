"""User-level differential privacy of what a node shares, and the privacy it has spent.

A private training round (the mechanism, in `BPRMF.private_round`) takes one step on all local
interactions in which each user's gradient of the shared parameters is clipped to `clip` (L2)
and Gaussian noise of std `noise_multiplier x clip` is added to their sum before it enters the
model: whatever one user did, the model moves by at most `lr x clip` on their account, under
noise.
Everything the node sends afterwards is computed from that model and from peers' messages, so
it is covered too (post-processing). A round with every user in it is the Gaussian mechanism
with sensitivity `clip`; rounds compose, and the privacy spent is read from `dp_accounting`'s
RDP accountant (Mironov, 2017; as in Opacus and TensorFlow Privacy), never from a formula here.

A killed node must not forget rounds it spent: the ledger reserves rounds durably in batches
before spending them, and a restart counts every reserved round as spent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import dp_accounting

RESERVE = 16  # rounds reserved per durable write
# Renyi orders the accountant tries: dense near 1 (large noise, many rounds) and up to 256.
ORDERS = [1 + x / 20 for x in range(1, 100)] + list(range(6, 257))
RESERVED_ROUNDS = "privacy_rounds_reserved"  # the store counter the ledger keeps


def _accountant() -> dp_accounting.rdp.RdpAccountant:
    return dp_accounting.rdp.RdpAccountant(ORDERS)


@functools.lru_cache(maxsize=4096)
def epsilon_spent(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon at `delta` after `rounds` Gaussian rounds of this noise multiplier."""
    if rounds <= 0:
        return 0.0
    accountant = _accountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def noise_for(epsilon: float, delta: float, rounds: int) -> float:
    """The least noise multiplier that keeps `rounds` rounds within (epsilon, delta)."""

    def event(sigma: float) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), rounds)

    found = dp_accounting.calibrate_dp_mechanism(
        _accountant,
        event,
        epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        tol=1e-4,
    )
    return float(found)


@functools.lru_cache(maxsize=64)
def rounds_within(noise_multiplier: float, epsilon: float, delta: float) -> int:
    """The most rounds that stay within (epsilon, delta): found once, then a round only counts."""
    low, high = 0, 1
    while epsilon_spent(noise_multiplier, high, delta) <= epsilon:
        low, high = high, high * 2
        if high > 10**9:
            return high
    while high - low > 1:
        middle = (low + high) // 2
        if epsilon_spent(noise_multiplier, middle, delta) <= epsilon:
            low = middle
        else:
            high = middle
    return low


class Ledger:
    """Rounds spent under one noise multiplier, and the budget they are held to."""

    def __init__(self, noise_multiplier: float, epsilon: float, delta: float, spent: int,
                 reserve: Callable[[int], None]) -> None:  # fmt: skip
        """`spent`: rounds a previous run reserved (all counted as spent); `reserve(n)` records
        n more durably before they are used."""
        self.noise_multiplier = noise_multiplier
        self.budget = epsilon
        self.delta = delta
        self.rounds = spent
        self._reserved = spent
        self._reserve = reserve

    @property
    def epsilon(self) -> float:
        return epsilon_spent(self.noise_multiplier, self.rounds, self.delta)

    @property
    def exhausted(self) -> bool:
        """Whether one more round would go over the budget."""
        return self.rounds >= rounds_within(self.noise_multiplier, self.budget, self.delta)

    def spend(self) -> None:
        """Count one round, reserving more on disk first when the reserve is used up."""
        if self.rounds >= self._reserved:
            self._reserve(RESERVE)
            self._reserved += RESERVE
        self.rounds += 1

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"epsilon": self.epsilon, "delta": self.delta, "budget": self.budget,
                "rounds": self.rounds, "noise_multiplier": self.noise_multiplier,
                "exhausted": self.exhausted}  # fmt: skip
