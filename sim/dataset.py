"""The in-memory form every dataset takes: implicit interactions plus item and user side data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gossiprec.node.features import item_feature_names
from gossiprec.node.types import IntArray

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Dataset:
    """Interactions as parallel arrays, with users and items as 0-based dense indices."""

    name: str
    users: IntArray
    items: IntArray
    ratings: Float64Array
    timestamps: IntArray
    n_users: int
    n_items: int
    genre_names: tuple[str, ...] = ()
    item_genres: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros((0, 0), bool))
    item_titles: tuple[str, ...] = ()
    item_years: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))  # 0 = unknown
    user_age: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    user_gender: tuple[str, ...] = ()
    user_occupation: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.users)
        for name in ("items", "ratings", "timestamps"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, users has {n}")
        if n and (self.users.min() < 0 or self.users.max() >= self.n_users):
            raise ValueError("user index out of range [0, n_users)")
        if n and (self.items.min() < 0 or self.items.max() >= self.n_items):
            raise ValueError("item index out of range [0, n_items)")

    def item_features(self, title_words: bool = False) -> list[list[str]]:
        """Each item's content as feature names (node/features.py): its genres, release year
        and decade, and optionally its title's words (on ML-100K they hurt cold items: most
        words name one film, so they act as ids; see the README's cold-start table)."""
        features: list[list[str]] = []
        for item in range(self.n_items):
            fields: dict[str, object] = {}
            if self.item_genres.shape[0] > item:
                fields["genre"] = [g for g, on in zip(self.genre_names, self.item_genres[item],
                                                      strict=True) if on]  # fmt: skip
            if len(self.item_years) > item and self.item_years[item]:
                year = int(self.item_years[item])
                fields["year"], fields["decade"] = year, year // 10 * 10
            if title_words and len(self.item_titles) > item:
                fields["text"] = self.item_titles[item].rsplit(" (", 1)[0]
            features.append(item_feature_names(fields))
        return features

    def __len__(self) -> int:
        return len(self.users)

    def content_sha256(self) -> str:
        """Checksum of the interactions independent of file layout and row order."""
        order = np.lexsort((self.timestamps, self.items, self.users))
        table = np.stack(
            [
                self.users[order],
                self.items[order],
                np.rint(self.ratings[order]).astype(np.int64),
                self.timestamps[order],
            ],
            axis=1,
        ).astype("<i8")
        return hashlib.sha256(table.tobytes()).hexdigest()
