"""Learning dynamics of one-user nodes in virtual time: every node a row of one tensor.

The real simulation runs 943 nodes with keys, MQTT and threads, and a 2-core machine gets about
one merge per node every few seconds out of it. This study keeps only the learning: each node
holds its own copy of the item parameters and its user's vector, takes one BPR step on its own
interactions per round (one batch, smaller than `BATCH`: as on a node, the item step sums the
loss over its interactions and divides by `BATCH`), then merges pairwise with random
partners `merges` times, or, with merges = 0, every node gets the exact mean (FedAvg, the best
case gossip can approach). Users step with Adam, items with SGD, as on the nodes. What it leaves
out, asynchrony, staleness and lost messages, is what the real simulation measures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gossiprec.node.config import GOSSIP_L2
from gossiprec.node.recommender import BPRConfig
from gossiprec.sim.baselines import train_and_valid_pairs
from gossiprec.sim.errors import SimError
from gossiprec.sim.metrics import hit_rate, sampled_ranks
from gossiprec.sim.split import LeaveOneOut

BATCH = BPRConfig().batch_size


@dataclass(frozen=True)
class StudyConfig:
    rounds: int = 60
    merges: int = 8  # random pairings per round (each node merges once per pairing); 0 = exact
    lr: float = 15_000.0  # item SGD per BATCH interactions, as model.lr on a node
    lr_half_life: float = 25.0  # rounds after which the item lr halves (0 = constant)
    user_lr: float = 0.03
    l2: float = GOSSIP_L2
    dim: int = 32
    negatives: int = 8
    seed: int = 0
    eval_every: int = 10
    on: str = "valid"  # "valid" to choose settings, "test" only to report them

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.merges < 0 or self.eval_every < 1 or self.on not in (
            "valid", "test"
        ):  # fmt: skip
            raise SimError("need rounds >= 1, merges >= 0, eval_every >= 1, on valid|test")


class OneUserNodes:
    """Every user of `split` as a node: item copies [N, I, d] and [N, I], user vectors [N, d]."""

    def __init__(self, split: LeaveOneOut, config: StudyConfig) -> None:
        self.config = config
        self.split = split
        generator = torch.Generator().manual_seed(config.seed)
        # Choosing settings on validation means not training on it.
        users, items = (
            (split.train_users, split.train_items)
            if config.on == "valid"
            else train_and_valid_pairs(split)
        )
        n, i, d = split.n_users, split.n_items, config.dim
        self.users = torch.from_numpy(users)
        self.flat_items = torch.from_numpy(users * i + items)  # row of (node, item) in [N*I]
        self.items = (torch.randn(i, d, generator=generator) * 0.1).repeat(n, 1, 1)
        self.bias = torch.zeros(n, i)
        self.user = torch.nn.Parameter(torch.randn(n, d, generator=generator) * 0.1)
        self._user_adam = torch.optim.Adam([self.user], lr=config.user_lr)
        self._rng = np.random.default_rng(config.seed)
        self._generator = generator

    def step(self, lr: float) -> None:
        """One BPR step per node on its own interactions: SGD on items, Adam on the user."""
        n_items, k = self.split.n_items, self.config.negatives
        negatives = torch.from_numpy(self._rng.integers(0, n_items, (len(self.users), k)))
        flat_negatives = self.users[:, None] * n_items + negatives
        items = self.items.view(-1, self.config.dim).requires_grad_()
        bias = self.bias.view(-1).requires_grad_()
        user = self.user[self.users]
        positive, negative = items[self.flat_items], items[flat_negatives]
        margin = ((user * positive).sum(-1) + bias[self.flat_items])[:, None] - (
            torch.einsum("md,mkd->mk", user, negative) + bias[flat_negatives]
        )
        penalty = (user**2).sum(-1) + (positive**2).sum(-1) + (negative**2).sum((1, 2)) / k
        per_interaction = -torch.nn.functional.logsigmoid(margin).mean(1) + self.config.l2 * penalty
        self._user_adam.zero_grad()
        # Each node's rows only see its own terms; Adam ignores a user's constant loss scale,
        # so sum or mean is the same to the users.
        (per_interaction.sum() / BATCH).backward()  # type: ignore[no-untyped-call]
        self._user_adam.step()
        with torch.no_grad():
            assert items.grad is not None and bias.grad is not None
            self.items -= lr * items.grad.view_as(self.items)
            self.bias -= lr * bias.grad.view_as(self.bias)
        self.items.requires_grad_(False)
        self.bias.requires_grad_(False)

    def merge(self) -> None:
        """Pairwise averaging with random partners, or the exact mean when merges = 0."""
        with torch.no_grad():
            if not self.config.merges:
                self.items[:] = self.items.mean(0)
                self.bias[:] = self.bias.mean(0)
                return
            n = len(self.items)
            for _ in range(self.config.merges):
                order = torch.randperm(n, generator=self._generator)
                left, right = order[: n // 2], order[n // 2 : 2 * (n // 2)]
                for table in (self.items, self.bias):
                    mean = (table[left] + table[right]) / 2
                    table[left], table[right] = mean, mean

    def hr10(self) -> float:
        """Each user scored by their own node's model."""

        def score(users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            rows, cands = torch.from_numpy(users), torch.from_numpy(candidates)
            with torch.no_grad():
                vectors = self.items[rows[:, None], cands]
                scores = torch.einsum("bd,bcd->bc", self.user[rows], vectors)
                return (scores + self.bias[rows[:, None], cands]).numpy()

        users = self.split.evaluated_users()
        return hit_rate(sampled_ranks(self.split, score, users, on=self.config.on), 10)


def run_study(
    split: LeaveOneOut,
    config: StudyConfig,
    on_point: Callable[[int, float], None] | None = None,
) -> list[tuple[int, float]]:
    """HR@10 every `eval_every` rounds: [(round, HR@10)]."""
    nodes = OneUserNodes(split, config)
    points = []
    for round_ in range(1, config.rounds + 1):
        decay = 0.5 ** (round_ / config.lr_half_life) if config.lr_half_life else 1.0
        nodes.step(config.lr * decay)
        nodes.merge()
        if round_ % config.eval_every == 0 or round_ == config.rounds:
            points.append((round_, nodes.hr10()))
            if on_point:
                on_point(round_, points[-1][1])
    return points
