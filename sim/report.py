"""What a simulation leaves behind: a JSON report, a PNG plot and the summary table rows."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from gossiprec.sim.baselines import BaselineResult
from gossiprec.sim.config import SimConfig
from gossiprec.sim.simulation import Point, SimRun


def megabytes_to_reach(points: list[Point], target: float) -> float | None:
    """Megabytes moved (all nodes) when HR@10 first reached `target`, or None if never."""
    return next((p.megabytes for p in points if p.hr10 >= target), None)


def late_join_summary(run: SimRun, central_hits: np.ndarray, tolerance: float = 0.02,
                      hold: int = 3) -> dict[str, Any] | None:  # fmt: skip
    """When the late joiners came within `tolerance` of the network and stayed there for `hold`
    evaluations in a row (a few late users are a noisy sample: one lucky point is not it).

    The late joiners' users are a different, small sample from the network's, and some users are
    easier than others, so each group's HR@10 is taken relative to the centralized model's HR@10
    on the same users: the late joiners have caught up when they get as close to centralized on
    their users as the network does on its own."""
    if not run.late:
        return None
    late_users = np.zeros(len(central_hits), dtype=bool)
    late_users[run.late_users] = True
    central_late = float(np.nanmean(central_hits[late_users]))
    central_network = float(np.nanmean(central_hits[~late_users]))
    close = [p.late_hr10 * central_network >= (1 - tolerance) * p.network_hr10 * central_late
             for p in run.late]  # fmt: skip
    reached = next((p for i, p in enumerate(run.late) if all(close[i : i + hold])
                    and len(close[i : i + hold]) == hold), None)  # fmt: skip
    return {
        "reached": reached is not None,
        "seconds_after_join": reached.seconds_after_join if reached else None,
        "merges_per_late_node": reached.merges_per_late_node if reached else None,
        "final_late_hr10": run.late[-1].late_hr10,
        "final_network_hr10": run.late[-1].network_hr10,
        "centralized_hr10_on_late_users": central_late,
        "centralized_hr10_on_network_users": central_network,
    }


def build_report(
    config: SimConfig, run: SimRun, baselines: list[BaselineResult], setup: dict[str, Any]
) -> dict[str, Any]:
    final = run.final
    assert final is not None, "a finished run has final metrics"
    by_name = {b.name: b for b in baselines}
    central = by_name["centralized BPR-MF"].metrics.hr10
    central_hits = by_name["centralized BPR-MF"].hits10
    assert central_hits is not None, "the centralized baseline keeps its per-user hits"
    to_95 = megabytes_to_reach(run.points, 0.95 * final.hr10)
    return {
        "setup": setup,
        "config": config.as_dict(),
        "gossip": {
            **final.as_dict(),
            "hr10_vs_centralized": final.hr10 / central if central else None,
            "megabytes_total": run.points[-1].megabytes,
            "megabytes_per_node": run.points[-1].megabytes / run.nodes,
            "megabytes_per_node_to_95pct_final_hr10": None if to_95 is None else to_95 / run.nodes,
            "wall_seconds": run.wall_seconds,
            "peak_rss_mb": run.peak_rss_mb,
            "nodes": run.nodes,
            "presence_shards": run.shards,
            "restarts": run.restarts,
            "dropped_messages": run.dropped_messages,
            "pace_highest": run.pace_highest,
            "pace_final": run.points[-1].pace,
            "rounds_waited": run.rounds_waited,
            "late_replies": run.late_replies,
            "rejected": run.rejected,
        },
        "attack": {
            "kind": config.attack,
            "attackers": config.attackers,
            "hostile_nodes": len(run.hostile),
            "defence": config.node.defence.enabled,
            "targets": run.targets,
            "exposure10": run.final_exposure,
            "honest_version": run.points[-1].version,
            "clipped": run.clipped,
            "quarantines": run.quarantines,
        },
        "privacy": {
            "curious_nodes": config.curious,
            "codec": config.node.gossip.codec,
            "senders_observed": run.inference_senders,
            "item_set_auc": run.inference_auc,
            "item_set_precision10": run.inference_precision10,
            "dp": config.node.privacy.enabled,
            "epsilon_spent": run.epsilon,
            "delta": config.node.privacy.delta,
            "epsilon_budget": config.node.privacy.epsilon,
        },
        "brokers": {
            "nodes_per_broker": run.brokers,
            "failovers": len(run.failover_seconds),
            "failover_seconds_median": _median(run.failover_seconds),
            "failover_seconds_max": max(run.failover_seconds, default=None),
        },
        "late_joiners": late_join_summary(run, central_hits),
        "baselines": [b.as_dict() for b in baselines],
        "series": [asdict(p) for p in run.points],
        "late_series": [asdict(p) for p in run.late],
    }


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def summary_rows(report: dict[str, Any]) -> list[list[object]]:
    gossip = report["gossip"]
    rows: list[list[object]] = [
        [
            "gossip BPR-MF",
            gossip["hr10"],
            gossip["ndcg10"],
            gossip["recall20"],
            gossip["ndcg20"],
            gossip["megabytes_per_node"],
            gossip["wall_seconds"],
        ],
    ]
    for b in report["baselines"]:
        rows.append(
            [b["name"], b["hr10"], b["ndcg10"], b["recall20"], b["ndcg20"], 0.0, b["seconds"]]
        )
    return rows


SUMMARY_HEADERS = ["model", "HR@10", "NDCG@10", "Recall@20", "NDCG@20", "MB/node", "seconds"]


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, png_path = folder / "report.json", folder / "report.png"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, png_path)
    return json_path, png_path


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["series"]
    baselines = {b["name"]: b for b in report["baselines"]}
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for axis, x_key, x_label in (
        (axes[0], "seconds", "seconds"),
        (axes[1], "megabytes", "megabytes moved (all nodes)"),
    ):
        xs = [p[x_key] for p in series]
        axis.plot(xs, [p["hr10"] for p in series], color="tab:blue", label="gossip HR@10")
        axis.plot(xs, [p["ndcg10"] for p in series], color="tab:orange", label="gossip NDCG@10")
        if report["attack"]["kind"]:
            axis.plot(xs, [p["exposure"] for p in series], color="tab:red",
                      label="target ER@10")  # fmt: skip
        for name, style in (("centralized BPR-MF", "--"), ("local-only BPR-MF", ":")):
            if name in baselines:
                short = name.split()[0]
                axis.axhline(
                    baselines[name]["hr10"],
                    color="tab:blue",
                    linestyle=style,
                    label=f"{short} HR@10",
                )
                axis.axhline(
                    baselines[name]["ndcg10"],
                    color="tab:orange",
                    linestyle=style,
                    label=f"{short} NDCG@10",
                )
        axis.set_xlabel(x_label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test metric (leave-one-out, 99 sampled negatives)")
    setup, codec = report["setup"], report["config"]["node"]["gossip"]["codec"]
    figure.suptitle(
        f"gossiprec sim: {setup['dataset']}, {report['gossip']['nodes']} nodes, "
        f"{setup['users_per_node']} user(s)/node, codec {codec}"
    )
    axes[1].legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
