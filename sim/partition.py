"""Which users live on which node.

`users_per_node=1` is one device per user. With more users per node, users are either dealt out
at random (IID) or, with `alpha`, by favourite item genre in Dirichlet(alpha) proportions, so a
small alpha gives nodes that each serve one taste (a horror-film shop, a children's library):
the non-IID case.
"""

from __future__ import annotations

import numpy as np

from gossiprec.node.types import IntArray
from gossiprec.sim.errors import SimError
from gossiprec.sim.split import LeaveOneOut


def partition_users(
    split: LeaveOneOut,
    users_per_node: int,
    *,
    alpha: float | None = None,
    item_genres: np.ndarray | None = None,
    seed: int = 0,
) -> list[IntArray]:
    if users_per_node < 1:
        raise SimError(f"users_per_node must be >= 1, got {users_per_node}")
    rng = np.random.default_rng(seed)
    users = rng.permutation(np.unique(split.train_users))
    n_nodes = -(-len(users) // users_per_node)
    if alpha is None or users_per_node == 1:
        return [np.sort(users[i::n_nodes]) for i in range(n_nodes)]
    if alpha <= 0:
        raise SimError(f"alpha must be > 0, got {alpha}")
    if item_genres is None or item_genres.shape[0] != split.n_items or not item_genres.shape[1]:
        raise SimError("a genre partition needs the dataset's item genres")
    # Dirichlet label skew (Hsu et al., 2019), the label being a user's favourite genre: each
    # genre's users are spread over the nodes in Dirichlet(alpha) proportions. Small alpha puts
    # each genre on a few nodes; node sizes then vary around users_per_node.
    favourite = _favourite_genres(split, item_genres)
    nodes: list[list[int]] = [[] for _ in range(n_nodes)]
    for genre in np.unique(favourite[users]):
        members = users[favourite[users] == genre]
        counts = rng.multinomial(len(members), rng.dirichlet(np.full(n_nodes, alpha)))
        for index, part in enumerate(np.split(members, np.cumsum(counts)[:-1])):
            nodes[index].extend(int(u) for u in part)
    return [np.sort(np.array(node, dtype=np.int64)) for node in nodes if node]


def _favourite_genres(split: LeaveOneOut, item_genres: np.ndarray) -> IntArray:
    counts = np.zeros((split.n_users, item_genres.shape[1]))
    np.add.at(counts, split.train_users, item_genres[split.train_items].astype(np.float64))
    return np.asarray(counts.argmax(axis=1), dtype=np.int64)


def genre_skew(groups: list[IntArray], split: LeaveOneOut, item_genres: np.ndarray) -> float:
    """Mean over nodes of the share of the node's users whose favourite is its top genre."""
    favourite = _favourite_genres(split, item_genres)
    shares = [np.bincount(favourite[g]).max() / len(g) for g in groups if len(g)]
    return float(np.mean(shares))
