"""The control API's commands for one Node: what `gossiprec status/peers/recommend/ingest` ask."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gossiprec.node.control import Handler
from gossiprec.node.errors import RequestError
from gossiprec.node.node import Node
from gossiprec.node.types import IntArray

MAX_K = 1_000


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
        added = await node.ingest(users, items, times)
        return {"received": len(users), "added": added, "interactions": node.model.n_interactions}

    return {"status": status, "peers": peers, "recommend": recommend, "ingest": ingest}


def _integer(request: dict[str, Any], name: str, low: int, high: int) -> int:
    value = request.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"{name} must be an integer in [{low}, {high}]")
    return value


def parse_rows(rows: Any, now: float) -> tuple[IntArray, IntArray, IntArray]:
    """`ingest` rows: [[user, item], …] or [[user, item, unix_time], …]."""
    if not isinstance(rows, list) or not rows:
        raise RequestError("rows must be a non-empty list of [user, item] or [user, item, time]")
    table = np.zeros((len(rows), 3), dtype=np.int64)
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) not in (2, 3):
            raise RequestError(f"row {index} must be [user, item] or [user, item, time]")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62 for v in row):
            raise RequestError(f"row {index} must hold integers in [0, 2^62)")
        table[index] = [row[0], row[1], row[2] if len(row) == 3 else int(now)]
    return table[:, 0], table[:, 1], table[:, 2]
