"""`gossiprec bench attacks`: compromised members against the defence, in real simulations.

Every run is the simulation `gossiprec sim` runs with the same flags (data, split, nodes and
seeds alike): once without attackers with the defence on and off, then for each attack kind
without the defence and with it. Quality is read on the users of the nodes that are honest in
the attack runs, in every run, so the rows compare like with like; ER@10 is the share of those
users with a promotion target in their top 10.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from gossiprec.cli.sim import prepare
from gossiprec.node.types import IntArray
from gossiprec.sim.attacks import hostile_seats
from gossiprec.sim.broker import BrokerAddress, any_broker
from gossiprec.sim.config import SimConfig
from gossiprec.sim.host import SimItems
from gossiprec.sim.metrics import hit_rate, ndcg
from gossiprec.sim.progress import Tracker
from gossiprec.sim.simulation import SimRun, simulate
from gossiprec.sim.split import LeaveOneOut, as_validation

HEADERS = ["attack", "defence", "honest HR@10", "vs no attack", "NDCG@10", "target ER@10",
           "honest version", "clipped", "quarantines"]  # fmt: skip


def compare(args: argparse.Namespace, kinds: list[str], track: Tracker) -> list[dict[str, Any]]:
    _, split, groups, config = prepare(argparse.Namespace(**{**vars(args), "attackers": 0.0}))
    if args.on == "valid":  # to choose the defence's settings: test is never looked at
        split = as_validation(split)
    hostile = set(hostile_seats(len(groups), args.attackers, config.seed))
    honest = np.concatenate([g for i, g in enumerate(groups) if i not in hostile])
    plan: list[tuple[str | None, bool]] = [(None, True), (None, False)]
    plan += [(kind, defence) for kind in kinds for defence in (False, True)]
    rows: list[dict[str, Any]] = []
    with any_broker(args.broker, args.broker_protocol) as broker:
        for kind, defence in plan:
            run_config = dataclasses.replace(
                config, attack=kind, attackers=args.attackers if kind else 0.0,
                node=config.node.changed({"defence.enabled": defence}),
            )  # fmt: skip
            label = f"{kind or 'no attack'}, defence {'on' if defence else 'off'}"
            run = simulate_tracked(split, groups, run_config, broker, track, label)
            rows.append(_row(kind, run_config, run, honest))
    calm = {row["defence"]: row["hr10"] for row in rows if row["attack"] is None}
    for row in rows:  # against the run without attackers with the same defence setting
        row["hr10_vs_no_attack"] = row["hr10"] / calm[row["defence"]]
    return rows


def simulate_tracked(split: LeaveOneOut, groups: list[IntArray], config: SimConfig,
                     broker: BrokerAddress, track: Tracker, label: str,
                     items: SimItems | None = None) -> SimRun:  # fmt: skip
    """One simulation under a progress bar labelled `label`."""
    with track(label, int(config.duration)) as bar:
        done = 0

        def tick(seconds: float, _point: Any) -> None:
            nonlocal done
            bar.advance(max(0, int(seconds) - done))
            done = max(done, int(seconds))

        return asyncio.run(simulate(split, groups, config, broker, on_tick=tick, items=items))


def _row(kind: str | None, config: SimConfig, run: SimRun, honest: np.ndarray) -> dict[str, Any]:
    ranks = run.final_ranks[honest]
    ranks = ranks[ranks >= 0]
    return {
        "attack": kind,
        "defence": config.node.defence.enabled,
        "hr10": hit_rate(ranks, 10),
        "ndcg10": ndcg(ranks, 10),
        "exposure10": run.final_exposure,
        "honest_version": run.points[-1].version,
        "clipped": run.clipped,
        "quarantines": run.quarantines,
        "hostile_nodes": len(run.hostile),
        "nodes": run.nodes,
        "targets": run.targets,
        "pace_highest": run.pace_highest,
    }


def table(rows: list[dict[str, Any]]) -> list[list[object]]:
    return [[row["attack"] or "none", "on" if row["defence"] else "off", row["hr10"],
             row["hr10_vs_no_attack"], row["ndcg10"], row["exposure10"], row["honest_version"],
             row["clipped"], row["quarantines"]] for row in rows]  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [row["attack"] for row in rows if row["attack"] and not row["defence"]]
    calm = next(row for row in rows if row["attack"] is None and row["defence"])
    by = {(row["attack"], row["defence"]): row for row in rows}
    bars = (("no attack", None), ("attack, no defence", False), ("attack, defence", True))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(kinds))
    for axis, key, label in ((axes[0], "hr10", "honest HR@10"),
                             (axes[1], "exposure10", "target ER@10")):  # fmt: skip
        for offset, (name, defence) in enumerate(bars):
            values = [(calm if defence is None else by[(k, defence)])[key] for k in kinds]
            axis.bar(x + (offset - 1) * 0.27, values, 0.27, label=name)
        axis.set_xticks(x, kinds, rotation=20)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
