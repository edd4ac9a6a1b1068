"""The two references every decentralized run is judged against, plus popularity.

- centralized: one BPR-MF on everyone's data (the upper bound);
- local-only: every user trains alone on their own interactions (the lower bound);
- popularity: items ranked by how often they were interacted with.

Protocol: leave-one-out. The number of epochs is chosen by early stopping on validation HR@10;
the final model is then trained on train + validation for that many epochs and scored on test.
Test is never looked at before the final score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from gossiprec.node.recommender import BPRMF, BPRConfig
from gossiprec.node.types import IntArray
from gossiprec.sim.metrics import Metrics, Scorer, evaluate, user_hits, validation_hr10
from gossiprec.sim.progress import Task, Tracker, quiet
from gossiprec.sim.split import LeaveOneOut


@dataclass(frozen=True)
class BaselineResult:
    name: str
    metrics: Metrics
    seconds: float
    epochs: int = 0
    # Per-user test hits at 10 (see `user_hits`), kept where another group is judged against it.
    hits10: np.ndarray | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            **self.metrics.as_dict(),
            "seconds": self.seconds,
            "epochs": self.epochs,
        }


def train_and_valid_pairs(split: LeaveOneOut) -> tuple[IntArray, IntArray]:
    has_valid = np.flatnonzero(split.valid_item >= 0)
    users = np.concatenate([split.train_users, has_valid])
    items = np.concatenate([split.train_items, split.valid_item[has_valid]])
    return users, items


def popularity(split: LeaveOneOut) -> BaselineResult:
    start = time.perf_counter()
    _, items = train_and_valid_pairs(split)
    counts = np.bincount(items, minlength=split.n_items).astype(np.float64)
    metrics = evaluate(split, lambda _users, candidates: counts[candidates])
    return BaselineResult("popularity", metrics, time.perf_counter() - start)


def choose_epochs(
    split: LeaveOneOut, config: BPRConfig, max_epochs: int, patience: int, bar: Task
) -> int:
    """Epoch count with the best validation HR@10, training on the train pairs only."""
    model = BPRMF(split.n_items, config)
    model.add_interactions(split.train_users, split.train_items)
    best_hr, best_epoch, epoch = -1.0, 1, 0
    for epoch in range(1, max_epochs + 1):
        model.train_steps(model.steps_per_epoch())
        hr = validation_hr10(split, model.score)
        if hr > best_hr:
            best_hr, best_epoch = hr, epoch
        bar.advance(note=f"epoch {epoch} valid HR@10 {hr:.3f}")
        if epoch - best_epoch >= patience:
            break
    bar.advance(max_epochs - epoch)
    return best_epoch


def centralized(
    split: LeaveOneOut,
    config: BPRConfig | None = None,
    *,
    max_epochs: int = 30,
    patience: int = 4,
    track: Tracker = quiet,
) -> BaselineResult:
    config = config or BPRConfig()
    start = time.perf_counter()
    with track("centralized: choose epochs", max_epochs) as bar:
        epochs = choose_epochs(split, config, max_epochs, patience, bar)
    model = BPRMF(split.n_items, config)
    model.add_interactions(*train_and_valid_pairs(split))
    with track("centralized: final model", epochs) as bar:
        for _ in range(epochs):
            model.train_steps(model.steps_per_epoch())
            bar.advance()
    metrics = evaluate(split, model.score)
    return BaselineResult("centralized BPR-MF", metrics, time.perf_counter() - start, epochs,
                          user_hits(split, model.score))  # fmt: skip


def centralized_private(
    split: LeaveOneOut,
    config: BPRConfig,
    *,
    clip: float,
    lr: float,
    noise_multiplier: float,
    rounds: int,
    track: Tracker = quiet,
) -> BaselineResult:
    """The trusted-curator reference for differential privacy: one model holding every user
    takes `rounds` rounds of the nodes' own mechanism (`BPRMF.private_round`: per-user clip,
    Gaussian noise on the sum) on everyone's data. Noise is added once to the sum over all
    users instead of once per node, so no decentralized run under the same per-user guarantee
    (not even one with secure aggregation over every node) can expect more than this."""
    start = time.perf_counter()
    model = BPRMF(split.n_items, config)
    model.add_interactions(*train_and_valid_pairs(split))
    # Seeded: a reference, never sent anywhere (a node draws its noise from the OS).
    noise = torch.Generator().manual_seed(config.seed)
    with track(f"central DP, noise {noise_multiplier:.3g} x clip", rounds) as bar:
        for _ in range(rounds):
            model.private_round(clip, noise_multiplier, noise, lr)
            bar.advance()
    metrics = evaluate(split, model.score)
    return BaselineResult("central DP BPR-MF", metrics, time.perf_counter() - start, rounds)


def local_only(
    split: LeaveOneOut,
    config: BPRConfig | None = None,
    *,
    epochs: int = 10,
    groups: list[IntArray] | None = None,
    track: Tracker = quiet,
) -> BaselineResult:
    """Each node (by default: each user) trains its own BPR-MF on its own interactions only,
    and its users are scored by it."""
    config = config or BPRConfig()
    start = time.perf_counter()
    users_all, items_all = train_and_valid_pairs(split)
    evaluated = split.evaluated_users()
    groups = groups if groups is not None else [np.array([u]) for u in evaluated]
    scores = np.zeros((split.n_users, split.n_items), dtype=np.float32)
    all_items = np.arange(split.n_items)[None, :]
    with track("local-only: one model per node", len(groups)) as bar:
        for group in groups:
            mine = np.isin(users_all, group)
            model = BPRMF(split.n_items, replace(config, seed=config.seed + int(group[0])))
            model.add_interactions(users_all[mine], items_all[mine])
            model.train_steps(epochs * model.steps_per_epoch())
            for user in group:
                scores[user] = model.score(np.array([user]), all_items)[0]
            bar.advance()
    metrics = evaluate(split, matrix_scorer(scores))
    return BaselineResult("local-only BPR-MF", metrics, time.perf_counter() - start, epochs)


def matrix_scorer(scores: np.ndarray) -> Scorer:
    """A Scorer that looks scores up in a dense [n_users, n_items] matrix."""
    return lambda users, candidates: scores[users[:, None], candidates]


def run_all(
    split: LeaveOneOut, config: BPRConfig | None = None, *, track: Tracker = quiet
) -> list[BaselineResult]:
    return [
        centralized(split, config, track=track),
        local_only(split, config, track=track),
        popularity(split),
    ]
