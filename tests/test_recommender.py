from __future__ import annotations

import numpy as np
import pytest

from gossiprec.node.recommender import BPRMF, BPRConfig
from gossiprec.sim.baselines import centralized, popularity
from gossiprec.sim.dataset import Dataset
from gossiprec.sim.metrics import evaluate
from gossiprec.sim.split import LeaveOneOut, leave_one_out
from gossiprec.sim.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def planted() -> LeaveOneOut:
    config = SyntheticConfig(
        n_users=300, n_items=400, n_clusters=8, mean_interactions=30, in_cluster=0.9, seed=7
    )
    return leave_one_out(generate(config), seed=0)


def _trained(split: LeaveOneOut, epochs: int, seed: int = 0) -> BPRMF:
    model = BPRMF(split.n_items, BPRConfig(seed=seed))
    model.add_interactions(split.train_users, split.train_items)
    model.train_steps(epochs * model.steps_per_epoch())
    return model


def test_bpr_beats_popularity_on_planted_clusters(planted: LeaveOneOut) -> None:
    model_hr = evaluate(planted, _trained(planted, epochs=30).score).hr10
    popular_hr = popularity(planted).metrics.hr10
    assert model_hr > popular_hr + 0.15, (model_hr, popular_hr)


def test_same_seed_same_numbers(planted: LeaveOneOut) -> None:
    a, b = _trained(planted, epochs=2), _trained(planted, epochs=2)
    for name, array in a.shared_arrays().items():
        assert np.array_equal(array, b.shared_arrays()[name]), name
    assert evaluate(planted, a.score) == evaluate(planted, b.score)
    c = _trained(planted, epochs=2, seed=1)
    assert not np.array_equal(
        a.shared_arrays()["item_embedding"], c.shared_arrays()["item_embedding"]
    )


def test_recommendations_never_contain_seen_items(planted: LeaveOneOut) -> None:
    model = _trained(planted, epochs=3)
    for user in range(0, planted.n_users, 7):
        seen = set(model.seen_items(user).tolist())
        top = model.recommend(user, 50)
        assert len(top) == 50 and len(set(top.tolist())) == 50
        assert not seen & set(top.tolist())
    # Asking for more than is left returns exactly the unseen items.
    everything = model.recommend(0, planted.n_items)
    assert len(everything) == planted.n_items - len(model.seen_items(0))


def test_online_update_moves_that_users_recommendations(planted: LeaveOneOut) -> None:
    model = _trained(planted, epochs=10)
    user = 5
    before = model.recommend(user, 10)
    other_before = model.recommend(6, 10)
    new_items = before[:3]  # the user now interacts with three of their top items
    assert model.add_interactions(np.full(3, user), new_items) == 3
    scores_before = model.score(np.array([user]), np.arange(planted.n_items)[None])[0].copy()
    shared_before = {name: array.copy() for name, array in model.shared_arrays().items()}
    model.learn_online(np.array([user]), steps=5)
    for name, array in model.shared_arrays().items():  # only the user's private vector moved
        np.testing.assert_array_equal(array, shared_before[name])
    after = model.recommend(user, 10)
    scores_after = model.score(np.array([user]), np.arange(planted.n_items)[None])[0]
    assert not set(new_items.tolist()) & set(after.tolist())
    assert not np.allclose(scores_before, scores_after)
    assert len(set(after.tolist()) - set(before.tolist())) >= 3
    assert other_before.shape == model.recommend(6, 10).shape
    assert model.add_interactions(np.full(3, user), new_items) == 0  # already known


def test_new_user_is_added_without_retraining_others(planted: LeaveOneOut) -> None:
    model = _trained(planted, epochs=2)
    old_user_vectors = model.private_arrays()["user_embedding"].copy()
    model.add_interactions(np.array([10_000, 10_000]), np.array([1, 2]))
    grown = model.private_arrays()["user_embedding"]
    assert grown.shape[0] == old_user_vectors.shape[0] + 1
    assert np.array_equal(grown[:-1], old_user_vectors)
    assert 10_000 in model.users


def test_shared_arrays_are_live_views_of_the_model() -> None:
    model = BPRMF(20, BPRConfig(dim=4))
    model.add_interactions(np.array([0]), np.array([3]))
    shared = model.shared_arrays()
    assert set(shared) == {"item_embedding", "item_bias"}
    assert set(model.private_arrays()) == {"user_embedding"}
    shared["item_bias"][7] = 100.0  # e.g. a gossip merge writing in place
    assert model.recommend(0, 1).tolist() == [7]


def test_an_sgd_step_on_fewer_interactions_than_a_batch_moves_items_proportionally_less() -> None:
    # Gossip averages every node's step: a node holding 10 interactions must weigh 10 in it.
    moves = {}
    for batch_size in (10, 1000):
        model = BPRMF(30, BPRConfig(dim=4, optimizer="sgd", lr=1.0, batch_size=batch_size))
        model.add_interactions(np.repeat([0, 1], 5), np.arange(10))
        before = model.shared_arrays()["item_embedding"].copy()
        model.train_steps(1)
        moves[batch_size] = model.shared_arrays()["item_embedding"] - before
    assert np.abs(moves[10]).max() > 0
    np.testing.assert_allclose(moves[1000], moves[10] * 10 / 1000, rtol=0.01, atol=1e-8)


def test_bad_input_is_refused_with_the_reason() -> None:
    model = BPRMF(20)
    with pytest.raises(ValueError, match=r"item ids must lie in \[0, 20\)"):
        model.add_interactions(np.array([0]), np.array([20]))
    with pytest.raises(ValueError, match=r"BPRConfig\.dim"):
        BPRConfig(dim=0)
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(0, 0)


@pytest.mark.slow
def test_centralized_bpr_on_ml100k_meets_the_reference(ml100k: Dataset) -> None:
    result = centralized(leave_one_out(ml100k, seed=0))
    assert result.metrics.hr10 >= 0.65, result
    assert result.metrics.ndcg10 >= 0.37, result


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_the_numpy_step_moves_every_parameter_as_torchs_autograd_does(
    clip: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gossiprec.node import recommender

    def run(numpy_batch: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        monkeypatch.setattr(recommender, "NUMPY_BATCH", numpy_batch)
        config = BPRConfig(dim=8, optimizer="sgd", lr=50.0, l2=0.01, user_lr=0.03, clip=clip,
                           batch_size=64, negatives=4, seed=3)  # fmt: skip
        model = BPRMF(40, config)
        rng = np.random.default_rng(1)  # three users, repeated items: duplicate rows summed
        model.add_interactions(rng.integers(0, 3, 50), rng.integers(0, 40, 50))
        start = {
            n: a.copy() for n, a in {**model.shared_arrays(), **model.private_arrays()}.items()
        }
        for _ in range(4):
            model.train_steps(2)  # shared steps, full batches and a partial one
            model.learn_online(np.array([1]), 2)  # private-only steps
        return start, {**model.shared_arrays(), **model.private_arrays()}

    (start, by_torch), (_, by_numpy) = run(-1), run(10**9)
    for name, expected in by_torch.items():
        assert not np.allclose(expected, start[name]), f"{name} never moved"
        np.testing.assert_allclose(by_numpy[name], expected, rtol=2e-4, atol=2e-5, err_msg=name)
