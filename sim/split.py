"""Leave-one-out by timestamp: each user's last interaction is test, the one before validation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gossiprec.node.types import IntArray
from gossiprec.sim.dataset import Dataset

N_NEGATIVES = 99


@dataclass(frozen=True)
class LeaveOneOut:
    """Train pairs, one held-out item per user for validation and test, and sampled negatives.

    Users with fewer than 3 interactions have no held-out items (marked -1) and keep all of
    their interactions for training. Negatives never include any item the user interacted with.
    """

    n_users: int
    n_items: int
    train_users: IntArray
    train_items: IntArray
    valid_item: IntArray  # [n_users], -1 = none
    test_item: IntArray  # [n_users], -1 = none
    valid_negatives: IntArray  # [n_users, N_NEGATIVES]
    test_negatives: IntArray  # [n_users, N_NEGATIVES]

    def evaluated_users(self) -> IntArray:
        return np.flatnonzero(self.test_item >= 0)

    def seen_mask(self, users: IntArray, *, include_valid: bool) -> np.ndarray:
        """Bool [len(users), n_items]: items to exclude from a full ranking for these users."""
        row_of = np.full(self.n_users, -1, dtype=np.int64)
        row_of[users] = np.arange(len(users))
        mask = np.zeros((len(users), self.n_items), dtype=bool)
        keep = row_of[self.train_users] >= 0
        mask[row_of[self.train_users[keep]], self.train_items[keep]] = True
        if include_valid:
            valid = self.valid_item[users]
            has = valid >= 0
            mask[np.flatnonzero(has), valid[has]] = True
        return mask


def leave_one_out(dataset: Dataset, seed: int = 0) -> LeaveOneOut:
    # Sort by user, then time. Many users rated dozens of items in the same second; breaking those
    # ties by item index would make the test item the most obscure one, so ties are broken by a
    # fixed hash of (user, item): unbiased, and the same whatever the file's row order.
    tie = (dataset.items * 2_654_435_761 + dataset.users * 40_503) % 4_294_967_291
    order = np.lexsort((tie, dataset.timestamps, dataset.users))
    users = dataset.users[order]
    items = dataset.items[order]
    starts = np.searchsorted(users, np.arange(dataset.n_users), side="left")
    ends = np.searchsorted(users, np.arange(dataset.n_users), side="right")
    counts = ends - starts

    valid_item = np.full(dataset.n_users, -1, dtype=np.int64)
    test_item = np.full(dataset.n_users, -1, dtype=np.int64)
    held = counts >= 3
    test_item[held] = items[ends[held] - 1]
    valid_item[held] = items[ends[held] - 2]

    is_train = np.ones(len(users), dtype=bool)
    is_train[ends[held] - 1] = False
    is_train[ends[held] - 2] = False

    rng = np.random.default_rng(seed)
    interacted = np.zeros((dataset.n_users, dataset.n_items), dtype=bool)
    interacted[users, items] = True
    valid_negatives = sample_negatives(interacted, rng)
    test_negatives = sample_negatives(interacted, rng)
    return LeaveOneOut(
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        train_users=users[is_train],
        train_items=items[is_train],
        valid_item=valid_item,
        test_item=test_item,
        valid_negatives=valid_negatives,
        test_negatives=test_negatives,
    )


def sample_negatives(interacted: np.ndarray, rng: np.random.Generator) -> IntArray:
    """N_NEGATIVES distinct never-interacted items per user (fewer if the catalogue is tiny)."""
    n_users = interacted.shape[0]
    out = np.full((n_users, N_NEGATIVES), -1, dtype=np.int64)
    for user in range(n_users):
        pool = np.flatnonzero(~interacted[user])
        take = min(N_NEGATIVES, len(pool))
        out[user, :take] = rng.choice(pool, size=take, replace=False)
    return out


def restrict(split: LeaveOneOut, users: IntArray) -> LeaveOneOut:
    """The same split with only these users' interactions and held-out items."""
    keep_user = np.zeros(split.n_users, dtype=bool)
    keep_user[users] = True
    keep = keep_user[split.train_users]
    return replace(split, train_users=split.train_users[keep], train_items=split.train_items[keep],
                   valid_item=np.where(keep_user, split.valid_item, -1),
                   test_item=np.where(keep_user, split.test_item, -1))  # fmt: skip


def as_validation(split: LeaveOneOut) -> LeaveOneOut:
    """The split that tunes a setting: the validation item is held out as the test item, and
    the real test items are gone, so whatever trains on it and is scored on it never sees test."""
    return replace(split, test_item=split.valid_item, test_negatives=split.valid_negatives,
                   valid_item=np.full(split.n_users, -1, dtype=np.int64))  # fmt: skip
