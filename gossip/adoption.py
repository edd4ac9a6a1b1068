"""A fresh node's adoption of the network's model: the element-wise median of several
established peers' models, row by row, so no single peer's model is taken at its word.

A fresh node (version 0) holds an untouched model: averaging it in would set the network back,
so it adopts instead. Each row is adopted once `count` distinct peers have sent it (a sparse
message carries some rows); the adoption is complete when every row has been.
"""

from __future__ import annotations

import numpy as np

from gossiprec.gossip.messages import Arrays, Rows


class Adoption:
    def __init__(self, params: Arrays, count: int) -> None:
        self._count = count
        self._stack = {name: np.zeros((count, *a.shape), dtype=np.float32)
                       for name, a in params.items()}  # fmt: skip
        self._seen = {name: np.zeros(len(a), dtype=np.int64) for name, a in params.items()}
        self._peers: set[bytes] = set()

    @property
    def complete(self) -> bool:
        return all(bool(np.all(seen >= self._count)) for seen in self._seen.values())

    def offer(self, peer: bytes, remote: Arrays, rows: Rows | None, local: Arrays) -> None:
        """One established peer's model (or the rows it carries); each peer counts once. Rows that
        reach `count` copies are written into `local` as their median."""
        if peer in self._peers:
            return
        self._peers.add(peer)
        for name, values in remote.items():
            index = np.arange(len(values)) if not rows or name not in rows else rows[name]
            seen, stack = self._seen[name], self._stack[name]
            fresh = seen[index] < self._count
            index, values = index[fresh], values[fresh]
            stack[seen[index], index] = values
            seen[index] += 1
            done = index[seen[index] == self._count]
            if len(done):
                local[name][done] = np.median(stack[:, done], axis=0)
