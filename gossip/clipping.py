"""Self-centered clipping of incoming differences, with a radius learned from recent ones.

A difference d = x_peer - x_local is cut per row to the row radius and then, as a whole array,
to the array radius; a merge then moves the local model by alpha * d, so no single message moves
it further than the radii. The radii are `radius` times the median, over the last `history`
messages, of each message's 90th-percentile row norm and of its whole norm: honest differences
set them (a median ignores a minority of hostile ones), and they shrink as the network agrees.
Before `warmup` messages, a tenth of the local model's own row norms stands in for the history.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

import numpy as np

from gossiprec.gossip.defence import DefenceConfig
from gossiprec.gossip.messages import Arrays

ROW_QUANTILE = 90


class Clipper:
    def __init__(self, config: DefenceConfig) -> None:
        self._config = config
        self._row_norms: dict[str, deque[float]] = {}
        self._array_norms: dict[str, deque[float]] = {}

    def radii(self, name: str, local: np.ndarray) -> tuple[float, float]:
        """(row radius, array radius) for a difference of array `name`; `local` is the local
        model's part the difference applies to."""
        rows, whole = self._row_norms.get(name), self._array_norms.get(name)
        if rows is None or whole is None or len(rows) < self._config.warmup:
            norms, share = _row_norms(local), self._config.warmup_scale
            return share * _quantile(norms), share * _whole(norms)
        scale = self._config.radius
        return scale * statistics.median(rows), scale * statistics.median(whole)

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
    """The ROW_QUANTILE-th percentile (the nearest row below it): a partition, not a sort."""
    k = (len(norms) - 1) * ROW_QUANTILE // 100
    return float(np.partition(norms, k)[k])


def _whole(norms: np.ndarray) -> float:
    return math.sqrt(float(np.dot(norms, norms)))
