"""The hybrid model places an item nobody touched by its features, and gossips them."""

from __future__ import annotations

import numpy as np

from gossiprec.node.features import ItemFeatures
from gossiprec.node.hybrid import HybridMF
from gossiprec.node.recommender import BPRMF, BPRConfig

N_ITEMS = 40
COLD = np.array([18, 19, 38, 39])  # two of each genre: no interactions at all


def genres() -> ItemFeatures:
    features = ItemFeatures(N_ITEMS, 64)
    for item in range(N_ITEMS):
        features.set(item, ["genre=A" if item < 20 else "genre=B", f"decade={item % 3}"])
    return features


def trained(model: BPRMF) -> BPRMF:
    """Users 0-9 like genre A, users 10-19 genre B, never a cold item."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(20):
        liked = np.arange(0, 18) if user < 10 else np.arange(20, 38)
        chosen = rng.choice(liked, size=8, replace=False)
        users += [user] * 8
        items += chosen.tolist()
    model.negative_pool = np.setdiff1d(np.arange(N_ITEMS), COLD)  # not in the catalogue yet
    model.add_interactions(np.array(users), np.array(items))
    model.train_steps(300)
    return model


def test_a_cold_item_ranks_by_its_genre_where_bpr_mf_can_only_guess() -> None:
    config = BPRConfig(dim=8, lr=0.05, batch_size=64)
    hybrid = trained(HybridMF(N_ITEMS, genres(), config))
    scores = hybrid.score(np.array([0, 10]), np.tile(COLD, (2, 1)))
    assert scores[0, :2].min() > scores[0, 2:].max()  # an A fan: the cold A films first
    assert scores[1, 2:].min() > scores[1, :2].max()  # a B fan: the cold B films first
    # BPR-MF never moved the cold rows: they keep their random start, the same for both fans.
    plain = trained(BPRMF(N_ITEMS, config))
    start = BPRMF(N_ITEMS, config).shared_arrays()["item_embedding"][COLD]
    assert np.array_equal(plain.shared_arrays()["item_embedding"][COLD], start)


def test_feature_tables_are_shared_and_restored_and_content_only_keeps_ids_at_zero() -> None:
    config = BPRConfig(dim=8, lr=0.05, batch_size=64)
    features = genres()
    hybrid = trained(HybridMF(N_ITEMS, features, config))
    shared = hybrid.shared_arrays()
    assert list(shared) == ["item_embedding", "item_bias", "feature_embedding", "feature_bias"]
    assert shared["feature_embedding"].shape == (64, 8)
    again = HybridMF(N_ITEMS, genres(), config)
    again.restore(hybrid.state())
    for name, array in again.shared_arrays().items():
        assert np.array_equal(array, shared[name])
    content = trained(HybridMF(N_ITEMS, genres(), config, use_ids=False))
    assert not content.shared_arrays()["item_embedding"].any()
    assert content.shared_arrays()["feature_embedding"].any()
    # An item's features, changed, place it anew at once (no retraining): a cold A film
    # relabelled B falls for an A fan.
    before = hybrid.score(np.array([0]), np.array([[18]]))[0, 0]
    features.set(18, ["genre=B"])
    assert hybrid.score(np.array([0]), np.array([[18]]))[0, 0] < before
