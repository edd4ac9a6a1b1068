"""The Node in one process over the in-memory broker: restore, ingest, training, API, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gossiprec.crypto.authority import Authority
from gossiprec.gossip.driver import Identity, last_will, subscriptions
from gossiprec.gossip.fairlock import FairLock
from gossiprec.gossip.memory import InMemoryBroker
from gossiprec.gossip.messages import Kind, ModelUpdate
from gossiprec.gossip.protocol import ESTABLISHED
from gossiprec.node.config import NodeConfig
from gossiprec.node.control import ControlServer, request
from gossiprec.node.errors import ControlError, IngestError, RequestError
from gossiprec.node.logs import JsonLines
from gossiprec.node.node import CHECKPOINT_FILE, Node
from gossiprec.node.node_api import handlers, parse_rows
from gossiprec.node.prometheus import MetricsServer, node_metrics
from gossiprec.sim.broker import free_port
from tests.gossipnet import admit

N_ITEMS = 40


@contextlib.asynccontextmanager
async def started(
    folder: Path, identity: Identity, broker: InMemoryBroker, settings: dict[str, Any] | None = None
) -> AsyncIterator[Node]:
    transport = broker.client(identity.node_id.hex(), subscriptions(identity), last_will(identity))
    async with transport:
        fast = {"gossip.period": 0.05, "gossip.heartbeat": 0.1, "model.item_ids": "hashed"}
        config = NodeConfig.defaults(folder, N_ITEMS).changed({**fast, **(settings or {})})
        node = Node(config, identity, transport)
        try:
            yield node
        finally:
            node.close()


def merge_from_a_peer(node: Node, peer_version: int) -> None:
    """A merge request from a peer at `peer_version` carrying this node's own parameters, merged
    as the driver would: the version moves as a merge moves it (the logical clock), the
    parameters do not."""
    params = {name: array.copy() for name, array in node.gossip.protocol.params.items()}
    update = ModelUpdate(Kind.MERGE_REQUEST, params, version=peer_version, sent_at=time.time())
    with node.lock:
        node.gossip.protocol.receive(b"p" * 16, update, time.time())


def interactions(users: list[int], per_user: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    rows = [(u, int(i)) for u in users for i in rng.choice(N_ITEMS, per_user, replace=False)]
    table = np.array(rows, dtype=np.int64)
    return table[:, 0], table[:, 1], np.arange(len(table), dtype=np.int64)


async def test_a_restarted_node_resumes_its_checkpoint_and_every_interaction(
    tmp_path: Path,
) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    async with started(tmp_path / "n", identity, broker) as node:
        assert await node.ingest(*interactions([1, 2], 6)) == 12
        assert await node.train_round()
        node.checkpoint()
        saved = {name: array.copy() for name, array in node.model.state().items()}
        steps = node.training_steps
        assert await node.ingest(*interactions([3], 4, seed=1)) == 4  # after the checkpoint
    async with started(tmp_path / "n", identity, broker) as node:
        state = node.model.state()
        for name in ("item_embedding", "item_bias"):
            np.testing.assert_array_equal(state[name], saved[name])
        assert node.model.users[:2] == [1, 2]
        np.testing.assert_array_equal(state["user_embedding"][:2], saved["user_embedding"])
        assert node.model.n_interactions == 16 and node.training_steps == steps
        # The protocol averages the model's live arrays, not a copy made at start-up.
        node.gossip.protocol.params["item_bias"][0] = 7.0
        assert float(node.model.item_bias.detach()[0]) == 7.0


async def test_an_unreadable_checkpoint_is_set_aside_and_the_store_rebuilds_the_model(
    tmp_path: Path,
) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    async with started(tmp_path / "n", identity, broker) as node:
        await node.ingest(*interactions([1], 5))
    (tmp_path / "n" / CHECKPOINT_FILE).write_bytes(b"not a zip")
    async with started(tmp_path / "n", identity, broker) as node:
        assert node.model.n_interactions == 5 and node.gossip.version == 0


async def test_training_runs_only_when_there_is_something_new(tmp_path: Path) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    async with started(tmp_path / "n", identity, broker) as node:
        assert not await node.train_round()  # no interactions: nothing to learn, no loss
        assert node.status()["loss"] is None
        await node.ingest(*interactions([1], 5))
        assert await node.train_round()
        assert not await node.train_round()  # nothing ingested, nothing merged
        merge_from_a_peer(node, 0)
        assert await node.train_round()


async def test_the_item_learning_rate_halves_every_half_life_of_model_versions(
    tmp_path: Path,
) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    settings = {"model.lr": 100.0, "model.lr_half_life": 10.0}
    async with started(tmp_path / "n", identity, broker, settings) as node:
        await node.ingest(*interactions([1], 5))
        assert await node.train_round() and node.model.shared_lr == 100.0
        merge_from_a_peer(node, 19)  # two half-lives of merges along, e.g. on joining late
        assert node.gossip.version == 20
        assert await node.train_round() and node.model.shared_lr == 25.0


async def test_a_model_from_far_ahead_gets_the_users_refit_first(tmp_path: Path) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    async with started(tmp_path / "n", identity, broker, {"train.online_steps": 10}) as node:
        await node.ingest(*interactions([1, 2], 8))
        assert await node.train_round()
        moved = []
        for jump in (1, ESTABLISHED):  # an ordinary merge; then joining late
            before = node.model.user_embedding.detach().clone()
            merge_from_a_peer(node, node.gossip.version + jump - 1)
            assert await node.train_round()
            moved.append(float((node.model.user_embedding.detach() - before).norm()))
        # Two steps each round; the catch-up adds ten steps on the users alone.
        assert moved[1] > 2.5 * moved[0], moved


async def test_bad_interactions_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    async with started(tmp_path / "n", identity, broker) as node:
        one = np.array([1], dtype=np.int64)
        with pytest.raises(IngestError, match=r"item ids must lie in \[0, 40\)"):
            await node.ingest(one, np.array([N_ITEMS]), one)
        with pytest.raises(IngestError, match="user ids must be >= 0"):
            await node.ingest(np.array([-1]), one, one)
        assert node.store.count_interactions() == 0


def test_ingest_rows_are_validated_with_messages_naming_the_row() -> None:
    users, items, times = parse_rows([[1, 2], [3, "sku-4", 99]], now=1_000.0)
    assert users.tolist() == [1, 3] and items == ["2", "sku-4"] and times.tolist() == [1000, 99]
    for rows, message in [
        ([], "non-empty list"),
        ("1,2", "non-empty list"),
        ([[1, 2], [1]], "row 1 must be"),
        ([["1", 2]], "row 0: user and time must be integers"),
        ([[1, True]], "row 0: item id 'True' must be"),
        ([[1, -2]], "row 0: item id '-2' must be"),
        ([[1, " x"]], "row 0: item id ' x' must be .* without surrounding spaces"),
        ([[1, "x" * 201]], "row 0: item id 'x{40}' must be 1 to 200"),
        ([[2**63, 1]], "row 0: user and time must be integers"),
    ]:
        with pytest.raises(RequestError, match=message):
            parse_rows(rows, now=0.0)


async def test_two_nodes_over_the_control_api_see_each_other_and_recommend_unseen(
    tmp_path: Path,
) -> None:
    authority, broker = Authority.create(tmp_path / "ca", "unit"), InMemoryBroker()
    a, b = admit(authority), admit(authority)
    async with started(tmp_path / "a", a, broker) as node_a, \
            started(tmp_path / "b", b, broker) as node_b:  # fmt: skip
        socket = tmp_path / "a.sock"
        async with ControlServer(socket, handlers(node_a)), asyncio.TaskGroup() as group:
            tasks = [group.create_task(node_a.run()), group.create_task(node_b.run())]
            seen = [[5, "sku-1"], [5, "sku-2"], [5, "sku-3"]]
            reply = await request(socket, "ingest", rows=seen)
            assert reply == {"received": 3, "added": 3, "interactions": 3}
            await request(socket, "ingest", rows=[[6, "sku-4"], [6, "sku-5"], [6, "sku-1"]])
            # Only ids the node has met can be named, and never one the user has seen.
            items = (await request(socket, "recommend", user=5, k=N_ITEMS))["items"]
            assert sorted(items) == ["sku-4", "sku-5"]
            with pytest.raises(ControlError, match=r"k must be an integer in \[1, 1000\]"):
                await request(socket, "recommend", user=5, k=0)
            for _ in range(100):
                status = await request(socket, "status")
                if status["updates_in"] and status["peers"][0]["bytes_in"]:
                    break
                await asyncio.sleep(0.05)
            assert [p["node_id"] for p in status["peers"]] == [b.node_id.hex()]
            assert status["peers"][0]["state"] == "alive" and status["bytes_out"] > 0
            view = (await request(socket, "peers"))["nodes"]
            assert [n["state"] for n in view] == ["self", "alive"]
            assert view[1]["status"] == {"uptime": view[1]["status"]["uptime"], "codec": "float16"}
            for task in tasks:
                task.cancel()
    assert (tmp_path / "a" / CHECKPOINT_FILE).exists()  # the final checkpoint of a stopped run


async def test_metrics_are_served_on_loopback_in_prometheus_text(tmp_path: Path) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    async with started(tmp_path / "n", identity, broker) as node:
        node.gossip.counters.rejected["decode:shape"] += 2
        port = free_port()
        async with MetricsServer(port, node.status):
            url = f"http://127.0.0.1:{port}/metrics"
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    lines = text.decode().splitlines()
    assert 'gossiprec_rejected_total{reason="decode:shape"} 2.0' in lines
    assert "gossiprec_broker_connected 1.0" in lines
    assert 'gossiprec_peers{state="alive"} 0.0' in lines
    assert "gossiprec_sessions_opened_in_total 0.0" in lines
    assert len(node_metrics(node.status())) == 19
    # The process and Python collectors ride along.
    assert any(line.startswith("process_resident_memory_bytes ") for line in lines)
    assert any(line.startswith("python_gc_collections_total") for line in lines)


async def test_status_and_metrics_show_what_the_defence_cut_and_whom_it_quarantined(
    tmp_path: Path,
) -> None:
    identity, broker = admit(Authority.create(tmp_path / "ca", "unit")), InMemoryBroker()
    async with started(tmp_path / "n", identity, broker) as node:
        hostile, protocol = b"h" * 16, node.gossip.protocol
        huge = {name: np.full_like(array, 1e3) for name, array in protocol.params.items()}
        for second in range(12):  # one a second: past the rate limit, into quarantine
            at = time.time() + 10 * second
            update = ModelUpdate(Kind.MERGE_REQUEST, huge, version=5, sent_at=at)
            with node.lock:
                protocol.receive(hostile, update, at)
        status = node.status()
    assert np.abs(protocol.params["item_embedding"]).max() < 1.0  # never near the 1e3 sent
    [peer] = status["peers"]
    assert peer["quarantined"] and peer["clipped"] >= 4
    assert status["defence"]["quarantined"] == 1 and status["defence"]["refused"] >= 1
    assert status["defence"]["radii"]["item_embedding"]["row"] > 0
    text = {str(m.name): m.samples for m in node_metrics(status)}
    assert text["gossiprec_peer_quarantined"][0].value == 1
    assert text["gossiprec_peer_clipped"][0].value == peer["clipped"]
    assert text["gossiprec_peer_clipped"][0].labels == {"peer": hostile.hex()}


def test_json_log_lines_carry_level_logger_and_message() -> None:
    record = logging.LogRecord("node.daemon", logging.INFO, __file__, 1, "up: %s", ("x",), None)
    assert json.loads(JsonLines().format(record))["message"] == "up: x"
    assert json.loads(JsonLines().format(record))["logger"] == "node.daemon"


def test_the_fair_lock_serves_waiters_in_arrival_order() -> None:
    lock, order = FairLock(), []

    def take(name: int) -> None:
        with lock:
            order.append(name)

    lock.acquire()
    threads = []
    for name in range(4):
        thread = threading.Thread(target=take, args=(name,))
        thread.start()
        threads.append(thread)
        while lock._next_ticket != name + 2:  # wait until this one queues
            time.sleep(0.001)
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3]


def test_the_fair_lock_is_taken_without_waiting_only_when_free_and_no_one_queues() -> None:
    lock = FairLock()
    assert lock.acquire(blocking=False)  # free: taken
    assert not lock.acquire(blocking=False)  # held: refused at once, not queued

    def wait_in_turn() -> None:
        with lock:
            pass

    waiter = threading.Thread(target=wait_in_turn)
    waiter.start()
    while lock._next_ticket != 2:  # the waiter queues
        time.sleep(0.001)
    lock.release()
    waiter.join(5)
    assert not waiter.is_alive() and lock.acquire(blocking=False)  # the queue drained: free


async def test_catalogue_entries_over_the_control_api_survive_a_restart(tmp_path: Path) -> None:
    authority, broker = Authority.create(tmp_path / "ca", "unit"), InMemoryBroker()
    identity = admit(authority)
    hybrid = {"model.kind": "hybrid"}
    async with started(tmp_path / "a", identity, broker, hybrid) as node:
        socket = tmp_path / "a.sock"
        async with ControlServer(socket, handlers(node)):
            entries = [{"id": "sku-1", "genre": "Action|Comedy"}, {"id": "sku-2", "text": "Red"}]
            assert await request(socket, "items", items=entries) == {
                "received": 2, "added": 2, "catalogue": 2}  # fmt: skip
            with pytest.raises(ControlError, match='item 0 must be an object with an "id"'):
                await request(socket, "items", items=[{"genre": "x"}])
            await request(socket, "ingest", rows=[[1, "sku-1"]])
            assert (await request(socket, "recommend", user=1, k=5))["items"] == ["sku-2"]
    async with started(tmp_path / "a", identity, broker, hybrid) as node:
        assert node.status()["catalogue"] == {"ids": 2, "version": 0, "with_features": 2,
                                              "item_ids": "hashed", "model": "hybrid"}  # fmt: skip
        assert await node.recommend(1, 5) == ["sku-2"]
