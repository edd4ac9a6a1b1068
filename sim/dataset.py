"""The in-memory form every dataset takes: implicit interactions plus item and user side data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

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
