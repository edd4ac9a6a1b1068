"""The control API's commands for one Node: what `gossiprec status/peers/recommend/ingest` ask."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gossiprec.node.catalogue import check_item_id
from gossiprec.node.control import Handler
from gossiprec.node.errors import IngestError, RequestError
from gossiprec.node.features import item_feature_names
from gossiprec.node.items_file import ITEMS_BATCH
from gossiprec.node.node import Node
from gossiprec.node.types import IntArray

MAX_K = 1_000
MAX_ITEMS = ITEMS_BATCH


def handlers(node: Node) -> dict[str, Handler]:
    async def status(request: dict[str, Any]) -> dict[str, Any]:
        return node.status()

    async def peers(request: dict[str, Any]) -> dict[str, Any]:
        return {"nodes": node.network_view()}

    async def recommend(request: dict[str, Any]) -> dict[str, Any]:
        user, k = _integer(request, "user", 0, 2**62), _integer(request, "k", 1, MAX_K)
        return {"user": user, "items": await node.recommend(user, k)}

    async def ingest(request: dict[str, Any]) -> dict[str, Any]:
        users, items, times = parse_rows(request.get("rows"), time.time())
        added = await node.ingest_ids(users, items, times)
        return {"received": len(users), "added": added, "interactions": node.stored_interactions}

    async def items(request: dict[str, Any]) -> dict[str, Any]:
        entries = parse_items(request.get("items"))
        added = await node.add_items(entries)
        return {"received": len(entries), "added": added, "catalogue": len(node.catalogue)}

    return {"status": status, "peers": peers, "recommend": recommend, "ingest": ingest,
            "items": items}  # fmt: skip


def _integer(request: dict[str, Any], name: str, low: int, high: int) -> int:
    value = request.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"{name} must be an integer in [{low}, {high}]")
    return value


def parse_rows(rows: Any, now: float) -> tuple[IntArray, list[str], IntArray]:
    """`ingest` rows: [[user, item], …] or [[user, item, unix_time], …]; users and times are
    integers, items the user's ids (strings, or integers taken as their digits)."""
    if not isinstance(rows, list) or not rows:
        raise RequestError("rows must be a non-empty list of [user, item] or [user, item, time]")
    table = np.zeros((len(rows), 2), dtype=np.int64)
    items: list[str] = []
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) not in (2, 3):
            raise RequestError(f"row {index} must be [user, item] or [user, item, time]")
        numbers = [row[0], *row[2:]]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62
                   for v in numbers):  # fmt: skip
            raise RequestError(f"row {index}: user and time must be integers in [0, 2^62)")
        try:
            items.append(check_item_id(row[1]))
        except IngestError as error:
            raise RequestError(f"row {index}: {error}") from None
        table[index] = [row[0], row[2] if len(row) == 3 else int(now)]
    return table[:, 0], items, table[:, 1]


def parse_items(entries: Any) -> list[tuple[str, list[str]]]:
    """`items` entries: [{"id": ..., field: value or [values], "text": ...}, …] as (id, the
    entry's feature names); at most MAX_ITEMS per request."""
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_ITEMS:
        raise RequestError(f'items must be a list of 1 to {MAX_ITEMS} objects with an "id"')
    parsed = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise RequestError(f'item {index} must be an object with an "id"')
        try:
            item = check_item_id(entry["id"])
        except IngestError as error:
            raise RequestError(f"item {index}: {error}") from None
        fields = {str(k): v for k, v in entry.items()
                  if isinstance(v, str | int | float | list)
                  and not isinstance(v, bool)}  # fmt: skip
        parsed.append((item, item_feature_names(fields)))
    return parsed
