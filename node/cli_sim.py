"""`gossiprec sim`: the multi-node simulation, and `gossiprec sim docker`: a Compose project.

`sim` is imported lazily, inside the handlers (node/ never depends on sim/ at import time).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any, TypeAlias

from node.output import emit_json, table
from node.progress import Progress
from node.recommender import GOSSIP_L2

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(commands: Commands) -> None:
    sim = commands.add_parser(
        "sim",
        help="N real nodes on one broker: quality vs centralized, bytes, churn, faults",
        description="Runs N real nodes (the daemon's Node class, each with its own keys, store "
        "and MQTT connection) in this process (dealt over --workers processes for large runs) on "
        "a real dataset split across them, next to "
        "the centralized and local-only references trained in the same run. Writes "
        "report.json and report.png to --out. Broker: --broker, else mosquitto from PATH on "
        "a free loopback port, else an embedded amqtt.",
    )
    sim.add_argument("--dataset", choices=["ml-100k", "synthetic"], default="ml-100k")
    sim.add_argument("--data", type=Path, help="ml-100k zip or folder (default: user cache)")
    sim.add_argument(
        "--users-per-node",
        type=int,
        default=30,
        help="1 = one device per user (943 nodes on ML-100K)",
    )
    sim.add_argument("--nodes", type=int, help="use only the first N nodes (default: all)")
    sim.add_argument(
        "--alpha",
        type=float,
        help="non-IID: Dirichlet concentration of each node's genre mix "
        "(small = one taste per node); default: users dealt at random",
    )
    sim.add_argument("--duration", type=float, default=90.0, help="seconds of gossip")
    sim.add_argument("--period", type=float, default=1.0, help="seconds between gossip rounds")
    sim.add_argument("--fanout", type=int, default=1)
    sim.add_argument(
        "--codec",
        default="float16",
        choices=["float32", "float16", "int8", "sparse-float16", "sparse-int8"],
    )
    sim.add_argument("--epochs", type=int, default=2, help="local epochs per training round")
    sim.add_argument(
        "--train-period",
        type=float,
        default=0.0,
        help="seconds between training rounds (default: --period); several merges per round "
        "let the nodes' models agree more before each step",
    )
    sim.add_argument("--lr", type=float, default=160.0, help="node SGD learning rate (items)")
    sim.add_argument("--user-lr", type=float, default=0.03, help="Adam learning rate (users)")
    sim.add_argument(
        "--l2", type=float, default=GOSSIP_L2, help="L2 penalty on the nodes' embeddings"
    )
    sim.add_argument(
        "--lr-half-life",
        type=float,
        default=0.0,
        help="model versions (merges) after which --lr halves (0 = constant)",
    )
    sim.add_argument("--clip", type=float, default=0.05, help="largest item gradient norm per step")
    sim.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="chance per node per minute of going offline for --downtime s",
    )
    sim.add_argument("--downtime", type=float, default=10.0)
    sim.add_argument("--drop", type=float, default=0.0, help="share of model messages lost")
    sim.add_argument("--late-joiners", type=int, default=0, help="nodes that join halfway through")
    sim.add_argument("--eval-every", type=float, default=5.0, help="seconds between evaluations")
    sim.add_argument("--workers", type=int, default=None,
                     help="processes to deal the nodes over (default: one per core, up to 4, "
                          "from 200 nodes on; else 1)")  # fmt: skip
    sim.add_argument("--broker", help="mqtt://HOST:PORT (default: start one here)")
    sim.add_argument(
        "--out", type=Path, default=Path("sim-report"), help="where report.json and report.png go"
    )
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.set_defaults(handler=run_sim)
    sub = sim.add_subparsers(title="sim commands", metavar="COMMAND")
    docker = sub.add_parser(
        "docker",
        help="write a Docker Compose project: broker + N node containers",
        description="Writes DIR/compose.yaml, a mosquitto with one login per node and ACLs "
        "(a node publishes only its own presence and into inboxes, reads only its own inbox), "
        "and N node folders (keys, certificate, node.toml, data shard). Then: cd DIR && "
        "docker compose up.",
    )
    docker.add_argument("--nodes", type=int, required=True)
    docker.add_argument("--out", type=Path, required=True)
    docker.add_argument("--dataset", choices=["ml-100k", "synthetic"], default="ml-100k")
    docker.add_argument("--data", type=Path, help="ml-100k zip or folder (default: user cache)")
    docker.add_argument("--seed", type=int, default=0)
    docker.add_argument("--json", action="store_true")
    docker.set_defaults(handler=run_docker)


def run_sim(args: argparse.Namespace) -> int:
    import numpy as np

    from node.cli import UsageError, load_dataset
    from sim.baselines import centralized, local_only, popularity
    from sim.broker import BrokerError, any_broker
    from sim.partition import partition_users
    from sim.report import SUMMARY_HEADERS, build_report, summary_rows, write_report
    from sim.simulation import SimConfig, default_workers, simulate
    from sim.split import leave_one_out, restrict

    try:
        config = SimConfig(
            duration=args.duration,
            period=args.period,
            fanout=args.fanout,
            codec=args.codec,
            epochs=args.epochs,
            lr=args.lr,
            user_lr=args.user_lr,
            l2=args.l2,
            train_period=args.train_period,
            lr_half_life=args.lr_half_life,
            clip=args.clip,
            optimizer=args.optimizer,
            seed=args.seed,
            churn=args.churn,
            downtime=args.downtime,
            drop=args.drop,
            late_joiners=args.late_joiners,
            eval_every=args.eval_every,
            workers=1 if args.workers is None else args.workers,
        )
        dataset = load_dataset(args.dataset, args.data, args.seed)
        split = leave_one_out(dataset, seed=args.seed)
        groups = partition_users(
            split,
            args.users_per_node,
            alpha=args.alpha,
            item_genres=dataset.item_genres,
            seed=args.seed,
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    if args.nodes is not None:
        groups = groups[: max(1, args.nodes)]
        split = restrict(split, np.concatenate(groups))
    if args.workers is None:
        config = dataclasses.replace(config, workers=default_workers(len(groups)))
    show = not args.json or sys.stderr.isatty()
    baselines = [
        centralized(split, show_progress=show),
        local_only(split, groups=groups, show_progress=show),
        popularity(split),
    ]
    try:
        with (
            any_broker(args.broker) as broker,
            Progress(int(config.duration), f"gossip: {len(groups)} nodes", enabled=show) as bar,
        ):
            done = [0]

            def tick(seconds: float, point: Any) -> None:
                step = int(seconds) - done[0]
                note = f"HR@10 {point.hr10:.3f}, {point.megabytes:.0f} MB" if point else ""
                if step > 0 or note:
                    bar.advance(max(0, step), note=note)
                    done[0] += max(0, step)

            run = asyncio.run(simulate(split, groups, config, broker, on_tick=tick))
    except BrokerError as error:
        raise UsageError(str(error)) from error
    setup = {
        "dataset": dataset.name,
        "users_per_node": args.users_per_node,
        "alpha": args.alpha,
        "broker": broker.description,
        "evaluated_users": len(split.evaluated_users()),
    }
    report = build_report(config, run, baselines, setup)
    json_path, png_path = write_report(report, args.out)
    if args.json:
        emit_json(report)
        return 0
    gossip = report["gossip"]
    print(
        f"{dataset.name}: {gossip['nodes']} nodes x {args.users_per_node} user(s) in "
        f"{config.workers} process(es), {config.duration:.0f} s of gossip, codec {config.codec}, "
        f"broker {broker.description}"
    )
    print(table(SUMMARY_HEADERS, summary_rows(report)))
    to_95 = gossip["megabytes_per_node_to_95pct_final_hr10"]
    print(
        f"\ngossip HR@10 = {gossip['hr10_vs_centralized']:.3f} x centralized; "
        f"{'-' if to_95 is None else f'{to_95:.1f}'} MB/node to 95% of its final HR@10; "
        f"wall {gossip['wall_seconds']:.0f} s, peak memory {gossip['peak_rss_mb']:.0f} MB"
    )
    if gossip["pace_highest"] > 1:
        print(
            f"this machine could not keep up: updates were shed, so the periods were stretched "
            f"up to {gossip['pace_highest']:.2f}x (at the end {gossip['pace_final']:.2f}x) "
            f"the requested --period {config.period:g} s"
        )
    if report["late_joiners"]:
        late = report["late_joiners"]
        print(
            f"late joiners: HR@10 {late['final_late_hr10']:.3f} vs the network's "
            f"{late['final_network_hr10']:.3f} (centralized on the same users: "
            f"{late['centralized_hr10_on_late_users']:.3f} vs "
            f"{late['centralized_hr10_on_network_users']:.3f}); "
            + (
                f"within 2% of the network, relative to centralized, after "
                f"{late['merges_per_late_node']:.0f} merges ({late['seconds_after_join']:.0f} s)"
                if late["reached"]
                else "not within 2% of the network relative to centralized"
            )
        )
    print(f"report: {json_path}  plot: {png_path}")
    return 0


def run_docker(args: argparse.Namespace) -> int:
    from node.cli import load_dataset
    from sim.compose import write_compose_project

    dataset = load_dataset(args.dataset, args.data, args.seed)
    result = write_compose_project(args.out, args.nodes, dataset, seed=args.seed)
    if args.json:
        emit_json(result)
    else:
        print(
            f"wrote {result['compose']} ({args.nodes} nodes + mosquitto). Next:\n"
            f"  cd {args.out} && docker compose up --build"
        )
    return 0
