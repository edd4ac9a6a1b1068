"""An optional Prometheus endpoint (prometheus-client): GET /metrics on 127.0.0.1 only.

Loopback only by construction (there is no option to bind elsewhere): a scraper on the same host,
or a sidecar, reads it. The node's values come from the same status the control API serves,
read on the event loop at each scrape (the HTTP server runs in its own thread); the process and
Python collectors add CPU, memory, file descriptors and garbage collection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

SCRAPE_TIMEOUT = 5.0
PEER_STATES = ("alive", "suspect", "dead")


def node_metrics(status: dict[str, Any]) -> list[Metric]:
    """Metric families for a node status (see Node.status)."""

    def gauge(name: str, text: str, value: float) -> Metric:
        return GaugeMetricFamily(f"gossiprec_{name}", text, value=value)

    def counter(name: str, text: str, value: float) -> Metric:
        return CounterMetricFamily(f"gossiprec_{name}", text, value=value)

    rejected = CounterMetricFamily("gossiprec_rejected", "dropped messages", labels=["reason"])
    for reason, count in sorted(status["rejected"].items()):
        rejected.add_metric([reason], count)
    peers = GaugeMetricFamily("gossiprec_peers", "peers in this node's view", labels=["state"])
    for state in PEER_STATES:
        peers.add_metric([state], sum(p["state"] == state for p in status["peers"]))
    broker, defence, sessions = status["broker"], status["defence"], status["sessions"]
    clipped = CounterMetricFamily("gossiprec_peer_clipped", "a peer's messages the defence cut",
                                  labels=["peer"])  # fmt: skip
    quarantined = GaugeMetricFamily("gossiprec_peer_quarantined", "1 while a peer is quarantined",
                                    labels=["peer"])  # fmt: skip
    for peer in status["peers"]:
        clipped.add_metric([peer["node_id"]], peer["clipped"])
        quarantined.add_metric([peer["node_id"]], int(peer["quarantined"]))
    privacy = status["privacy"]
    spent = [] if not privacy["enabled"] else [
        gauge("privacy_epsilon", "differential privacy spent (epsilon)", privacy["epsilon"]),
        gauge("privacy_delta", "the delta epsilon is spent at", privacy["delta"]),
        gauge("privacy_budget", "the epsilon the node stops (or warns) at", privacy["budget"]),
        counter("privacy_rounds", "private training rounds spent", privacy["rounds"]),
    ]  # fmt: skip
    return [
        gauge("uptime_seconds", "seconds since the node started", status["uptime"]),
        gauge("broker_connected", "1 while the MQTT link is up", int(broker["connected"])),
        counter("broker_connects", "MQTT connections made", broker["connects"]),
        counter("sessions_opened_out", "sessions opened to peers", sessions["opened_out"]),
        counter("sessions_opened_in", "sessions peers opened to this node", sessions["opened_in"]),
        gauge("model_version", "merges along this model's lineage", status["model_version"]),
        counter("training_steps", "training steps taken", status["training_steps"]),
        gauge("interactions", "interactions stored on this node", status["interactions"]),
        counter("bytes_in", "bytes received", status["bytes_in"]),
        counter("bytes_out", "bytes sent", status["bytes_out"]),
        counter("messages_in", "messages received", status["messages_in"]),
        counter("messages_out", "messages sent", status["messages_out"]),
        rejected,
        peers,
        counter("clipped", "merged messages the defence cut", defence["clipped"]),
        counter("refused", "messages of rate-limited or quarantined peers", defence["refused"]),
        gauge("quarantined_peers", "peers quarantined now", defence["quarantined"]),
        clipped,
        quarantined,
        *spent,
    ]


class _NodeCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]], loop: asyncio.AbstractEventLoop):
        self._status = status
        self._loop = loop

    def collect(self) -> Iterator[Metric]:
        async def read() -> dict[str, Any]:
            return self._status()

        # The status lives on the event loop; the HTTP server is another thread.
        status = asyncio.run_coroutine_threadsafe(read(), self._loop).result(SCRAPE_TIMEOUT)
        yield from node_metrics(status)


def registry_for(status: Callable[[], dict[str, Any]],
                 loop: asyncio.AbstractEventLoop) -> CollectorRegistry:  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(status, loop))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class MetricsServer:
    """`async with MetricsServer(port, node.status):` /metrics on 127.0.0.1:port meanwhile."""

    def __init__(self, port: int, status: Callable[[], dict[str, Any]]) -> None:
        self.port = port
        self._status = status
        self._stop: Callable[[], None] | None = None

    async def __aenter__(self) -> Self:
        registry = registry_for(self._status, asyncio.get_running_loop())
        server, thread = start_http_server(self.port, addr="127.0.0.1", registry=registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(SCRAPE_TIMEOUT)

        self._stop = stop
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:  # fmt: skip
        if self._stop is not None:
            await asyncio.to_thread(self._stop)
