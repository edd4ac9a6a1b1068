"""A seeded synthetic dataset for scale: power-law item popularity and latent user clusters.

Each cluster prefers its own slice of the catalogue; a user draws most interactions from their
cluster's slice and the rest from global popularity, so a good model beats popularity on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossiprec.sim.dataset import Dataset


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 1_000
    n_items: int = 2_000
    n_clusters: int = 10
    mean_interactions: int = 60
    min_interactions: int = 5
    popularity_exponent: float = 1.0  # Zipf exponent of item popularity
    in_cluster: float = 0.8  # share of a user's interactions drawn from their cluster's items
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < self.n_clusters or self.n_clusters < 1:
            raise ValueError("need n_users >= 1 and n_items >= n_clusters >= 1")
        if not 1 <= self.min_interactions <= self.mean_interactions:
            raise ValueError("need 1 <= min_interactions <= mean_interactions")
        if self.mean_interactions > self.n_items // self.n_clusters:
            raise ValueError("mean_interactions must not exceed n_items / n_clusters")
        if not 0.0 <= self.in_cluster <= 1.0:
            raise ValueError("in_cluster must lie in [0, 1]")


def generate(config: SyntheticConfig) -> Dataset:
    rng = np.random.default_rng(config.seed)
    popularity = 1.0 / np.arange(1, config.n_items + 1) ** config.popularity_exponent
    popularity = popularity[rng.permutation(config.n_items)]  # popular items in every cluster
    item_cluster = np.arange(config.n_items) % config.n_clusters
    user_cluster = rng.integers(0, config.n_clusters, size=config.n_users)
    # Interactions per user: a heavy tail (log-normal) around the mean, clipped to the catalogue.
    sizes = rng.lognormal(np.log(config.mean_interactions) - 0.5, 1.0, size=config.n_users)
    limit = config.n_items // config.n_clusters
    sizes = np.clip(sizes.astype(np.int64), config.min_interactions, limit)

    users, items = [], []
    for user in range(config.n_users):
        in_mask = item_cluster == user_cluster[user]
        share_in = config.in_cluster / popularity[in_mask].sum()
        share_out = (1 - config.in_cluster) / popularity[~in_mask].sum()
        weights = popularity * np.where(in_mask, share_in, share_out)
        chosen = rng.choice(
            config.n_items, size=int(sizes[user]), replace=False, p=weights / weights.sum()
        )
        users.append(np.full(len(chosen), user, dtype=np.int64))
        items.append(chosen.astype(np.int64))
    user_array = np.concatenate(users)
    item_array = np.concatenate(items)
    timestamps = np.arange(len(user_array), dtype=np.int64)  # draw order doubles as time
    genres = np.zeros((config.n_items, config.n_clusters), dtype=bool)
    genres[np.arange(config.n_items), item_cluster] = True
    return Dataset(
        name="synthetic",
        users=user_array,
        items=item_array,
        ratings=np.ones(len(user_array)),
        timestamps=timestamps,
        n_users=config.n_users,
        n_items=config.n_items,
        genre_names=tuple(f"cluster-{c}" for c in range(config.n_clusters)),
        item_genres=genres,
    )
