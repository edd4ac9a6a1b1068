"""`gossiprec bench coldstart` (cold items and new users, sim/coldstart.py; centralized),
`bench coldstart-sim` (the same cases in the decentralized simulation, next to the centralized
models on the same split) and `bench identity` (how items get their rows,
sim/identity_study.py), on ML-100K."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gossiprec.node.recommender import BPRConfig
from gossiprec.sim.catalog import load_dataset
from gossiprec.sim.coldstart import cold_item_table, new_user_table
from gossiprec.sim.progress import Tracker

HEADERS = ["setting", "model", "HR@10", "NDCG@10", "cases"]


def measure(args: argparse.Namespace, track: Tracker) -> list[dict[str, Any]]:
    dataset = load_dataset("ml-100k", args.data, args.seed)
    config = BPRConfig(seed=args.seed)
    rows, epochs = cold_item_table(dataset, config, seed=args.seed, track=track,
                                   title_words=args.title_words)  # fmt: skip
    if not args.skip_new_users:
        rows += new_user_table(dataset, config, epochs, seed=args.seed, track=track,
                               title_words=args.title_words)  # fmt: skip
    return [{**row.as_dict(), "epochs": epochs} for row in rows]


# The node model kinds the simulation compares, by the names the tables use.
SIM_MODELS = {"BPR-MF": "bpr", "hybrid": "hybrid", "content-only": "content"}


def measure_sim(args: argparse.Namespace, track: Tracker) -> list[dict[str, Any]]:
    """One simulated run per node model kind on the cold-start study's split (10% of items
    cold, three 10% groups of users cut to 1, 3 and 5 interactions), and the centralized models
    on the same split for reference."""
    import dataclasses

    import numpy as np

    from gossiprec.cli.bench_attacks import simulate_tracked
    from gossiprec.cli.sim import prepare
    from gossiprec.sim.baselines import choose_epochs
    from gossiprec.sim.broker import any_broker
    from gossiprec.sim.coldstart import (
        centralized_scorers,
        cold_study,
        features_of,
        node_popularity,
        study_rows,
    )
    from gossiprec.sim.host import SimItems
    from gossiprec.sim.partition import partition_users
    from gossiprec.sim.split import restrict

    dataset, _, _, config = prepare(args)
    study = cold_study(dataset, args.seed)
    groups = partition_users(study.split, args.users_per_node, alpha=args.alpha,
                             item_genres=dataset.item_genres, seed=args.seed)  # fmt: skip
    if args.nodes is not None:
        groups = groups[: max(1, args.nodes)]
    users = np.concatenate(groups)
    model = BPRConfig(seed=args.seed)
    epochs = args.central_epochs
    if epochs is None:
        with track("centralized: choose epochs (BPR-MF, validation)", 30) as bar:
            epochs = choose_epochs(study.split, model, 30, 4, bar)
    scorers = centralized_scorers(study, features_of(dataset), model, epochs, track)
    rows = [{**row.as_dict(), "where": "centralized", "epochs": epochs}
            for name, score in scorers.items()
            for row in study_rows(study, name, score, users, args.seed)]  # fmt: skip
    features = tuple(tuple(names) for names in dataset.item_features())
    items = SimItems(features, study.warm_items())
    where = f"gossip, {len(groups)} nodes"
    rows += [{**row.as_dict(), "model": f"popularity ({where})", "where": where, "epochs": None}
             for row in study_rows(study, "popularity", node_popularity(study.split, groups),
                                   users, args.seed)]  # fmt: skip
    with any_broker(args.broker, args.broker_protocol) as broker:
        for name, kind in SIM_MODELS.items():
            run_config = dataclasses.replace(config, node=config.node.changed({"model.kind": kind}))
            run = simulate_tracked(restrict(study.split, users), groups, run_config, broker, track,
                                   f"simulation: {name}", items)  # fmt: skip
            score = run.final_scores
            assert score is not None, "a finished run has its final scores"
            rows += [{**row.as_dict(), "model": f"{name} ({where})", "where": where,
                      "epochs": None, "pace_highest": run.pace_highest}
                     for row in study_rows(study, name, score, users, args.seed)]  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> list[list[object]]:
    return [[row["setting"], row["model"], row["hr10"], row["ndcg10"], row["cases"]]
            for row in rows]  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = list(dict.fromkeys(row["setting"] for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    figure, axis = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(models)
    for index, model in enumerate(models):
        values = [next((r["hr10"] for r in rows if r["setting"] == s and r["model"] == model),
                       np.nan) for s in settings]  # fmt: skip
        axis.bar(np.arange(len(settings)) + (index - (len(models) - 1) / 2) * width, values,
                 width, label=model)  # fmt: skip
    axis.axhline(0.10, color="black", lw=0.8, ls=":", label="chance (1 in 10 of 100)")
    axis.set_xticks(np.arange(len(settings)), settings)
    axis.set_ylabel("HR@10 (99 sampled negatives)")
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def identity_plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact = [row for row in rows if row["name"].startswith("signed")]
    hashed = [row for row in rows if not row["name"].startswith("signed")]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot([r["update_bytes"] / 1e3 for r in hashed], [r["hr10"] for r in hashed], "o-",
              label="hashed ids (1x, 2x, 4x, 8x rows)")  # fmt: skip
    for row in exact:
        axis.plot(row["update_bytes"] / 1e3, row["hr10"], "*", ms=14, label=row["name"])
    axis.set_xlabel("bytes of one float16 update (KB)")
    axis.set_ylabel("HR@10")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
