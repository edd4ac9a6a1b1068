"""Cold start, measured: items nobody has touched, and users who arrive with a handful.

- Cold items: a random 10% of items lose all of their interactions; the models train on the
  rest. Each interaction with a cold item is then ranked among 99 cold items that user never
  touched. Warm items are scored as usual (leave-one-out) with warm negatives only.
- New users: a random 10% of users keep only their first k training interactions (k = 1, 3,
  5); their own held-out test item is ranked among their 99 sampled negatives.

Ties break at random (a model that cannot tell cold items apart scores 0.10 at HR@10, the
chance level, not 0). Models: popularity, BPR-MF, the hybrid (ids + content) and content-only,
all trained on the same pairs for the epochs BPR-MF's validation chose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from gossiprec.node.features import ItemFeatures
from gossiprec.node.hybrid import HybridMF
from gossiprec.node.recommender import BPRMF, BPRConfig
from gossiprec.node.types import IntArray
from gossiprec.sim.baselines import choose_epochs, train_and_valid_pairs
from gossiprec.sim.dataset import Dataset
from gossiprec.sim.metrics import Scorer, hit_rate, ndcg, pessimistic_rank, sampled_ranks
from gossiprec.sim.progress import Tracker, quiet
from gossiprec.sim.split import N_NEGATIVES, LeaveOneOut, leave_one_out, sample_negatives

MODELS = ("popularity", "BPR-MF", "hybrid", "content-only")
NEW_USER_SIZES = (1, 3, 5)
FEATURE_ROWS = 1024


@dataclass(frozen=True)
class Row:
    setting: str  # "cold items", "warm items", "new users (k=3)"
    model: str
    hr10: float
    ndcg10: float
    cases: int

    def as_dict(self) -> dict[str, object]:
        return {"setting": self.setting, "model": self.model, "hr10": self.hr10,
                "ndcg10": self.ndcg10, "cases": self.cases}  # fmt: skip


def features_of(dataset: Dataset, title_words: bool = False,
                rows: int = FEATURE_ROWS) -> ItemFeatures:  # fmt: skip
    features = ItemFeatures(dataset.n_items, rows)
    for item, names in enumerate(dataset.item_features(title_words)):
        features.set(item, names)
    return features


ModelFactory = Callable[[], BPRMF]


def factories(n_items: int, features: ItemFeatures, config: BPRConfig) -> dict[str, ModelFactory]:
    return {
        "BPR-MF": lambda: BPRMF(n_items, config),
        "hybrid": lambda: HybridMF(n_items, features, config),
        "content-only": lambda: HybridMF(n_items, features, config, use_ids=False),
    }


def _popularity(users: IntArray, items: IntArray, n_items: int) -> Scorer:
    counts = np.bincount(items, minlength=n_items).astype(np.float64)
    return lambda _users, candidates: counts[candidates]


def _train(factory: ModelFactory, users: IntArray, items: IntArray, epochs: int,
           pool: IntArray | None = None) -> BPRMF:  # fmt: skip
    model = factory()
    model.negative_pool = pool
    model.add_interactions(users, items)
    model.train_steps(epochs * model.steps_per_epoch())
    return model


def _rank(score: Scorer, users: IntArray, candidates: IntArray, seed: int) -> IntArray:
    """Rank of column 0 among the rest, ties broken at random."""
    scores = np.asarray(score(users, candidates), dtype=np.float64)
    spread = np.abs(scores).max() if scores.size else 1.0
    scores += np.random.default_rng(seed).random(scores.shape) * 1e-9 * max(spread, 1e-9)
    return pessimistic_rank(scores[:, 0], scores[:, 1:])


def _row(setting: str, model: str, ranks: IntArray) -> Row:
    return Row(setting, model, hit_rate(ranks, 10), ndcg(ranks, 10), len(ranks))


# -- cold items ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdItems:
    split: LeaveOneOut  # of the warm interactions, negatives warm only
    cold: IntArray  # item indices
    users: IntArray  # one row per cold test case
    candidates: IntArray  # [cases, 1 + 99]: the cold item, then 99 untouched cold items


def cold_item_split(dataset: Dataset, fraction: float = 0.1, seed: int = 0) -> ColdItems:
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(dataset.n_items, size=round(fraction * dataset.n_items),
                              replace=False))  # fmt: skip
    is_cold = np.zeros(dataset.n_items, dtype=bool)
    is_cold[cold] = True
    warm_rows = ~is_cold[dataset.items]
    columns = ("users", "items", "ratings", "timestamps")
    warm = replace(dataset, **{name: getattr(dataset, name)[warm_rows] for name in columns})
    split = leave_one_out(warm, seed)
    touched = np.zeros((dataset.n_users, dataset.n_items), dtype=bool)
    touched[dataset.users, dataset.items] = True
    # Warm negatives only: cold items are scored in their own table.
    split = replace(split, valid_negatives=sample_negatives(touched | is_cold, rng),
                    test_negatives=sample_negatives(touched | is_cold, rng))  # fmt: skip
    cases = np.flatnonzero(~warm_rows)
    users, items = dataset.users[cases], dataset.items[cases]
    candidates = np.empty((len(cases), 1 + N_NEGATIVES), dtype=np.int64)
    candidates[:, 0] = items
    for case, user in enumerate(users):
        pool = cold[~touched[user, cold]]
        candidates[case, 1:] = rng.choice(pool, size=N_NEGATIVES, replace=len(pool) < N_NEGATIVES)
    return ColdItems(split, cold, users, candidates)


def cold_item_table(dataset: Dataset, config: BPRConfig, *, epochs: int | None = None,
                    seed: int = 0, track: Tracker = quiet,
                    title_words: bool = False) -> tuple[list[Row], int]:  # fmt: skip
    """Rows for cold and warm items, per model; and the epochs used."""
    study = ColdStudy(cold_item_split(dataset, seed=seed), {})
    if epochs is None:
        with track("cold items: choose epochs (BPR-MF, validation)", 30) as bar:
            epochs = choose_epochs(study.split, config, 30, 4, bar)
    scorers = centralized_scorers(study, features_of(dataset, title_words), config, epochs, track)
    evaluated = study.split.evaluated_users()
    rows = [row for name in MODELS
            for row in study_rows(study, name, scorers[name], evaluated, seed)]  # fmt: skip
    return sorted(rows, key=lambda row: row.setting), epochs


# -- new users -----------------------------------------------------------------------------------


def new_user_split(split: LeaveOneOut, sizes: tuple[int, ...], fraction: float = 0.1,
                   seed: int = 0) -> tuple[LeaveOneOut, dict[int, IntArray]]:  # fmt: skip
    """The split with, for each k in `sizes`, its own random `fraction` of evaluated users cut to
    their first k training interactions (and no validation item); and those users by k."""
    rng = np.random.default_rng(seed)
    evaluated = split.evaluated_users()
    each = round(fraction * len(evaluated))
    drawn = rng.choice(evaluated, size=each * len(sizes), replace=False)
    new = {k: np.sort(drawn[i * each : (i + 1) * each]) for i, k in enumerate(sizes)}
    keep = np.full(split.n_users, np.iinfo(np.int64).max)
    for k, users in new.items():
        keep[users] = k
    # train pairs are in time order per user (leave_one_out sorts them): keep the first k.
    starts = np.searchsorted(split.train_users, np.arange(split.n_users))
    position = np.arange(len(split.train_users)) - starts[split.train_users]
    kept = position < keep[split.train_users]
    is_new = keep < np.iinfo(np.int64).max
    cut = replace(split, train_users=split.train_users[kept], train_items=split.train_items[kept],
                  valid_item=np.where(is_new, -1, split.valid_item))  # fmt: skip
    return cut, new


def new_user_table(dataset: Dataset, config: BPRConfig, epochs: int, *, seed: int = 0,
                   track: Tracker = quiet, title_words: bool = False) -> list[Row]:  # fmt: skip
    split = leave_one_out(dataset, seed)
    makers = factories(dataset.n_items, features_of(dataset, title_words), config)
    rows = []
    with track("new users: train 3 models per size", len(makers) * len(NEW_USER_SIZES)) as bar:
        for keep in NEW_USER_SIZES:
            cut, by_size = new_user_split(split, (keep,), seed=seed)
            new = by_size[keep]
            users, items = train_and_valid_pairs(cut)
            scorers: dict[str, Scorer] = {"popularity": _popularity(users, items, dataset.n_items)}
            for name, factory in makers.items():
                scorers[name] = _train(factory, users, items, epochs).score
                bar.advance(note=f"k={keep} {name}")
            for name in MODELS:
                rows.append(_new_user_row(cut, keep, new, name, scorers[name], seed))
    return rows


def _new_user_row(split: LeaveOneOut, keep: int, users: IntArray, model: str, score: Scorer,
                  seed: int) -> Row:  # fmt: skip
    candidates = np.concatenate([split.test_item[users][:, None], split.test_negatives[users]],
                                axis=1)  # fmt: skip
    return _row(f"new users (k={keep})", model, _rank(score, users, candidates, seed))


# -- both at once, for the simulation ------------------------------------------------------------


@dataclass(frozen=True)
class ColdStudy:
    """Cold items and new users in one split, so one simulated run per model measures both:
    10% of items cold, and three disjoint 10% groups of users cut to 1, 3 and 5 interactions."""

    items: ColdItems  # its split has the new users cut
    new_users: dict[int, IntArray]  # by interactions kept

    @property
    def split(self) -> LeaveOneOut:
        return self.items.split

    def warm_items(self) -> IntArray:
        return np.setdiff1d(np.arange(self.split.n_items), self.items.cold)


def cold_study(dataset: Dataset, seed: int = 0) -> ColdStudy:
    items = cold_item_split(dataset, seed=seed)
    split, new = new_user_split(items.split, NEW_USER_SIZES, seed=seed)
    return ColdStudy(replace(items, split=split), new)


def centralized_scorers(study: ColdStudy, features: ItemFeatures, config: BPRConfig, epochs: int,
                        track: Tracker = quiet) -> dict[str, Scorer]:  # fmt: skip
    """Every model of MODELS trained on the study's pairs in one place (the reference)."""
    n_items = study.split.n_items
    users, items = train_and_valid_pairs(study.split)
    scorers: dict[str, Scorer] = {"popularity": _popularity(users, items, n_items)}
    makers = factories(n_items, features, config)
    with track(f"train 3 models x {epochs} epochs", len(makers)) as bar:
        for name, factory in makers.items():
            scorers[name] = _train(factory, users, items, epochs, study.warm_items()).score
            bar.advance(note=name)
    return scorers


def node_popularity(split: LeaveOneOut, groups: list[IntArray]) -> Scorer:
    """Popularity as a node knows it without sharing counts: among its own users' interactions."""
    users, items = train_and_valid_pairs(split)
    node_of = np.zeros(split.n_users, dtype=np.int64)
    counts = np.zeros((len(groups), split.n_items))
    for node, group in enumerate(groups):
        node_of[group] = node
        counts[node] = np.bincount(items[np.isin(users, group)], minlength=split.n_items)
    return lambda users, candidates: counts[node_of[users][:, None], candidates]


def study_rows(study: ColdStudy, model: str, score: Scorer, users: IntArray,
               seed: int = 0) -> list[Row]:  # fmt: skip
    """Cold items, warm items (users who are not new) and new users by k, among `users`."""
    cold = study.items
    mine = np.isin(cold.users, users)
    rows = [_row("cold items", model, _rank(score, cold.users[mine], cold.candidates[mine], seed))]
    new = np.concatenate([np.zeros(0, dtype=np.int64), *study.new_users.values()])
    established = np.setdiff1d(np.intersect1d(users, study.split.evaluated_users()), new)
    rows.append(_row("warm items", model, sampled_ranks(study.split, score, established)))
    for keep, group in study.new_users.items():
        rows.append(_new_user_row(study.split, keep, np.intersect1d(group, users), model, score,
                                  seed))  # fmt: skip
    return rows
