"""Pacing a simulation to the machine it runs on.

All nodes of a simulation share one process. When it cannot keep up, replies come late (more
than a period after their request: a node skips its rounds while its requests await them,
gossip/protocol.py) and updates that still pile up in an inbox are shed (`inbox:overflow`).
Either way the nodes gossip less often than asked while they still train on time, and a
943-node run that kept up at a 6 s period on one day fell behind at 6 s on a slower one. So the
simulation stretches every node's gossip and training periods together (keeping merges per
training round) while replies come late or updates are shed, and eases back towards the
requested periods once hardly any do (a quarter of the limit: among 943 nodes a stray late
reply, from a checkpoint or an evaluation, comes in most windows, and periods stretched once
would otherwise never ease). Replies that never come (a peer's defence refused the request)
say nothing about the pace and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW = 10.0  # seconds between decisions
BEHIND_LIMIT = 0.01  # late replies and shed updates in a window, as a share of its merges
EASE_BELOW = BEHIND_LIMIT / 4  # the band between holds the factor: no see-saw at the limit
STRETCH = 1.25
EASE = 1.05
MOST = 4.0


@dataclass
class Pacer:
    factor: float = 1.0  # the periods in effect are the requested ones times this
    highest: float = 1.0
    due: float = WINDOW  # when the next decision is
    _behind: int = 0
    _merged: int = 0

    def update(self, now: float, behind: int, merged: int) -> bool:
        """Feed the run's cumulative late replies plus shed updates (`behind`) and merges; True
        when the factor changed."""
        if now < self.due:
            return False
        self.due = now + WINDOW
        behind_now, merged_now = behind - self._behind, merged - self._merged
        self._behind, self._merged = behind, merged
        before = self.factor
        judged = max(merged_now, 100)  # a quiet window is judged as one of 100 merges
        if behind_now > BEHIND_LIMIT * judged:
            self.factor = min(MOST, self.factor * STRETCH)
        elif behind_now <= EASE_BELOW * judged:
            self.factor = max(1.0, self.factor / EASE)
        self.highest = max(self.highest, self.factor)
        return self.factor != before
