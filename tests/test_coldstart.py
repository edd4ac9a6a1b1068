"""The cold-start protocol holds out what it says it holds out."""

from __future__ import annotations

import numpy as np

from gossiprec.sim.coldstart import cold_item_split, features_of, new_user_split
from gossiprec.sim.dataset import Dataset
from gossiprec.sim.split import LeaveOneOut


def test_cold_items_are_absent_from_training_and_ranked_only_among_untouched_cold_items(
    ml100k: Dataset,
) -> None:
    setup = cold_item_split(ml100k, seed=3)
    split, cold = setup.split, set(setup.cold.tolist())
    assert len(cold) == 168
    trained = {*split.train_items.tolist(), *split.valid_item.tolist(), *split.test_item.tolist()}
    assert not cold & trained
    assert not cold & set(split.test_negatives.ravel().tolist())  # warm negatives only
    touched = {(u, i) for u, i in zip(ml100k.users.tolist(), ml100k.items.tolist(), strict=True)}
    assert len(setup.users) == sum(item in cold for item in ml100k.items.tolist())
    for user, row in zip(setup.users[:200].tolist(), setup.candidates[:200], strict=True):
        assert set(row.tolist()) <= cold and (user, int(row[0])) in touched
        assert not any((user, int(item)) in touched for item in row[1:])


def test_new_users_keep_only_their_first_interactions(ml100k_split: LeaveOneOut) -> None:
    cut, by_size = new_user_split(ml100k_split, (1, 3, 5), seed=1)
    counts = np.bincount(cut.train_users, minlength=cut.n_users)
    before = np.bincount(ml100k_split.train_users, minlength=cut.n_users)
    for keep, new in by_size.items():
        assert len(new) == 94 and (cut.valid_item[new] == -1).all()
        assert np.array_equal(counts[new], np.minimum(before[new], keep))
        first = ml100k_split.train_items[ml100k_split.train_users == new[0]][:keep]
        assert np.array_equal(cut.train_items[cut.train_users == new[0]], first)
    every_new = np.concatenate(list(by_size.values()))
    assert len(np.unique(every_new)) == 3 * 94  # three groups, nobody in two
    others = np.setdiff1d(ml100k_split.evaluated_users(), every_new)
    assert np.array_equal(counts[others], before[others])


def test_ml100k_items_have_their_genres_and_year_as_features(ml100k: Dataset) -> None:
    names = ml100k.item_features()
    assert names[0] == ["genre=Animation", "genre=Children's", "genre=Comedy", "year=1995",
                        "decade=1990"]  # fmt: skip
    assert "word=toy" in ml100k.item_features(title_words=True)[0]
    assert len(features_of(ml100k)) == ml100k.n_items
