"""`gossiprec bench privacy`: what a curious peer learns, and what differential privacy costs.

Every run is the simulation `gossiprec sim` runs with the same flags (data, split, nodes and
seeds alike), with `--curious` honest-but-curious nodes guessing each sender's item set from the
updates they receive: first without differential privacy for each of `--codecs`, then with the
first codec at each of `--epsilons` (each node's budget, planned for every training round the
run can take). Rows: HR@10 and NDCG@10, the curious nodes' AUC and precision@10, epsilon spent.
With `--central`, a trusted-curator row per epsilon: the same mechanism on one model holding
every user (`sim.baselines.centralized_private`), the most any decentralized run can expect.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from gossiprec.cli.bench_attacks import simulate_tracked
from gossiprec.cli.sim import planned_rounds, prepare
from gossiprec.node.node import model_config
from gossiprec.node.privacy import epsilon_spent, noise_for
from gossiprec.sim.baselines import centralized_private
from gossiprec.sim.broker import any_broker
from gossiprec.sim.config import SimConfig
from gossiprec.sim.progress import Tracker
from gossiprec.sim.simulation import SimRun
from gossiprec.sim.split import LeaveOneOut, as_validation

CENTRAL = "central (trusted curator)"
HEADERS = ["codec", "epsilon", "spent", "delta", "HR@10", "vs no DP", "NDCG@10",
           "curious AUC", "precision@10"]  # fmt: skip


def sweep(args: argparse.Namespace, track: Tracker) -> list[dict[str, Any]]:
    _, split, groups, config = prepare(argparse.Namespace(**{**vars(args), "dp_epsilon": None}))
    if args.on == "valid":  # to choose settings: test is never looked at
        split = as_validation(split)
    rounds = planned_rounds(config.duration, config.node.train.period)
    plan: list[tuple[str, float | None]] = [(codec, None) for codec in args.codecs]
    private_codec = args.codecs[0] if args.codecs else config.node.gossip.codec
    plan += [(private_codec, epsilon) for epsilon in args.epsilons]
    rows: list[dict[str, Any]] = []
    with any_broker(args.broker, args.broker_protocol) as broker:
        for codec, epsilon in plan:
            changes: dict[str, Any] = {
                "gossip.codec": codec,
                "privacy.enabled": epsilon is not None,
            }
            if epsilon is not None:
                changes.update({"privacy.epsilon": epsilon, "privacy.rounds": rounds})
            run_config = dataclasses.replace(config, node=config.node.changed(changes))
            label = f"{codec}, " + ("no DP" if epsilon is None else f"epsilon {epsilon:g}")
            run = simulate_tracked(split, groups, run_config, broker, track, label)
            rows.append(_row(codec, epsilon, run_config, run))
    if args.central:
        rows += [_central_row(split, config, epsilon, rounds, track) for epsilon in args.epsilons]
    plain = {row["codec"]: row["hr10"] for row in rows if row["epsilon"] is None}
    for row in rows:
        # The curator is judged against the decentralized run without DP, as the nodes are.
        baseline = plain.get(private_codec if row["codec"] == CENTRAL else row["codec"])
        row["hr10_vs_no_dp"] = row["hr10"] / baseline if baseline else None
    return rows


def _row(codec: str, epsilon: float | None, config: SimConfig, run: SimRun) -> dict[str, Any]:
    assert run.final is not None, "a finished run has final metrics"
    return {
        "codec": codec,
        "epsilon": epsilon,
        "epsilon_spent": run.epsilon if epsilon is not None else None,
        "delta": config.node.privacy.delta if epsilon is not None else None,
        "clip": config.node.privacy.clip if epsilon is not None else None,
        "hr10": run.final.hr10,
        "ndcg10": run.final.ndcg10,
        "auc": run.inference_auc,
        "precision10": run.inference_precision10,
        "senders_observed": run.inference_senders,
        "nodes": run.nodes,
        "pace_highest": run.pace_highest,
        "wall_seconds": run.wall_seconds,
    }


def _central_row(split: LeaveOneOut, config: SimConfig, epsilon: float, rounds: int,
                 track: Tracker) -> dict[str, Any]:  # fmt: skip
    settings = config.node.privacy
    noise = noise_for(epsilon, settings.delta, rounds)
    result = centralized_private(split, model_config(config.node.model), clip=settings.clip,
                                 lr=settings.lr, noise_multiplier=noise, rounds=rounds,
                                 track=track)  # fmt: skip
    return {
        "codec": CENTRAL,
        "epsilon": epsilon,
        "epsilon_spent": epsilon_spent(noise, rounds, settings.delta),
        "delta": settings.delta,
        "clip": settings.clip,
        "hr10": result.metrics.hr10,
        "ndcg10": result.metrics.ndcg10,
        "auc": None,
        "precision10": None,
        "senders_observed": None,
        "nodes": 1,
        "pace_highest": None,
        "wall_seconds": result.seconds,
    }


def table(rows: list[dict[str, Any]]) -> list[list[object]]:
    def shown(value: float | None) -> object:
        return "-" if value is None else value

    return [[row["codec"], "no DP" if row["epsilon"] is None else row["epsilon"],
             shown(row["epsilon_spent"]), shown(row["delta"]), row["hr10"],
             shown(row["hr10_vs_no_dp"]), row["ndcg10"], shown(row["auc"]),
             shown(row["precision10"])] for row in rows]  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    private = [row for row in rows if row["epsilon"] is not None and row["codec"] != CENTRAL]
    central = [row for row in rows if row["codec"] == CENTRAL]
    codec = (private or rows)[0]["codec"]
    plain = next((r for r in rows if r["codec"] == codec and r["epsilon"] is None), None)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    epsilons = np.array([row["epsilon"] for row in private])
    for axis, key, label in ((axes[0], "hr10", "HR@10"),
                             (axes[1], "auc", "curious peer's AUC (0.5 = chance)")):  # fmt: skip
        if len(private):  # a log axis needs its range given: a row may have no AUC (NaN)
            axis.plot(
                epsilons, [row[key] or np.nan for row in private], "o-", label="gossip, DP per node"
            )
            axis.set_xscale("log", base=2)
            axis.set_xlim(epsilons.min() / 1.5, epsilons.max() * 1.5)
        if central and key == "hr10":
            axis.plot([row["epsilon"] for row in central], [row[key] for row in central], "s:",
                      label="central DP (trusted curator)")  # fmt: skip
        if plain is not None:
            axis.axhline(plain[key] or np.nan, color="grey", ls="--", label="no DP")
        axis.set_xlabel("epsilon (each node's budget)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[1].axhline(0.5, color="black", lw=0.8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
