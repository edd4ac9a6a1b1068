from __future__ import annotations

import math

import numpy as np
import pytest

from gossiprec.sim.dataset import Dataset
from gossiprec.sim.metrics import evaluate, exposure, hit_rate, ndcg, pessimistic_rank, user_hits
from gossiprec.sim.split import N_NEGATIVES, leave_one_out


def test_rank_counts_ties_against_the_positive() -> None:
    positive = np.array([0.5, 0.5, 0.9])
    others = np.array([[0.1, 0.5, 0.7], [0.1, 0.2, 0.3], [1.0, 0.9, 0.9]])
    assert pessimistic_rank(positive, others).tolist() == [2, 0, 3]


def test_nan_scores_never_help() -> None:
    assert pessimistic_rank(np.array([np.nan]), np.array([[0.0, 0.0]])).tolist() == [2]
    assert pessimistic_rank(np.array([1.0]), np.array([[np.nan, 0.0]])).tolist() == [1]


def test_hit_rate_and_ndcg_by_hand() -> None:
    ranks = np.array([0, 1, 9, 10])
    assert hit_rate(ranks, 10) == 0.75
    expected = (1.0 + 1 / math.log2(3) + 1 / math.log2(11) + 0.0) / 4
    assert ndcg(ranks, 10) == pytest.approx(expected, abs=1e-12)
    assert ndcg(np.array([0]), 1) == 1.0


def _tiny() -> Dataset:
    # user 0 interacts with items 0..4 at times 1..5; user 1 with 5..9.
    users = np.repeat([0, 1], 5)
    items = np.concatenate([np.arange(5), np.arange(5, 10)])
    return Dataset("tiny", users, items, np.ones(10), np.tile(np.arange(1, 6), 2), 2, 200)


def test_leave_one_out_holds_out_the_last_two_by_time() -> None:
    split = leave_one_out(_tiny(), seed=3)
    assert split.test_item.tolist() == [4, 9]
    assert split.valid_item.tolist() == [3, 8]
    assert sorted(split.train_items[split.train_users == 0].tolist()) == [0, 1, 2]
    for user, history in ((0, set(range(5))), (1, set(range(5, 10)))):
        for negatives in (split.test_negatives[user], split.valid_negatives[user]):
            assert len(set(negatives.tolist())) == N_NEGATIVES
            assert not set(negatives.tolist()) & history


def test_evaluate_on_a_known_scorer() -> None:
    split = leave_one_out(_tiny(), seed=3)
    # Scores by item id: user 0's test item 4 is beaten by every negative with id > 4;
    # in the full ranking, by every unseen item with id > 4 (195 of them).
    result = evaluate(split, lambda _u, c: c.astype(float))
    user0_rank = int((split.test_negatives[0] > 4).sum())
    user1_rank = int((split.test_negatives[1] > 9).sum())
    assert result.hr10 == np.mean([user0_rank < 10, user1_rank < 10])
    assert result.recall20 == 0.0  # full ranks are 195 and 190
    perfect = evaluate(split, lambda u, c: (c == split.test_item[u][:, None]).astype(float))
    assert (perfect.hr10, perfect.ndcg10, perfect.recall20, perfect.ndcg20) == (1, 1, 1, 1)


def test_user_hits_read_off_the_hit_rate_of_any_group(ml100k: Dataset) -> None:
    split = leave_one_out(ml100k, seed=0)
    popular = np.bincount(split.train_items, minlength=split.n_items).astype(float)
    score = lambda _u, c: popular[c]  # noqa: E731
    hits = user_hits(split, score)
    assert set(np.unique(hits)) == {0.0, 1.0} and len(hits) == split.n_users
    assert np.mean(hits) == pytest.approx(evaluate(split, score).hr10)
    group = np.arange(100, 300)
    assert np.mean(hits[group]) == pytest.approx(evaluate(split, score, group).hr10)


def test_split_is_seeded(ml100k: Dataset) -> None:
    a, b = leave_one_out(ml100k, seed=1), leave_one_out(ml100k, seed=1)
    assert np.array_equal(a.test_negatives, b.test_negatives)
    assert not np.array_equal(a.test_negatives, leave_one_out(ml100k, seed=2).test_negatives)
    assert len(a.train_users) == 100_000 - 2 * 943


def test_exposure_counts_users_with_a_target_in_their_unseen_top_k() -> None:
    split = leave_one_out(_tiny(), seed=3)
    target = 150  # seen by nobody

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        scores = -items.astype(np.float64)  # low ids first: each user's seen items, then 10..19
        scores[users == 1] = np.where(items[users == 1] == target, 1e9, scores[users == 1])
        return scores

    users = np.array([0, 1])
    assert exposure(split, score, users, np.array([target])) == 0.5  # user 1 only
    # An item the user has seen never counts, however high it scores (item 0: user 0's).
    first = lambda _u, items: np.where(items == 0, 1e9, 0.0)  # noqa: E731
    assert exposure(split, first, np.array([0]), np.array([0])) == 0.0
    assert exposure(split, first, np.array([1]), np.array([0])) == 1.0
