"""Self-centered clipping of incoming differences, with a radius learned from recent ones.

A difference d = x_peer - x_local is cut per row to the row radius and then, as a whole array,
to the array radius; a merge then moves the local model by alpha * d, so no single message moves
it further than the radii. The radii are `radius` times the median, over the last `history`
messages, of each message's 90th-percentile row norm and of its whole norm: honest differences
set them (a median ignores a minority of hostile ones), and they shrink as the network agrees.
Before `warmup` messages, a tenth of the local model's own row norms stands in for the history
(none at all while the local part is still all zeros: it knows nothing to judge by yet), and a
tenth of that stays a floor afterwards.

Percentiles are over the rows that moved: at least 1% of the longest row. In a table whose rows
are mostly unused (item ids hashed into spare rows, features nobody has yet) the idle rows, zero
or only float16 rounding apart, would set every radius near 0, and every honest message would
look infinitely far.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

import numpy as np

from gossiprec.gossip.defence import DefenceConfig
from gossiprec.gossip.messages import Arrays

ROW_QUANTILE = 90
MOVED = 0.01  # a row moved if its norm is at least this share of the longest row's
FLOOR = 0.1  # share of the warm-up radii below which no radius shrinks
LOCAL_EVERY = 16  # messages between two looks at the local model's row norms


class Clipper:
    def __init__(self, config: DefenceConfig) -> None:
        self._config = config
        self._row_norms: dict[str, deque[float]] = {}
        self._array_norms: dict[str, deque[float]] = {}
        self._local: dict[str, tuple[int, tuple[float, float]]] = {}

    def radii(self, name: str, local: np.ndarray) -> tuple[float, float]:
        """(row radius, array radius) for a difference of array `name`; `local` is the local
        model's part the difference applies to."""
        own_row, own_array = self._local_radii(name, local)
        rows, whole = self._row_norms.get(name), self._array_norms.get(name)
        if rows is None or whole is None or len(rows) < self._config.warmup:
            return (own_row, own_array) if own_array else (math.inf, math.inf)
        # Peers that agree almost exactly (a node without users of its own, merges between
        # training rounds) would shrink the radii to float16 rounding; a move of a tenth of the
        # warm-up radius (1% of the local rows) is never suspect.
        scale = self._config.radius
        row = max(scale * statistics.median(rows), FLOOR * own_row)
        array = max(scale * statistics.median(whole), FLOOR * own_array)
        # Zero: peers sent only what this node has, and it has nothing (a node without users
        # and an array nobody trained yet): still nothing to judge by.
        return (row, array) if array else (math.inf, math.inf)

    def _local_radii(self, name: str, local: np.ndarray) -> tuple[float, float]:
        """The warm-up radii from the local model's rows, recomputed every LOCAL_EVERY calls."""
        calls, cached = self._local.get(name, (0, (0.0, 0.0)))
        if calls % LOCAL_EVERY == 0:
            norms, share = _row_norms(local), self._config.warmup_scale
            cached = share * _quantile(norms), share * _whole(norms)
        self._local[name] = calls + 1, cached
        return cached

    def clip(self, differences: Arrays, local: Arrays) -> float:
        """Clip `differences` in place; returns how many radii long the longest part was (at most
        1 when nothing was cut). `local` holds the local model's matching rows."""
        excess = 0.0
        for name, difference in differences.items():
            if not difference.size:
                continue
            row_radius, array_radius = self.radii(name, local[name])
            norms = _row_norms(difference)
            self._remember(name, _quantile(norms), _whole(norms))
            longest = float(norms.max())
            if longest > row_radius:
                cut = np.minimum(1.0, row_radius / np.maximum(norms, 1e-30)).astype(np.float32)
                difference *= cut.reshape((-1,) + (1,) * (difference.ndim - 1))
                norms = norms * cut
            whole = _whole(norms)
            if whole > array_radius:
                difference *= np.float32(array_radius / whole)
            excess = max(excess, longest / max(row_radius, 1e-30),
                         whole / max(array_radius, 1e-30))  # fmt: skip
        return excess

    def _remember(self, name: str, row_norm: float, array_norm: float) -> None:
        history = self._config.history
        self._row_norms.setdefault(name, deque(maxlen=history)).append(row_norm)
        self._array_norms.setdefault(name, deque(maxlen=history)).append(array_norm)


def _row_norms(array: np.ndarray) -> np.ndarray:
    """In float64: a hostile float32 value near its limit squares past float32's range."""
    rows = array.reshape(len(array), -1)
    return np.asarray(np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64)))


def _quantile(norms: np.ndarray) -> float:
    """The ROW_QUANTILE-th percentile of the rows that moved (the nearest row below it): a
    partition, not a sort."""
    norms = norms[norms >= MOVED * norms.max()] if len(norms) else norms
    if not len(norms) or not norms[0] > 0:
        return 0.0
    k = (len(norms) - 1) * ROW_QUANTILE // 100
    return float(np.partition(norms, k)[k])


def _whole(norms: np.ndarray) -> float:
    return math.sqrt(float(np.dot(norms, norms)))
