"""The local control API: JSON lines over a Unix socket that only this user can open (0600).

One request per line, `{"command": NAME, ...arguments}`; one reply per line, the handler's dict,
or `{"error": MESSAGE}`. A malformed or oversized request gets an error reply and never touches
the node. The CLI (`gossiprec status`, `peers`, `recommend`, `ingest`) is a client of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gossiprec.node.errors import ControlError, NodeError, NodeUnreachable

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST_BYTES = 1_048_576
READ_TIMEOUT = 10.0
DRAIN_TIMEOUT = 10.0  # how long shutting down waits for requests under way


class ControlServer:
    """Serves `handlers` on a Unix socket. On exit it stops accepting, then lets requests under
    way finish (up to DRAIN_TIMEOUT): an ingest that was stored gets its acknowledgement."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.Server | None = None
        self._in_flight: set[asyncio.Task[dict[str, Any]]] = set()

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await _clear_stale_socket(self.path)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can open it
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_REQUEST_BYTES)  # fmt: skip
        finally:
            os.umask(old_umask)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:  # fmt: skip
        if self._server is not None:
            self._server.close()
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=DRAIN_TIMEOUT)
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                except (TimeoutError, ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"error": "request too large or too slow"})
                    return
                if not line:
                    return
                # Its own task, shielded: shutting down waits for it instead of cutting it off.
                task = asyncio.ensure_future(self._dispatch(line))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                await self._reply(writer, await asyncio.shield(task))
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, nested too deep, integers too long
            return {"error": "request is not JSON the node accepts"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"error": 'request must be an object with a "command"'}
        handler = self.handlers.get(request["command"])
        if handler is None:
            return {"error": f"unknown command {request['command'][:40]!r}; "
                             f"known: {', '.join(sorted(self.handlers))}"}  # fmt: skip
        try:
            return await handler(request)
        except NodeError as error:  # the request's fault: say why
            return {"error": f"{request['command']}: {error}"}
        except Exception:
            log.exception("control command %s failed", request["command"])
            return {"error": f"{request['command']}: internal error (see the node's log)"}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()


async def _clear_stale_socket(path: Path) -> None:
    """Remove a socket a killed run left behind; never a live node's socket, never a file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(
            errno.EEXIST, "exists and is not a socket (control.socket)", str(path)
        )
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2.0)
    except (OSError, TimeoutError):
        path.unlink()  # nobody answers: left over from a run that was killed
        return
    writer.close()
    raise FileExistsError(errno.EADDRINUSE, "a node already answers there (control.socket)",
                          str(path))  # fmt: skip


async def request(
    path: Path, command: str, timeout: float = 5.0, **arguments: Any
) -> dict[str, Any]:
    """Send one command to a node's control socket and return its reply."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path),
                                                limit=MAX_REQUEST_BYTES), timeout)  # fmt: skip
    except (OSError, TimeoutError) as exc:
        raise NodeUnreachable(
            f"no node answers on {path} ({exc}). Fix: start it with "
            "`gossiprec node run --config node.toml`, or pass --socket."
        ) from exc
    try:
        writer.write(json.dumps({"command": command, **arguments}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError) as exc:
        raise NodeUnreachable(f"the node on {path} did not answer within {timeout}s") from exc
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    reply = json.loads(line) if line else {"error": "the node closed the connection"}
    if not isinstance(reply, dict):
        raise ControlError("the node sent a reply that is not an object")
    if "error" in reply:
        raise ControlError(str(reply["error"]))
    return reply
