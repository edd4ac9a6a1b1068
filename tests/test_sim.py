"""`gossiprec sim` on real ML-100K and a real broker: learning, faults, partitions, report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from gossiprec.cli.main import main
from gossiprec.sim.baselines import local_only
from gossiprec.sim.broker import BrokerAddress, EmbeddedBroker, Mosquitto
from gossiprec.sim.coldstart import cold_study
from gossiprec.sim.config import SimConfig, node_template
from gossiprec.sim.dataset import Dataset
from gossiprec.sim.errors import WorkerError
from gossiprec.sim.host import HostSpec, SimItems
from gossiprec.sim.pacing import MOST, Pacer
from gossiprec.sim.partition import genre_skew, partition_users
from gossiprec.sim.report import late_join_summary
from gossiprec.sim.simulation import LateJoin, SimRun, presence_shards, simulate
from gossiprec.sim.split import LeaveOneOut, restrict
from gossiprec.sim.workers import WorkerHost

pytestmark = [pytest.mark.slow]


def small(split: LeaveOneOut, nodes: int, users_per_node: int) -> tuple[LeaveOneOut, list]:  # type: ignore[type-arg]
    groups = partition_users(split, users_per_node, seed=0)[:nodes]
    return restrict(split, np.concatenate(groups)), groups


def run(split: LeaveOneOut, groups: list, broker: BrokerAddress, *, defence: bool = True,  # type: ignore[type-arg]
        **options: float | str) -> SimRun:  # fmt: skip
    node = node_template(split.n_items).changed({"gossip.period": 0.5, "train.period": 0.5,
                                                 "defence.enabled": defence})  # fmt: skip
    config = SimConfig(node, **{"duration": 15.0, "eval_every": 3.0, **options})  # type: ignore[arg-type]
    return asyncio.run(simulate(split, groups, config, broker))


@pytest.mark.mosquitto
def test_a_small_simulation_learns_well_above_local_only(
    ml100k_split: LeaveOneOut, mosquitto: Mosquitto
) -> None:
    split, groups = small(ml100k_split, nodes=8, users_per_node=20)
    alone = local_only(split, groups=groups).metrics.hr10
    result = run(split, groups, BrokerAddress("127.0.0.1", mosquitto.port, 5, "test"),
                 late_joiners=2)  # fmt: skip
    assert result.final is not None and result.final.users == 160
    assert result.final.hr10 > alone + 0.1, (result.final, alone)
    assert result.points[-1].megabytes > result.points[0].megabytes
    assert result.rejected.keys() <= {"envelope:unknown_sender"}
    # Late joiners came in halfway, merged with the network and learned from it.
    assert result.late and result.late[-1].merges_per_late_node >= 2
    assert result.late[-1].late_hr10 > alone


@pytest.mark.mosquitto
def test_churn_and_message_loss_slow_but_do_not_stop_learning(
    ml100k_split: LeaveOneOut, mosquitto: Mosquitto
) -> None:
    split, groups = small(ml100k_split, nodes=6, users_per_node=20)
    alone = local_only(split, groups=groups).metrics.hr10
    result = run(split, groups, BrokerAddress("127.0.0.1", mosquitto.port, 5, "test"),
                 churn=12.0, downtime=2.0, drop=0.2)  # fmt: skip
    assert result.restarts >= 2 and result.dropped_messages > 0
    assert result.final is not None and result.final.hr10 > alone + 0.05, (result.final, alone)


@pytest.mark.mosquitto
def test_a_compromised_node_over_mqtt_wrecks_an_undefended_network_not_a_defended_one(
    ml100k_split: LeaveOneOut, mosquitto: Mosquitto
) -> None:
    # One of eight nodes, with a valid certificate, replies with weight 1 and huge values.
    split, groups = small(ml100k_split, nodes=8, users_per_node=20)
    broker = BrokerAddress("127.0.0.1", mosquitto.port, 5, "test")
    undefended = run(split, groups, broker, defence=False, attackers=0.125, attack="replacement")
    defended = run(split, groups, broker, attackers=0.125, attack="replacement")
    alone = local_only(split, groups=groups).metrics.hr10
    assert len(defended.hostile) == 1 and defended.final is not None
    assert defended.final.users == 140  # the honest nodes' users only
    assert undefended.final is not None and undefended.final.hr10 < alone, undefended.final
    assert defended.final.hr10 > alone + 0.1, (defended.final, alone)
    assert defended.clipped > 0 and defended.quarantines >= 1


@pytest.mark.mosquitto
def test_nodes_dealt_over_two_processes_gossip_with_each_other(
    ml100k_split: LeaveOneOut, mosquitto: Mosquitto
) -> None:
    # Two nodes, one per process: every merge crosses processes, and the child's node is stopped
    # and restarted (churn) through the pipe.
    split, groups = small(ml100k_split, nodes=2, users_per_node=40)
    alone = local_only(split, groups=groups).metrics.hr10
    result = run(split, groups, BrokerAddress("127.0.0.1", mosquitto.port, 5, "test"),
                 workers=2, churn=20.0, downtime=1.0)  # fmt: skip
    # About 30 rounds, less the churned node's downtime and the peers' discovery: one busy CI
    # run saw 4.5 merges per node. The HR@10 below shows the merges carried the other's model.
    assert result.points[-1].merges_per_node >= 3 and result.restarts >= 1
    assert result.final is not None and result.final.users == 80
    assert result.final.hr10 > alone + 0.05, (result.final, alone)


def test_a_failing_call_in_a_worker_process_is_raised_in_the_parent(tmp_path: Path) -> None:
    spec = HostSpec(
        SimConfig(node_template(10)),
        BrokerAddress("127.0.0.1", 1, 4, "none"),
        10,
        1,
        5.0,
        tmp_path,
        [],
    )

    async def call_and_close() -> None:
        host = WorkerHost(spec)
        try:
            assert await host.public_keys() == {}
            with pytest.raises(WorkerError, match="start failed in a worker process: KeyError: 7"):
                await host.start(7)
            assert (await host.stats()).seats == {}  # still answering after the failure
        finally:
            await host.close()
        assert not host.alive

    asyncio.run(call_and_close())


def test_the_embedded_broker_carries_a_simulation(ml100k_split: LeaveOneOut) -> None:
    split, groups = small(ml100k_split, nodes=4, users_per_node=10)
    with EmbeddedBroker() as broker:  # amqtt speaks MQTT 3.1.1 only
        result = run(split, groups, BrokerAddress("127.0.0.1", broker.port, 4, "amqtt"),
                     duration=8.0)  # fmt: skip
    assert result.points[-1].merges_per_node >= 2 and result.final is not None


def test_genre_partitions_are_skewed_by_alpha_and_cover_every_user_once(
    ml100k: Dataset, ml100k_split: LeaveOneOut
) -> None:
    skews = {}
    for alpha in (0.05, 100.0):
        groups = partition_users(ml100k_split, 30, alpha=alpha, item_genres=ml100k.item_genres)
        users = np.concatenate(groups)
        assert len(users) == len(np.unique(users)) == ml100k.n_users
        assert len(groups) <= -(-ml100k.n_users // 30)
        skews[alpha] = genre_skew(groups, ml100k_split, ml100k.item_genres)
    assert skews[0.05] > skews[100.0] + 0.15, skews
    one_each = partition_users(ml100k_split, 1)
    assert len(one_each) == ml100k.n_users and all(len(g) == 1 for g in one_each)


def test_late_joiners_are_judged_relative_to_centralized_on_their_own_users() -> None:
    # Users 0-9 joined late and are harder: centralized hits 40% of them, 80% of the others.
    central = np.array([1.0] * 4 + [0.0] * 6 + [1.0] * 80 + [0.0] * 20)

    def at(seconds: float, late: float) -> LateJoin:
        return LateJoin(seconds, seconds / 10, late, 0.6)

    run = SimRun(late=[at(10, 0.2), at(20, 0.29), at(30, 0.3), at(40, 0.3), at(50, 0.31)],
                 late_users=list(range(10)))  # fmt: skip
    summary = late_join_summary(run, central)
    assert summary is not None and summary["centralized_hr10_on_late_users"] == 0.4
    # 0.3 / 0.4 = 0.75 of centralized, as the network's 0.6 / 0.8: caught up, held from 30 s on.
    assert summary["reached"] and summary["seconds_after_join"] == 30
    assert summary["merges_per_late_node"] == 3
    # Judged by the network's raw HR@10 instead (equal difficulty), they never catch up.
    even = late_join_summary(run, np.full(100, 0.8))
    assert even is not None and not even["reached"]


def test_the_pacer_stretches_periods_while_nodes_fall_behind_and_eases_back() -> None:
    pacer = Pacer()
    assert not pacer.update(5.0, behind=500, merged=1000)  # decisions every 10 s
    assert pacer.update(10.0, behind=50, merged=1000) and pacer.factor == 1.25  # 5% behind
    assert not pacer.update(20.0, behind=55, merged=2000)  # 0.5% of this window's merges: hold
    assert pacer.update(30.0, behind=57, merged=3000) and 1.0 < pacer.factor < 1.25  # 0.2%: ease
    for second in range(40, 400, 10):  # a machine far too slow: stretched, but only so far
        pacer.update(second, behind=second * 1000, merged=second * 10)
    assert pacer.factor == pacer.highest == MOST
    for second in range(400, 1400, 10):
        pacer.update(second, behind=399_000, merged=second * 10)
    assert pacer.factor == 1.0 and pacer.highest == MOST


def test_presence_is_sharded_only_where_views_would_grow_large() -> None:
    assert presence_shards(32) == 1 and presence_shards(64) == 8  # 64 * 4 / 8 = 32 in view
    assert presence_shards(943) == 256  # 943 * 9 / 256 = 33 peers in view


@pytest.mark.mosquitto
def test_the_cli_writes_the_report_table_json_and_plot(
    tmp_path: Path, ml100k: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code = main(["sim", "--nodes", "4", "--users-per-node", "10", "--duration", "6",
                 "--period", "0.5", "--eval-every", "2", "--out", str(out),
                 "--attackers", "0.25", "--attack", "promotion", "--dp-epsilon", "4"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    # Every node trained with user-level DP within its budget; the curious node judged the rest.
    privacy = json.loads((out / "report.json").read_text())["privacy"]
    assert privacy["dp"] and 0 < privacy["epsilon_spent"] <= 4.0 and privacy["delta"] == 1e-5
    assert privacy["curious_nodes"] == 1
    if privacy["item_set_auc"] is not None:  # it heard a sender twice (most runs)
        assert 0 <= privacy["item_set_auc"] <= 1
        assert "curious node(s) told each sender's items" in printed
    assert "gossip BPR-MF" in printed and "centralized BPR-MF" in printed
    assert "1 compromised node(s) (promotion), defence on" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["gossip"]["nodes"] == 4 and len(report["series"]) >= 3
    attack = report["attack"]
    assert attack["hostile_nodes"] == 1 and len(attack["targets"]) == 5 and attack["defence"]
    assert report["gossip"]["users"] == 30  # the three honest nodes' users
    assert {b["name"] for b in report["baselines"]} >= {"centralized BPR-MF", "local-only BPR-MF"}
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.mosquitto
def test_bench_privacy_writes_a_row_per_codec_and_epsilon_with_its_plot(
    tmp_path: Path, ml100k: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "privacy"
    code = main(["bench", "privacy", "--nodes", "3", "--users-per-node", "5", "--duration", "6",
                 "--period", "0.5", "--eval-every", "2", "--codecs", "sparse-int8",
                 "--epsilons", "4", "--out", str(out), "--json"])  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["codec"], r["epsilon"]) for r in rows] == [("sparse-int8", None), ("sparse-int8", 4)]
    assert rows[0]["epsilon_spent"] is None and 0 < rows[1]["epsilon_spent"] <= 4
    # The curious node heard from its peers (twice or more) in at least one run; an AUC it
    # gives is a share.
    assert any(r["senders_observed"] >= 1 for r in rows)
    assert all(r["auc"] is None or 0 <= r["auc"] <= 1 for r in rows)
    assert json.loads((out / "privacy.json").read_text()) == rows
    assert (out / "privacy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.mosquitto
def test_hybrid_nodes_never_train_cold_items_and_place_them_by_features_once_added(
    ml100k: Dataset, mosquitto: Mosquitto
) -> None:
    study = cold_study(ml100k)
    split, groups = small(study.split, nodes=3, users_per_node=10)
    features = tuple(tuple(names) for names in ml100k.item_features())
    items = SimItems(features, study.warm_items())
    node = node_template(split.n_items).changed({"gossip.period": 0.5, "train.period": 0.5,
                                                 "model.kind": "hybrid"})  # fmt: skip
    config = SimConfig(node, duration=6.0, eval_every=3.0)
    broker = BrokerAddress("127.0.0.1", mosquitto.port, 5, "test")
    result = asyncio.run(simulate(split, groups, config, broker, items=items))
    assert result.final_scores is not None and result.points[-1].merges_per_node >= 1
    users = np.concatenate(groups)[:5]

    def scores(rows: list[int]) -> np.ndarray:
        assert result.final_scores is not None
        return np.asarray(result.final_scores(users, np.tile(rows, (len(users), 1))))

    def twins(rows: np.ndarray) -> list[int]:
        """Two of these items with the same features."""
        seen: dict[tuple[str, ...], int] = {}
        for row in rows.tolist():
            if features[row] in seen:
                return [seen[features[row]], row]
            seen[features[row]] = row
        raise AssertionError("no two items share their features")

    # A cold item is its features only: never a negative, its id embedding never moved...
    cold = scores(twins(study.items.cold))
    assert np.array_equal(cold[:, 0], cold[:, 1])
    warm = scores(twins(items.live))  # ...unlike warm items, which trained
    assert not np.array_equal(warm[:, 0], warm[:, 1])
    # ...and its features reached every node: cold items are told apart (not one score for all).
    assert len(np.unique(scores(study.items.cold.tolist())[0])) > 10


@pytest.mark.mosquitto
def test_bench_coldstart_sim_rows_cover_every_case_centralized_and_in_the_simulation(
    tmp_path: Path, ml100k: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "coldstart"
    code = main(["bench", "coldstart-sim", "--nodes", "2", "--users-per-node", "10",
                 "--duration", "4", "--period", "0.5", "--central-epochs", "1", "--out", str(out),
                 "--json"])  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    settings = {"cold items", "warm items", "new users (k=1)", "new users (k=3)",
                "new users (k=5)"}  # fmt: skip
    central = ("popularity", "BPR-MF", "hybrid", "content-only")
    models = {*central, *(f"{name} (gossip, 2 nodes)" for name in central)}
    assert {(r["setting"], r["model"]) for r in rows} == {(s, m) for s in settings for m in models}
    cold = {r["model"]: r for r in rows if r["setting"] == "cold items"}
    # The same cold cases for every model: those of the run's 20 users.
    assert len({r["cases"] for r in cold.values()}) == 1 and cold["hybrid"]["cases"] > 0
    assert all(0 <= r["hr10"] <= 1 for r in rows)
    assert (out / "coldstart-sim.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
