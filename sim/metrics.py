"""Ranking metrics in plain numpy. Ties are pessimistic: an equal score ranks above the positive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from gossiprec.sim.split import LeaveOneOut

# score(users [B], items [B, C]) -> scores [B, C]
Scorer = Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], npt.NDArray[np.floating]]


def pessimistic_rank(positive: np.ndarray, others: np.ndarray) -> np.ndarray:
    """0-based rank of each row's positive among others: how many others score >= it.

    NaN scores count as beating the positive, so a broken model never looks good.
    """
    beats = (others >= positive[:, None]) | np.isnan(others) | np.isnan(positive)[:, None]
    return np.asarray(beats.sum(axis=1), dtype=np.int64)


def hit_rate(rank: np.ndarray, k: int) -> float:
    return float(np.mean(rank < k)) if len(rank) else 0.0


def ndcg(rank: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: 1/log2(rank + 2) inside the top k, else 0."""
    if not len(rank):
        return 0.0
    gains = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return float(np.mean(gains))


@dataclass(frozen=True)
class Metrics:
    hr10: float
    ndcg10: float
    recall20: float
    ndcg20: float
    users: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def sampled_ranks(
    split: LeaveOneOut, score: Scorer, users: np.ndarray, *, on: str = "test"
) -> np.ndarray:
    """Rank of the held-out item among its 99 sampled negatives (the NCF protocol)."""
    held = split.test_item if on == "test" else split.valid_item
    negatives = split.test_negatives if on == "test" else split.valid_negatives
    users = users[held[users] >= 0]
    candidates = np.concatenate([held[users][:, None], negatives[users]], axis=1)
    scores = np.asarray(score(users, candidates), dtype=np.float64)
    valid = candidates[:, 1:] >= 0
    others = np.where(valid, scores[:, 1:], -np.inf)
    return pessimistic_rank(scores[:, 0], others)


def full_ranks(split: LeaveOneOut, score: Scorer, users: np.ndarray) -> np.ndarray:
    """Rank of the test item among every item the user has not seen in train or validation."""
    users = users[split.test_item[users] >= 0]
    all_items = np.broadcast_to(np.arange(split.n_items), (len(users), split.n_items))
    scores = np.asarray(score(users, np.ascontiguousarray(all_items)), dtype=np.float64)
    positive = scores[np.arange(len(users)), split.test_item[users]]
    seen = split.seen_mask(users, include_valid=True)
    others = np.where(seen, -np.inf, scores)
    others[np.arange(len(users)), split.test_item[users]] = -np.inf
    return pessimistic_rank(positive, others)


def evaluate(split: LeaveOneOut, score: Scorer, users: np.ndarray | None = None) -> Metrics:
    users = split.evaluated_users() if users is None else np.asarray(users, dtype=np.int64)
    sampled = sampled_ranks(split, score, users)
    full = full_ranks(split, score, users)
    return Metrics(
        hr10=hit_rate(sampled, 10),
        ndcg10=ndcg(sampled, 10),
        recall20=hit_rate(full, 20),
        ndcg20=ndcg(full, 20),
        users=len(sampled),
    )


def validation_hr10(split: LeaveOneOut, score: Scorer, users: np.ndarray | None = None) -> float:
    users = split.evaluated_users() if users is None else np.asarray(users, dtype=np.int64)
    return hit_rate(sampled_ranks(split, score, users, on="valid"), 10)


def user_hits(split: LeaveOneOut, score: Scorer, k: int = 10) -> np.ndarray:
    """Per user index: 1.0 if the test item ranks in the top k, 0.0 if not, NaN if not evaluated.
    Lets one model's HR@k be read off for any group of users afterwards."""
    users = split.evaluated_users()
    hits = np.full(split.n_users, np.nan)
    hits[users[split.test_item[users] >= 0]] = sampled_ranks(split, score, users) < k
    return hits


def exposure(split: LeaveOneOut, score: Scorer, users: np.ndarray, targets: np.ndarray,
             k: int = 10) -> float:  # fmt: skip
    """ER@k: the share of `users` whose top k among the items they have not seen (in train or
    validation) holds any of `targets`. Unscored items (NaN) never make a top k."""
    if not len(users) or not len(targets):
        return 0.0
    all_items = np.broadcast_to(np.arange(split.n_items), (len(users), split.n_items))
    scores = np.asarray(score(users, np.ascontiguousarray(all_items)), dtype=np.float64)
    scores[np.isnan(scores) | split.seen_mask(users, include_valid=True)] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    hit = np.isin(top, targets) & np.isfinite(np.take_along_axis(scores, top, axis=1))
    return float(hit.any(axis=1).mean())
