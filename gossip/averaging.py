"""Gossip averaging as plain numpy functions. Parameters are dicts of named float32 arrays.

push-sum (Kempe et al., 2003): every node holds an estimate x and a weight w. Sending gives
away a share of w with x; receiving merges x <- (x w + x' w') / (w + w'). The sum of x*w over
all nodes and messages never changes, so with no loss every estimate tends to the exact mean.

pairwise merge: B blends A's model into its own with weight alpha (1/2 for a fresh one, less
the staler it is) and replies with its pre-merge model and that alpha; A then moves by
alpha * (x_B - x_A as sent). The two moves cancel, so the sum is conserved even if A's model
changed meanwhile; a lost request costs nothing, a lost reply only what that exchange moved.
"""

from __future__ import annotations

import numpy as np

from gossiprec.gossip.messages import Arrays, Rows


def difference(remote: Arrays, base: Arrays, rows: Rows | None = None) -> Arrays:
    """remote - base, a new array per name; only the rows `remote` carries where given."""
    out = {}
    for name, values in remote.items():
        index = None if rows is None else rows.get(name)
        out[name] = values - (base[name] if index is None else base[name][index])
    return out


def move(local: Arrays, differences: Arrays, alpha: float, rows: Rows | None = None) -> None:
    """local += alpha * differences, in place; only `rows` where given.

    Every merge is one: push-sum with alpha = w' / (w + w') against the local model; B's half of
    a pairwise exchange with its alpha against the local model; A's with the alpha B used against
    the model A sent."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    for name, values in differences.items():
        index = None if rows is None else rows.get(name)
        if index is None:
            local[name] += alpha * values
        else:
            local[name][index] += alpha * values


def staleness_alpha(age_seconds: float, half_life: float, base: float = 0.5) -> float:
    """Merge weight of a model `age_seconds` old: `base`, halved every `half_life` seconds."""
    if half_life <= 0:
        return base
    return float(base * 0.5 ** (max(0.0, age_seconds) / half_life))


def mean_of(models: list[Arrays]) -> Arrays:
    return {name: np.mean([m[name] for m in models], axis=0) for name in models[0]}


def relative_error(model: Arrays, reference: Arrays) -> float:
    """max over arrays of ||model - reference|| / ||reference||."""
    worst = 0.0
    for name, ref in reference.items():
        scale = float(np.linalg.norm(ref)) or 1.0
        worst = max(worst, float(np.linalg.norm(model[name] - ref)) / scale)
    return worst
