"""End to end: three `gossiprec node run` daemons as OS processes around a real mosquitto."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gossiprec.node.checkpoint import load_checkpoint
from gossiprec.node.node import CHECKPOINT_FILE
from gossiprec.sim.broker import Mosquitto
from gossiprec.sim.dataset import Dataset
from tests.daemonnet import (
    FAST_ENV,
    ROW_IDS,
    Daemon,
    alive_peers,
    gossiprec,
    init_nodes,
    started,
    wait_for,
)

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

USERS_PER_NODE = 8


def rows_of(dataset: Dataset, users: range) -> list[list[int]]:
    chosen = np.isin(dataset.users, list(users))
    table = np.stack([dataset.users[chosen], dataset.items[chosen], dataset.timestamps[chosen]])
    return [[int(v) for v in row] for row in table.T]


@pytest.fixture
def cluster(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[list[Daemon]]:
    with started(init_nodes(tmp_path, mosquitto.url, 3), ROW_IDS) as daemons:
        yield daemons


def test_three_daemons_gossip_learn_recommend_and_survive_kill_9(
    cluster: list[Daemon], ml100k: Dataset, tmp_path: Path
) -> None:
    for daemon in cluster:
        daemon.wait_ready()
    # Each node ingests different users: node 0 in bulk through the CLI's CSV path.
    node_users = [range(i * USERS_PER_NODE, (i + 1) * USERS_PER_NODE) for i in range(3)]
    csv = tmp_path / "node0.csv"
    csv.write_text("user,item,timestamp\n" + "".join(
        f"{u},{i},{t}\n" for u, i, t in rows_of(ml100k, node_users[0])))  # fmt: skip
    ingested = gossiprec("ingest", "--config", str(cluster[0].config), "--csv", str(csv), "--json")
    assert ingested.returncode == 0, ingested.stderr
    counts = [len(rows_of(ml100k, users)) for users in node_users]
    assert f'"added": {counts[0]}' in ingested.stdout
    for daemon, users in zip(cluster[1:], node_users[1:], strict=True):
        reply = daemon.ask("ingest", rows=rows_of(ml100k, users))
        assert reply["added"] == len(rows_of(ml100k, users))

    # Everyone sees two live peers, and the bytes exchanged keep growing.
    assert wait_for(lambda: all(alive_peers(d.ask("status")) == 2 for d in cluster), 30)
    first = [d.ask("status") for d in cluster]
    assert wait_for(lambda: all(d.ask("status")["bytes_in"] > s["bytes_in"] + 100_000
                                for d, s in zip(cluster, first, strict=True)), 20)  # fmt: skip

    # Peers are picked at random each round: every pair has traded models both ways soon.
    def traded_both_ways() -> bool:
        peers = [p for d in cluster for p in d.ask("status")["peers"]]
        return all(p["bytes_in"] > 0 and p["bytes_out"] > 0 for p in peers)

    assert wait_for(traded_both_ways, 30)
    for status in first:
        assert status["interactions"] in counts
        # At start-up a model can arrive before its sender's beacon: dropped, nothing else is.
        assert set(status["rejected"]) <= {"envelope:unknown_sender"}

    # Recommendations exclude what the user has seen, and move when new interactions arrive.
    user = node_users[0][0]
    seen = {item for u, item, _ in rows_of(ml100k, range(user, user + 1))}
    before = cluster[0].ask("recommend", user=user, k=10)["items"]
    assert len(before) == 10 and not seen & set(before)
    unseen_elsewhere = [i for i in range(ml100k.n_items) if i not in seen and i not in before]
    cluster[0].ask("ingest", rows=[[user, item] for item in unseen_elsewhere[:15]])
    after = cluster[0].ask("recommend", user=user, k=10)["items"]
    assert after != before and not (seen | set(unseen_elsewhere[:15])) & set(after)

    # kill -9 node 1 while it trains; it restarts from its checkpoint with every interaction.
    victim = cluster[1]
    assert wait_for(lambda: victim.ask("status")["training_steps"] > 0, 10)
    # ... and once a checkpoint holds merged models (a busy machine may take a while to write one).
    assert wait_for(lambda: (victim.ask("status")["checkpoints"]["version"] or 0) > 0, 60)
    assert victim.signal(signal.SIGKILL) == -signal.SIGKILL
    _, meta = load_checkpoint(victim.config.parent / CHECKPOINT_FILE)
    assert meta["version"] > 0
    survivors = (cluster[0], cluster[2])
    assert wait_for(lambda: all(alive_peers(d.ask("status")) == 1 for d in survivors), 10), (
        "the last will should mark the killed node dead at once"
    )
    victim.start()
    restarted = victim.wait_ready()
    assert restarted["interactions"] == counts[1]
    assert restarted["model_version"] >= meta["version"]
    assert restarted["training_steps"] >= meta["training_steps"]
    assert wait_for(lambda: all(alive_peers(d.ask("status")) == 2 for d in cluster), 30)
    assert wait_for(lambda: victim.ask("status")["updates_in"] > 0, 20)

    # The human status and peers views name every node.
    shown = gossiprec("status", "--config", str(cluster[0].config))
    assert shown.returncode == 0 and "peers: 2 alive, 0 suspect, 0 dead" in shown.stdout
    peers = gossiprec("peers", "--config", str(cluster[2].config))
    for daemon in cluster:
        assert daemon.ask("status")["node_id"][:12] in peers.stdout

    # SIGTERM: clean stop (exit 0), final checkpoint, peers see it leave at once.
    assert cluster[2].signal(signal.SIGTERM) == 0, cluster[2].output()
    assert "stopped cleanly" in cluster[2].output()
    assert wait_for(lambda: alive_peers(cluster[0].ask("status")) == 1, 20)


def test_a_bad_config_value_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    (config,) = init_nodes(tmp_path, "mqtt://127.0.0.1:1", 1)
    result = gossiprec("node", "run", "--config", str(config),
                       env={"GOSSIPREC_GOSSIP_CODEC": "zip"})  # fmt: skip
    assert result.returncode == 2
    assert "gossip.codec = 'zip'" in result.stderr and "must be one of" in result.stderr
    config.write_text(config.read_text().replace("n_items = 1682", "n_items = -3"))
    result = gossiprec("node", "run", "--config", str(config))
    assert result.returncode == 2 and "model.n_items = -3" in result.stderr


def test_start_up_problems_stop_with_exit_2_and_never_disturb_a_running_node(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    first_config, second_config = init_nodes(tmp_path, mosquitto.url, 2)
    first = Daemon(first_config)
    first.start()
    try:
        first.wait_ready()
        assert wait_for(lambda: first.ask("status")["broker"]["connected"], 30)
        twice = gossiprec("node", "run", "--config", str(first_config), env=FAST_ENV)
        assert twice.returncode == 2 and "another node already runs" in twice.stderr
        assert first.ask("status")["broker"]["connected"]  # not kicked off the broker
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
            busy = gossiprec("node", "run", "--config", str(second_config),
                             env={**FAST_ENV, "GOSSIPREC_METRICS_PORT": port})  # fmt: skip
        assert busy.returncode == 2 and "cannot start" in busy.stderr, busy.stderr
        a_file = tmp_path / "not-a-socket"
        a_file.write_text("keep me")
        blocked = gossiprec("node", "run", "--config", str(second_config),
                            env={**FAST_ENV, "GOSSIPREC_CONTROL_SOCKET": str(a_file)})  # fmt: skip
        assert blocked.returncode == 2 and "is not a socket" in blocked.stderr, blocked.stderr
        assert a_file.read_text() == "keep me"
        identity = str(second_config.parent)
        unusable = gossiprec("node", "run", "--config", str(second_config),
                             env={**FAST_ENV, "GOSSIPREC_NODE_IDENTITY_DIR": identity,
                                  "GOSSIPREC_NODE_DATA_DIR": str(a_file)})  # fmt: skip
        assert unusable.returncode == 2 and "node.data_dir" in unusable.stderr, unusable.stderr
    finally:
        first.stop()
