from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from gossiprec.node.control import ControlServer, request
from gossiprec.node.errors import ControlError, NodeUnreachable, RequestError


async def status(_request: dict[str, Any]) -> dict[str, Any]:
    return {"node_id": "ab12", "peers": 2}


async def recommend(req: dict[str, Any]) -> dict[str, Any]:
    k = req["k"]
    if k < 1:
        raise RequestError("k must be >= 1")
    return {"items": list(range(k))}


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "node" / "control.sock"  # short enough for AF_UNIX's 108-byte limit


async def test_commands_are_answered_over_a_0600_socket(socket_path: Path) -> None:
    async with ControlServer(socket_path, {"status": status, "recommend": recommend}):
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        assert await request(socket_path, "status") == {"node_id": "ab12", "peers": 2}
        assert await request(socket_path, "recommend", k=3) == {"items": [0, 1, 2]}
    assert not socket_path.exists()


async def test_bad_requests_get_errors_and_the_server_keeps_serving(socket_path: Path) -> None:
    async with ControlServer(socket_path, {"status": status, "recommend": recommend}):
        with pytest.raises(ControlError, match="unknown command 'nope'; known: recommend, status"):
            await request(socket_path, "nope")
        with pytest.raises(ControlError, match="recommend: k must be >= 1"):
            await request(socket_path, "recommend", k=0)
        # A bug in a handler is the node's fault: no details leak, the log has the traceback.
        with pytest.raises(ControlError, match=r"recommend: internal error \(see the node's log\)"):
            await request(socket_path, "recommend")
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        hostile = (b"[" * 100_000 + b"\n", b'{"command": "status", "k": ' + b"9" * 5_000 + b"}\n")
        for garbage in (b"not json\n", b"[1, 2]\n", b'{"command": 5}\n', *hostile):
            writer.write(garbage)
            reply = json.loads(await reader.readline())
            assert "error" in reply
        writer.write(b"x" * 2_000_000 + b"\n")  # over the 1 MB request limit
        assert "too large" in json.loads(await reader.readline())["error"]
        writer.close()
        assert await request(socket_path, "status") == {"node_id": "ab12", "peers": 2}


async def test_no_node_running_names_the_fix(socket_path: Path) -> None:
    with pytest.raises(NodeUnreachable, match="gossiprec node run"):
        await request(socket_path, "status", timeout=1)
