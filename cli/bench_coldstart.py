"""`gossiprec bench coldstart` (cold items and new users, sim/coldstart.py) and `bench identity`
(how items get their rows, sim/identity_study.py): centralized, on ML-100K."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gossiprec.node.recommender import BPRConfig
from gossiprec.sim.catalog import load_dataset
from gossiprec.sim.coldstart import MODELS, cold_item_table, new_user_table
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


def table(rows: list[dict[str, Any]]) -> list[list[object]]:
    return [[row["setting"], row["model"], row["hr10"], row["ndcg10"], row["cases"]]
            for row in rows]  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = list(dict.fromkeys(row["setting"] for row in rows))
    figure, axis = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(MODELS)
    for index, model in enumerate(MODELS):
        values = [next((r["hr10"] for r in rows if r["setting"] == s and r["model"] == model),
                       np.nan) for s in settings]  # fmt: skip
        axis.bar(np.arange(len(settings)) + (index - (len(MODELS) - 1) / 2) * width, values,
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
