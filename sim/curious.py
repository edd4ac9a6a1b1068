"""An honest-but-curious peer: it follows the protocol, and guesses from what it receives which
items each sender's users touched.

What a node sends is its shared item rows, moved by its own users' training since its previous
message (and by its merges). For every sender the curious node keeps the last value it saw of
each row and scores each item by how far its row moved between consecutive messages, normalised
by the median move of that message (a merge moves every row; training moves the touched ones
more). A row carried more often than others (a sparse codec choosing "the rows that moved
most") adds up more observations, so that choice is read as well. The simulation checks the
scores against each sender's true item set (`item_set_auc`).
"""

from __future__ import annotations

import random

import numpy as np
from scipy.stats import rankdata

from gossiprec.gossip.messages import Arrays, ModelUpdate, Send
from gossiprec.gossip.protocol import GossipConfig, GossipProtocol


class ItemSetInference:
    """Per sender and shared array: the last value seen of each row; per sender, each item's
    score so far."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        # float16 halves the memory (a row per item per sender); NaN: not seen yet.
        self._last: dict[tuple[bytes, str], np.ndarray] = {}
        self.scores: dict[bytes, np.ndarray] = {}  # float64 [n_items]

    def observe(self, sender: bytes, update: ModelUpdate) -> None:
        score = self.scores.setdefault(sender, np.zeros(self.n_items))
        for name, values in update.params.items():
            carried = update.rows.get(name, np.arange(len(values)))
            rows = values.reshape(len(values), -1).astype(np.float32)
            last = self._last.get((sender, name))
            if last is None:
                last = np.full((self.n_items, rows.shape[1]), np.nan, np.float16)
                self._last[sender, name] = last
            before = last[carried].astype(np.float32)
            seen = ~np.isnan(before[:, 0])
            if seen.any():
                moved = np.linalg.norm(rows[seen] - before[seen], axis=1)
                score[carried[seen]] += moved / (float(np.median(moved)) or 1.0)
            last[carried] = rows


class CuriousProtocol(GossipProtocol):
    """The honest core, which also records what every peer sends it."""

    def __init__(self, node_id: bytes, params: Arrays, config: GossipConfig,
                 rng: random.Random, now: float, *, version: int = 0) -> None:  # fmt: skip
        super().__init__(node_id, params, config, rng, now, version=version)
        self.inference = ItemSetInference(len(next(iter(params.values()))))

    def receive(self, peer: bytes, update: ModelUpdate, now: float) -> list[Send]:
        if set(update.params) == set(self.params):
            self.inference.observe(peer, update)
        return super().receive(peer, update, now)


def item_set_auc(scores: np.ndarray, touched: np.ndarray, k: int = 10) -> tuple[float, float]:
    """(AUC, precision@k) of `scores` at telling the items in `touched` from all others: the
    chance a touched item scores above an untouched one (ties count half)."""
    positive = np.zeros(len(scores), dtype=bool)
    positive[touched] = True
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan"), float("nan")
    ranks = rankdata(scores)  # Mann-Whitney U, ties at their average rank
    auc = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    top = np.argsort(-scores, kind="stable")[:k]
    return float(auc), float(positive[top].mean())
