"""The user's item ids (strings: SKUs, URLs, video ids) and the model rows they live in.

Three ways to name items, chosen by `[model] item_ids` (the same on every node):
- "catalogue" (default): an id's row is its place in the network's catalogue, which the
  authority signs and publishes (`gossiprec ca catalogue`; crypto/catalogue.py). Exact rows, no
  collisions, updates no larger than the catalogue; ids outside it are refused until the
  authority adds them. `n_items` is the table's capacity: the catalogue grows into it.
- "hashed": an id's row is a stable hash of it into the `n_items` rows. No list to agree on at
  all; ids sharing a row share an embedding, and it takes 8x as many rows as items to come
  within 5% of exact rows (measured in the README), so updates are 8x as large.
- "rows": ids are the rows themselves, "0" to "n_items - 1" (datasets whose ids are already
  dense, as ML-100K's in the simulation).

The node remembers which ids it has met in each row, so it can answer in the user's ids.
"""

from __future__ import annotations

import numpy as np

from gossiprec.node.config import ITEM_ID_MODES
from gossiprec.node.errors import IngestError
from gossiprec.node.stable_hash import stable_row
from gossiprec.node.types import IntArray

MAX_ID_LENGTH = 200
_SALT = b"gossiprec/item"  # 14 bytes: blake2b takes 16


def check_item_id(item: object) -> str:
    """A usable item id as a string (an integer is taken as its decimal digits)."""
    if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
        return str(item)
    if (not isinstance(item, str) or not 0 < len(item) <= MAX_ID_LENGTH
            or not item.isprintable() or item != item.strip()):  # fmt: skip
        raise IngestError(f"item id {str(item)[:40]!r} must be 1 to {MAX_ID_LENGTH} "
                          "printable characters without surrounding spaces, or a "
                          "non-negative integer")  # fmt: skip
    return item


class ItemCatalogue:
    def __init__(self, n_items: int, mode: str = "catalogue") -> None:
        if mode not in ITEM_ID_MODES:
            raise ValueError(f"item id mode must be one of {', '.join(ITEM_ID_MODES)}")
        self.n_items = n_items
        self.mode = mode
        self._ids_at: dict[int, list[str]] = {}
        self._placed: dict[str, int] = {}  # "catalogue": id -> its place

    def place(self, items: list[str]) -> None:
        """The authority's catalogue, in its order: item k lives in row k. A version only ever
        appends, so a known id never moves."""
        if self.mode != "catalogue":
            return
        if len(items) > self.n_items:
            raise IngestError(f"the catalogue holds {len(items)} items, more than the "
                              f"{self.n_items} rows of model.n_items. Fix: a network with "
                              "more rows (n_items is the same on every node).")  # fmt: skip
        for row, item in enumerate(items):
            if self._placed.get(item, row) != row:
                raise IngestError(f"the catalogue moves item {item[:40]!r} from row "
                                  f"{self._placed[item]} to {row}: not from this network's "
                                  "authority, or its catalogue.bin was edited")  # fmt: skip
        for row, item in enumerate(items):
            self._placed[item] = row

    def row(self, item: str) -> int:
        if self.mode == "catalogue":
            if item not in self._placed:
                raise IngestError(f"item id {item[:40]!r} is not in the network's catalogue. "
                                  "Fix: the authority adds it (gossiprec ca catalogue --items "
                                  "FILE --broker URL), or every node sets model.item_ids = "
                                  "\"hashed\" (no catalogue)")  # fmt: skip
            return self._placed[item]
        if self.mode == "hashed":
            return stable_row(item, self.n_items, _SALT)
        if not item.isascii() or not item.isdigit() or int(item) >= self.n_items:
            raise IngestError(f"item id {item[:40]!r} is not a row in [0, {self.n_items}): with "
                              "[model] item_ids = \"rows\" ids are 0-based row numbers. Fix: "
                              "use them, or set item_ids = \"hashed\" (any string ids) on every "
                              "node of the network")  # fmt: skip
        return int(item)

    def restore(self, item: str, row: int) -> None:
        """An id and its row as the store kept them."""
        if self.mode == "catalogue":
            self._placed[item] = row
        self.remember([item])

    def rows(self, items: list[str]) -> IntArray:
        return np.array([self.row(item) for item in items], dtype=np.int64)

    def remember(self, items: list[str]) -> list[tuple[str, int]]:
        """Note these ids; returns the ones not met before, with their rows."""
        fresh = []
        for item in dict.fromkeys(items):
            row = self.row(item)
            known = self._ids_at.setdefault(row, [])
            if item not in known:
                known.append(item)
                fresh.append((item, row))
        return fresh

    def __contains__(self, item: str) -> bool:
        try:
            return item in self._ids_at.get(self.row(item), ())
        except IngestError:
            return False

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._ids_at.values())

    def ids_at(self, row: int) -> list[str]:
        return list(self._ids_at.get(row, ()))

    def named_rows(self) -> IntArray:
        """Rows holding at least one id the node knows (only these can be recommended)."""
        return np.array(sorted(self._ids_at), dtype=np.int64)

    def shared_rows(self) -> int:
        """Ids that share their row with another known id."""
        return sum(len(ids) for ids in self._ids_at.values() if len(ids) > 1)
