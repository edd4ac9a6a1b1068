"""An optional Prometheus endpoint: GET /metrics on 127.0.0.1 only, text exposition format.

Loopback only by construction (there is no option to bind elsewhere): a scraper on the same
host, or a sidecar, reads it. Values come from the same status the control API serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

READ_TIMEOUT = 5.0


def exposition(status: dict[str, Any]) -> str:
    """Prometheus text format for a node status (see Node.status)."""
    lines: list[str] = []

    def metric(name: str, kind: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# TYPE gossiprec_{name} {kind}")
        lines.extend(f"gossiprec_{name}{labels} {value}" for labels, value in samples)

    metric("uptime_seconds", "gauge", [("", status["uptime"])])
    metric("broker_connected", "gauge", [("", int(status["broker"]["connected"]))])
    metric("broker_connects_total", "counter", [("", status["broker"]["connects"])])
    metric("model_version", "gauge", [("", status["model_version"])])
    metric("training_steps_total", "counter", [("", status["training_steps"])])
    metric("interactions", "gauge", [("", status["interactions"])])
    for direction in ("in", "out"):
        metric(f"bytes_{direction}_total", "counter", [("", status[f"bytes_{direction}"])])
        metric(f"messages_{direction}_total", "counter", [("", status[f"messages_{direction}"])])
    rejected = sorted(status["rejected"].items())
    metric("rejected_total", "counter", [(f'{{reason="{r}"}}', n) for r, n in rejected])
    states = ("alive", "suspect", "dead")
    counts = {s: sum(p["state"] == s for p in status["peers"]) for s in states}
    metric("peers", "gauge", [(f'{{state="{s}"}}', counts[s]) for s in states])
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, port: int, status: Callable[[], dict[str, Any]]) -> None:
        self.port = port
        self._status = status
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:  # fmt: skip
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path == b"/metrics":
                status, body = "200 OK", exposition(self._status()).encode()
            else:
                status, body = "404 Not Found", b"try /metrics\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):  # fmt: skip
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
