"""Item content as hashed feature rows, so every node places the same feature in the same row.

An item's features are strings such as "genre=Comedy", "year=1995" or "word=star"; each maps to
a row of a fixed-size shared table by a stable, unkeyed hash. Nodes agree on rows without a
vocabulary or a server, and a feature nobody has seen before needs no coordination either; two
features sharing a row is the price (measured in the README).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from gossiprec.node.stable_hash import stable_row
from gossiprec.node.types import IntArray

if TYPE_CHECKING:  # torch loads in matrix() only: the command line reads catalogues without it
    import torch

# Features of one item beyond this are dropped (a hostile or huge catalogue entry stays bounded).
MAX_FEATURES_PER_ITEM = 64
MAX_VALUE = 100  # characters of one feature value; longer ones are cut
MAX_TEXT = 10_000
_WORD = re.compile(r"[a-z0-9]+")


def item_feature_names(fields: Mapping[str, object]) -> list[str]:
    """Feature strings of one catalogue entry: each categorical field's values as "field=value"
    (a list, or a string split on "|"), and a field named "text" as its words ("word=...")."""
    names: list[str] = []
    for field, value in fields.items():
        if field == "id" or value is None or value == "":
            continue
        if field == "text":
            words = _WORD.findall(str(value)[:MAX_TEXT].lower())
            names += [f"word={w[:MAX_VALUE]}" for w in dict.fromkeys(words)]
            continue
        values = value if isinstance(value, list) else str(value).split("|")
        names += [f"{field[:MAX_VALUE]}={str(v).strip()[:MAX_VALUE]}"
                  for v in values if str(v).strip()]  # fmt: skip
    return names[:MAX_FEATURES_PER_ITEM]


class ItemFeatures:
    """Which feature rows each item row has: the [n_items, rows] averaging matrix of a hybrid
    model, kept sparse. Items without features have an empty row."""

    def __init__(self, n_items: int, rows: int) -> None:
        if rows < 1:
            raise ValueError(f"feature rows must be >= 1, got {rows}")
        self.n_items = n_items
        self.rows = rows
        self._of_item: dict[int, IntArray] = {}
        self._matrix: torch.Tensor | None = None

    def set(self, item: int, names: Iterable[str]) -> None:
        """Give item row `item` these features (replacing any it had)."""
        if not 0 <= item < self.n_items:
            raise ValueError(f"item row must lie in [0, {self.n_items}), got {item}")
        rows = np.unique([stable_row(name, self.rows) for name in names]).astype(np.int64)
        self._of_item[item] = rows
        self._matrix = None

    def __len__(self) -> int:
        return sum(1 for rows in self._of_item.values() if len(rows))

    def matrix(self) -> torch.Tensor:
        """Sparse [n_items, rows]: each item's mean over its feature rows."""
        import torch

        if self._matrix is None:
            items = [item for item, rows in self._of_item.items() if len(rows)]
            columns = [self._of_item[item] for item in items]
            counts = np.array([len(rows) for rows in columns], dtype=np.int64)
            index = np.stack(
                [
                    np.repeat(np.array(items, dtype=np.int64), counts),
                    np.concatenate([np.zeros(0, np.int64), *columns]),
                ]
            )
            weights = np.repeat(1 / counts.astype(np.float32), counts)
            self._matrix = torch.sparse_coo_tensor(
                torch.from_numpy(index),
                torch.from_numpy(weights),
                (self.n_items, self.rows),
                check_invariants=True,
            ).coalesce()
        return self._matrix
