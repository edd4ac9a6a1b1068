"""`gossiprec node run`: one node as a long-running process.

Lifetimes nest (AsyncExitStack): MQTT link, then the node, then the control socket and the
optional metrics endpoint. SIGTERM or SIGINT stops the node: a final checkpoint, then an empty
presence so peers drop it at once, then the link closes. After SIGKILL the broker publishes the
last will instead, and a restart resumes from the checkpoint and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from gossiprec.gossip.driver import Identity, last_will, subscriptions
from gossiprec.gossip.mqtt import MqttConfig, MqttTransport
from gossiprec.node.config import NodeConfig
from gossiprec.node.control import ControlServer
from gossiprec.node.errors import StartupError
from gossiprec.node.identity import load_identity
from gossiprec.node.interactions_csv import INGEST_BATCH, read_csv
from gossiprec.node.node import Node
from gossiprec.node.node_api import handlers, parse_rows
from gossiprec.node.prometheus import MetricsServer

log = logging.getLogger(__name__)

LEAVE_TIMEOUT = 2.0
LOCK_FILE = "node.lock"


def mqtt_config(config: NodeConfig) -> MqttConfig:
    broker = config.broker
    endpoints = [(url.hostname or "127.0.0.1", url.port or 1883)
                 for url in map(urlsplit, broker.addresses)]  # fmt: skip
    return MqttConfig(host=endpoints[0][0], port=endpoints[0][1], fallbacks=tuple(endpoints[1:]),
                      username=broker.username or None, password=broker.password or None,
                      protocol=broker.protocol, failback=broker.failback)  # fmt: skip


async def import_csv(node: Node, path: Path) -> None:
    """Load a CSV of interactions at start; rows already stored are no-ops, so restarts are safe."""
    added = 0
    for rows in read_csv(path, INGEST_BATCH):
        users, items, times = parse_rows(rows, time.time())
        added += await node.ingest_ids(users, items, times)
    log.info("imported %s: %d new interactions", path, added)


@contextlib.contextmanager
def only_node_on(data_dir: Path) -> Iterator[None]:
    """An exclusive lock on the data folder for the daemon's lifetime: a second `node run` on the
    same folder stops at once instead of taking over the first one's socket and broker id."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = (data_dir / LOCK_FILE).open("a")
    except OSError as error:
        raise StartupError(
            f"node.data_dir = {str(data_dir)!r} cannot be used ({error}). Fix: "
            "point node.data_dir at a folder this user may write."
        ) from error
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartupError(
                f"another node already runs on {data_dir}. Fix: stop it first, or give this one "
                "its own node.data_dir."
            ) from None
        yield  # the lock goes with the file handle, also when the process is killed


async def serve(config: NodeConfig) -> None:
    """Run the node until SIGTERM/SIGINT; a start-up problem is a StartupError naming the fix."""
    with only_node_on(config.data_dir):
        identity = load_identity(config.identity_dir)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            try:
                node = await _start(config, identity, stack)
            except OSError as error:  # a port in use, a folder that cannot be made, ...
                raise StartupError(f"cannot start: {error}. Fix: the setting it names.") from error
            log.info("node %s up: network %s, broker %s, control %s", identity.node_id.hex(),
                     identity.network, ",".join(config.broker.addresses),
                     config.control_socket)  # fmt: skip
            async with asyncio.TaskGroup() as group:
                running = group.create_task(node.run())
                await stop.wait()
                running.cancel()  # node.run writes its final checkpoint as it ends
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.gossip.leave(), LEAVE_TIMEOUT)
            log.info("node %s stopped cleanly", identity.node_id.hex())


async def _start(config: NodeConfig, identity: Identity, stack: contextlib.AsyncExitStack) -> Node:
    """The node with its link, control socket and metrics, each closed by `stack`."""
    shards = config.gossip.presence_shards
    topics, will = subscriptions(identity, shards), last_will(identity, shards)
    transport = MqttTransport(mqtt_config(config), identity.node_id.hex(), topics, will)
    await stack.enter_async_context(transport)
    node = Node(config, identity, transport)
    stack.callback(node.close)
    await stack.enter_async_context(ControlServer(config.control_socket, handlers(node)))
    if config.metrics.port:
        await stack.enter_async_context(MetricsServer(config.metrics.port, node.status))
    if config.node.import_csv is not None:
        await import_csv(node, config.node.import_csv)
    return node
