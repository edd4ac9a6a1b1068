"""`gossiprec data fetch` and `gossiprec baseline`: the datasets and the references."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gossiprec.cli.output import Commands, emit_json, help_handler, print_table
from gossiprec.sim.catalog import DATASETS


def register(commands: Commands) -> None:
    baseline = commands.add_parser(
        "baseline",
        help="train and score the centralized, local-only and popularity references",
        description="Leave-one-out evaluation (99 sampled negatives for HR@10/NDCG@10, full "
        "ranking for Recall@20/NDCG@20) of the references a decentralized run is judged by.",
    )
    add_dataset_arguments(baseline)
    baseline.add_argument("--seed", type=int, default=0)
    baseline.add_argument("--json", action="store_true", help="print JSON instead of a table")
    baseline.set_defaults(handler=run_baseline)

    data = commands.add_parser("data", help="obtain and check datasets")
    sub = data.add_subparsers(title="data commands", metavar="COMMAND")
    fetch = sub.add_parser(
        "fetch",
        help="obtain a dataset into the user cache",
        description="ml-100k: taken out of the recbole==1.2.1 wheel from the package index "
        "(GroupLens' licence forbids redistributing it), then verified.",
    )
    fetch.add_argument("name", choices=["ml-100k"])
    fetch.add_argument("--to", type=Path, help="target folder (default: user cache)")
    fetch.add_argument("--wheel", type=Path, help="use an already downloaded recbole wheel")
    fetch.add_argument("--json", action="store_true")
    fetch.set_defaults(handler=run_data_fetch)
    data.set_defaults(handler=help_handler(data))


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="ml-100k")
    parser.add_argument("--data", type=Path, help="ml-100k zip or folder (default: user cache)")


def run_baseline(args: argparse.Namespace) -> int:
    from gossiprec.cli.progress import bars
    from gossiprec.sim.baselines import run_all
    from gossiprec.sim.catalog import load_dataset
    from gossiprec.sim.split import leave_one_out

    dataset = load_dataset(args.dataset, args.data, args.seed)
    split = leave_one_out(dataset, seed=args.seed)
    results = run_all(split, track=bars(sys.stderr.isatty() or not args.json))
    if args.json:
        emit_json(
            {"dataset": dataset.name, "seed": args.seed, "results": [r.as_dict() for r in results]}
        )
        return 0
    headers = ["model", "HR@10", "NDCG@10", "Recall@20", "NDCG@20", "seconds"]
    rows = [
        [r.name, r.metrics.hr10, r.metrics.ndcg10, r.metrics.recall20, r.metrics.ndcg20, r.seconds]
        for r in results
    ]
    print(
        f"{dataset.name}: {len(dataset)} interactions, {dataset.n_users} users, "
        f"{dataset.n_items} items; leave-one-out, seed {args.seed}"
    )
    print_table(headers, rows)
    return 0


def run_data_fetch(args: argparse.Namespace) -> int:
    from gossiprec.sim.movielens import fetch_ml100k, load_ml100k

    path = fetch_ml100k(args.to, wheel=args.wheel)
    dataset = load_ml100k(path)
    summary = {
        "path": str(path),
        "interactions": len(dataset),
        "users": dataset.n_users,
        "items": dataset.n_items,
        "sha256": dataset.content_sha256(),
    }
    if args.json:
        emit_json(summary)
    else:
        print(
            f"ml-100k verified and stored at {path} "
            f"({len(dataset)} ratings, {dataset.n_users} users, {dataset.n_items} items)"
        )
    return 0
