"""User-level differential privacy: the accountant, the clipped and noised mechanism, the budget,
and what a curious peer can tell from the updates it receives."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gossiprec.crypto.authority import Authority
from gossiprec.gossip.codec import Codec
from gossiprec.gossip.memory import InMemoryBroker
from gossiprec.gossip.messages import Kind, ModelUpdate
from gossiprec.gossip.protocol import REPLY_WAIT_PERIODS, GossipConfig, GossipProtocol
from gossiprec.node.node import model_config
from gossiprec.node.privacy import (
    RESERVE,
    Ledger,
    epsilon_spent,
    noise_for,
    rounds_within,
)
from gossiprec.node.prometheus import node_metrics
from gossiprec.node.recommender import BPRMF, BPRConfig, clip_per_user
from gossiprec.sim.baselines import centralized_private
from gossiprec.sim.config import node_template
from gossiprec.sim.curious import ItemSetInference, item_set_auc
from gossiprec.sim.split import LeaveOneOut, restrict
from tests.gossipnet import admit
from tests.test_node import interactions, started


def test_the_accountant_gives_the_librarys_published_epsilon_for_a_gaussian() -> None:
    # dp_accounting's own test: noise multiplier 4.530877117 is exactly (1, 1e-6)-DP for one
    # Gaussian release (rdp_privacy_accountant_test, test_compute_epsilon_delta_gaussian).
    assert epsilon_spent(4.530877117, 1, 1e-6) == pytest.approx(1.0, abs=2e-3)
    assert noise_for(1.0, 1e-6, 1) == pytest.approx(4.530877117, rel=2e-3)
    # Composition: more rounds spend more, more noise spends less.
    assert epsilon_spent(2.0, 100, 1e-5) > epsilon_spent(2.0, 10, 1e-5)
    assert epsilon_spent(4.0, 100, 1e-5) < epsilon_spent(2.0, 100, 1e-5)


def test_noise_planned_for_a_budget_spends_it_over_the_planned_rounds() -> None:
    sigma = noise_for(8.0, 1e-5, 120)
    assert epsilon_spent(sigma, 120, 1e-5) <= 8.0 < epsilon_spent(sigma, 140, 1e-5)
    allowed = rounds_within(sigma, 8.0, 1e-5)
    assert allowed >= 119
    assert epsilon_spent(sigma, allowed, 1e-5) <= 8.0 < epsilon_spent(sigma, allowed + 1, 1e-5)


def test_the_ledger_reserves_rounds_on_disk_before_spending_them() -> None:
    reserved: list[int] = []
    ledger = Ledger(1.0, 50.0, 1e-5, 0, reserved.append)
    for _ in range(RESERVE + 1):
        ledger.spend()
    assert reserved == [RESERVE, RESERVE] and ledger.rounds == RESERVE + 1
    # A restart counts every reserved round as spent: never fewer than were used.
    again = Ledger(1.0, 50.0, 1e-5, sum(reserved), reserved.append)
    assert again.rounds == 2 * RESERVE >= ledger.rounds
    tight = Ledger(1.0, 3.0, 1e-5, 0, reserved.append)
    while not tight.exhausted:
        tight.spend()
    assert tight.epsilon <= 3.0 < epsilon_spent(1.0, tight.rounds + 1, 1e-5)


@settings(max_examples=60, deadline=None)
@given(
    users=st.integers(1, 6),
    slots=st.integers(1, 40),
    clip=st.floats(1e-3, 10.0),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
)
def test_each_users_share_of_the_clipped_sum_is_within_the_clip(
    users: int, slots: int, clip: float, scale: float, seed: int
) -> None:
    """Adding or removing one user's interactions moves the pre-noise sum by at most `clip`:
    the sensitivity the accountant assumes."""
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy(rng.integers(0, users, slots))
    items = torch.from_numpy(rng.integers(0, 7, slots))
    grads = torch.from_numpy(rng.normal(0, scale, (slots, 3)))
    total = clip_per_user(rows, items, grads, 7, clip)
    for user in range(users):
        keep = rows != user
        without = clip_per_user(rows[keep], items[keep], grads[keep], 7, clip)
        assert float(torch.linalg.norm(total - without)) <= clip * (1 + 1e-9)


def model_with(users: int, per_user: int, seed: int = 0) -> BPRMF:
    model = BPRMF(30, BPRConfig(dim=4, optimizer="sgd", lr=50.0, seed=seed))
    rng = np.random.default_rng(seed)
    for user in range(users):
        model.add_interactions(np.full(per_user, user), rng.choice(30, per_user, replace=False))
    return model


@settings(max_examples=25, deadline=None)
@given(per_user=st.integers(1, 20), clip=st.floats(1e-4, 1.0), seed=st.integers(0, 1000))
def test_a_private_round_moves_the_shared_model_by_at_most_the_clip_per_user(
    per_user: int, clip: float, seed: int
) -> None:
    model = model_with(3, per_user, seed)
    before = {k: v.copy() for k, v in model.shared_arrays().items()}
    model.private_round(clip, 0.0, torch.Generator().manual_seed(seed), 50.0)
    moved = np.sqrt(sum(((model.shared_arrays()[k] - before[k]) ** 2).sum() for k in before))
    assert 0 < moved <= 3 * 50.0 * clip * (1 + 1e-5)


def test_a_private_round_adds_gaussian_noise_of_the_planned_size() -> None:
    quiet, noisy = model_with(2, 5), model_with(2, 5)
    start = quiet.shared_arrays()["item_embedding"].copy()
    quiet.private_round(0.1, 0.0, torch.Generator().manual_seed(1), 50.0)
    noisy.private_round(0.1, 3.0, torch.Generator().manual_seed(1), 50.0)
    noise = noisy.shared_arrays()["item_embedding"] - quiet.shared_arrays()["item_embedding"]
    assert np.std(noise) == pytest.approx(50.0 * 3.0 * 0.1, rel=0.15)
    assert not np.allclose(quiet.shared_arrays()["item_embedding"], start)


def test_the_central_reference_learns_from_every_user_and_its_noise_costs_it(
    ml100k_split: LeaveOneOut,
) -> None:
    split = restrict(ml100k_split, np.arange(150))
    config = model_config(node_template(split.n_items).model)  # the simulation's nodes' BPR-MF

    def hr10(noise_multiplier: float) -> float:
        return centralized_private(split, config, clip=0.003, lr=20.0, rounds=20,
                                   noise_multiplier=noise_multiplier).metrics.hr10  # fmt: skip

    plain, noisy = hr10(0.0), hr10(100.0)
    assert plain > noisy + 0.1, (plain, noisy)


async def test_a_node_stops_training_once_its_budget_is_spent_and_remembers_it(
    tmp_path: Path,
) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    private = {"privacy.enabled": True, "privacy.epsilon": 2.0, "privacy.rounds": 3}
    async with started(tmp_path / "n", identity, broker, private) as node:
        await node.ingest(*interactions([1, 2], 6))
        assert node.privacy is not None
        allowed = rounds_within(node.privacy.noise_multiplier, 2.0, 1e-5)
        for _ in range(allowed):
            node._new_data = True
            assert await node.train_round()
        shown = node.status()["privacy"]
        assert shown["rounds"] == allowed and shown["exhausted"] and shown["epsilon"] <= 2.0
        frozen = node.model.shared_arrays()["item_embedding"].copy()
        node._new_data = True
        await node.train_round()
        assert np.array_equal(node.model.shared_arrays()["item_embedding"], frozen)
        # Peers see it in the signed beacon (`gossiprec peers`), operators in /metrics.
        said = node.network_view()[0]["status"]
        assert said["epsilon"] == pytest.approx(shown["epsilon"], abs=1e-3)
        assert said["delta"] == 1e-5
        metrics = {m.name: m.samples[0].value for m in node_metrics(node.status()) if m.samples}
        assert metrics["gossiprec_privacy_epsilon"] == pytest.approx(shown["epsilon"])
        assert metrics["gossiprec_privacy_rounds"] == allowed
    async with started(tmp_path / "n", identity, broker, private) as node:
        assert node.privacy is not None and node.privacy.rounds >= allowed
        assert node.status()["privacy"]["exhausted"]


def test_item_set_auc_counts_ties_as_half() -> None:
    assert item_set_auc(np.array([0.0, 1.0, 2.0, 3.0]), np.array([2, 3]))[0] == 1.0
    assert item_set_auc(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 1]))[0] == 0.0
    assert item_set_auc(np.zeros(6), np.array([1]))[0] == 0.5
    assert item_set_auc(np.array([5.0, 0.0, 0.0, 1.0]), np.array([0, 3]))[1] == 0.5


def test_a_curious_peer_finds_the_rows_a_sender_trained_from_dense_and_sparse_updates() -> None:
    rng = np.random.default_rng(0)
    touched = rng.choice(200, 20, replace=False)
    model = rng.normal(0, 1, (200, 4)).astype(np.float32)
    dense, sparse = ItemSetInference(200), ItemSetInference(200)
    for step in range(12):
        model += rng.normal(0, 0.01, model.shape).astype(np.float32)  # merges: every row
        model[touched] += rng.normal(0, 0.1, (20, 4)).astype(np.float32)  # training
        dense.observe(b"s", ModelUpdate(Kind.MERGE_REQUEST, {"e": model.copy()}))
        rows = np.arange(100 * (step % 2), 100 * (step % 2) + 100, dtype=np.int32)
        sparse.observe(b"s", ModelUpdate(Kind.MERGE_REQUEST, {"e": model[rows]}, rows={"e": rows}))
    assert item_set_auc(dense.scores[b"s"], touched)[0] > 0.95
    assert item_set_auc(sparse.scores[b"s"], touched)[0] > 0.95


def sent_rows(interacted: list[int]) -> list[dict[str, list[int]]]:
    """The rows of a sparse node's first few messages after training on these items."""
    model = BPRMF(40, BPRConfig(dim=4, optimizer="sgd", lr=50.0))
    model.add_interactions(np.zeros(len(interacted), dtype=np.int64), np.array(interacted))
    config = GossipConfig(codec=Codec("sparse-float16", sparse_fraction=0.25))
    protocol = GossipProtocol(b"n" * 16, model.shared_arrays(), config, random.Random(7), 0.0)
    protocol.peer_heard(b"p" * 16, 0.0)
    carried = []
    for step in range(6):
        model.train_steps(2)
        # No peer replies here: each round comes after the unanswered request is forgotten.
        now = protocol.next_tick + REPLY_WAIT_PERIODS * config.period
        protocol.peer_heard(b"p" * 16, now)
        sends = protocol.tick(now)
        carried += [{k: v.tolist() for k, v in s.update.rows.items()} for s in sends]
        assert sends, step
    return carried


def test_the_rows_a_sparse_update_carries_do_not_depend_on_what_the_users_touched() -> None:
    assert sent_rows([1, 2, 3, 4, 5]) == sent_rows([30, 31, 32, 33, 34, 35, 36])
