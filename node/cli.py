"""`gossiprec`: one program, one subcommand per task. `sim` is imported lazily, inside commands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crypto.errors import CryptoError
from node import cli_bench, cli_control, cli_identity, cli_node, cli_sim
from node.config import ConfigError
from node.control import ControlError
from node.interactions_csv import IngestError
from node.output import emit_json, help_handler, table

if TYPE_CHECKING:
    from sim.dataset import Dataset

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A command was asked for something it cannot do; the message says what to change."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except (UsageError, CryptoError, cli_identity.IdentityError, ConfigError,
            IngestError) as error:  # fmt: skip
        print(f"gossiprec: error: {error}", file=sys.stderr)
        return 2
    except ControlError as error:  # the node is down or refused: exit 1, as healthchecks expect
        print(f"gossiprec: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gossiprec",
        description="Private, decentralized recommendation over gossip and MQTT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_baseline(commands)
    _add_data(commands)
    cli_identity.register(commands)
    cli_bench.register(commands)
    cli_node.register(commands)
    cli_control.register(commands)
    cli_sim.register(commands)
    return parser


def _add_baseline(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "baseline",
        help="train and score the centralized, local-only and popularity references",
        description="Leave-one-out evaluation (99 sampled negatives for HR@10/NDCG@10, full "
        "ranking for Recall@20/NDCG@20) of the references a decentralized run is judged by.",
    )
    parser.add_argument("--dataset", choices=["ml-100k", "synthetic"], default="ml-100k")
    parser.add_argument("--data", type=Path, help="ml-100k zip or folder (default: user cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run_baseline)


def run_baseline(args: argparse.Namespace) -> int:
    from sim.baselines import run_all
    from sim.split import leave_one_out

    dataset = load_dataset(args.dataset, args.data, args.seed)
    split = leave_one_out(dataset, seed=args.seed)
    results = run_all(split, show_progress=sys.stderr.isatty() or not args.json)
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
    print(table(headers, rows))
    return 0


def load_dataset(name: str, path: Path | None, seed: int) -> Dataset:
    from sim.movielens import DatasetError, load_ml100k
    from sim.synthetic import SyntheticConfig, generate

    if name == "synthetic":
        return generate(SyntheticConfig(seed=seed))
    try:
        return load_ml100k(path)
    except DatasetError as error:
        raise UsageError(str(error)) from error


def _add_data(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("data", help="obtain and check datasets")
    sub = parser.add_subparsers(title="data commands", metavar="COMMAND")
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
    parser.set_defaults(handler=help_handler(parser))


def run_data_fetch(args: argparse.Namespace) -> int:
    from sim.movielens import DatasetError, fetch_ml100k, load_ml100k

    try:
        path = fetch_ml100k(args.to, wheel=args.wheel)
        dataset = load_ml100k(path)
    except DatasetError as error:
        raise UsageError(str(error)) from error
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


if __name__ == "__main__":
    sys.exit(main())
