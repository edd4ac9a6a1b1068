"""`gossiprec sim`: the multi-node simulation, and `gossiprec sim docker`: a Compose project.

The flags that tune the nodes (--period, --lr, ...) write into the simulation's node template
(gossiprec.sim.config), a whole node configuration: a flag left out keeps the template's value.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gossiprec.cli.data import add_dataset_arguments
from gossiprec.cli.errors import UsageError
from gossiprec.cli.output import Commands, emit_json, print_table
from gossiprec.gossip.codec import CODECS
from gossiprec.node.config import OPTIMIZERS, NodeConfig
from gossiprec.node.errors import ConfigError
from gossiprec.sim.attacks import ATTACKS
from gossiprec.sim.compose import BASE_IMAGE, BROKER_IMAGE
from gossiprec.sim.compose_cluster import RABBITMQ_IMAGE
from gossiprec.sim.config import template_default

if TYPE_CHECKING:
    from gossiprec.node.types import IntArray
    from gossiprec.sim.config import SimConfig
    from gossiprec.sim.dataset import Dataset
    from gossiprec.sim.split import LeaveOneOut

# Flags that write into the node template: flag, key, type, help.
NODE_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--period", "gossip.period", float, "seconds between gossip rounds"),
    ("--fanout", "gossip.fanout", int, "peers per gossip round"),
    ("--codec", "gossip.codec", str, "how model updates are encoded"),
    ("--epochs", "train.epochs", int, "local epochs per training round"),
    ("--train-period", "train.period", float,
     "seconds between training rounds (default: --period); several merges per round let the "
     "nodes' models agree more before each step"),
    ("--lr", "model.lr", float, "node SGD learning rate (items), per 1,024 interactions"),
    ("--user-lr", "model.user_lr", float, "Adam learning rate (users)"),
    ("--l2", "model.l2", float, "L2 penalty on the nodes' embeddings"),
    ("--lr-half-life", "model.lr_half_life", float,
     "model versions (merges) after which --lr halves (0 = constant)"),
    ("--clip", "model.clip", float, "largest item gradient norm per step (0 = none)"),
    ("--optimizer", "model.optimizer", str, "optimizer of the item parameters"),
    ("--dim", "model.dim", int, "embedding size (the shared model's width)"),
    ("--defence-radius", "defence.radius", float, "clip radius, x the median recent difference"),
    ("--strike-at", "defence.strike_at", float, "radii a difference spans to be a strike"),
    ("--quarantine-at", "defence.quarantine_at", float, "strikes that quarantine a peer"),
    ("--dp-epsilon", "privacy.epsilon", float,
     "user-level differential privacy: each node's budget, planned for the run's training "
     "rounds (turns privacy on)"),
    ("--dp-delta", "privacy.delta", float, "the budget's delta"),
    ("--dp-clip", "privacy.clip", float, "largest gradient one user adds per round (L2)"),
    ("--dp-lr", "privacy.lr", float, "SGD step of a private round"),
)  # fmt: skip
CHOICES = {"gossip.codec": CODECS, "model.optimizer": OPTIMIZERS}


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
    add_run_arguments(sim)
    sim.add_argument(
        "--out", type=Path, default=Path("sim-report"), help="where report.json and report.png go"
    )
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.set_defaults(handler=run_sim)
    sub = sim.add_subparsers(title="sim commands", metavar="COMMAND")
    docker = sub.add_parser(
        "docker",
        help="write a Docker Compose project: broker(s) + N node containers",
        description="Writes DIR/compose.yaml, a mosquitto with one login per node and ACLs "
        "(a node publishes only its own presence and into inboxes, reads only its own inbox) "
        "or, with --brokers K, a K-node RabbitMQ cluster with one login per node and topic "
        "permissions, and N node folders (keys, certificate, node.toml, data shard). Then: "
        "cd DIR && docker compose up --build.",
    )
    docker.add_argument("--nodes", type=int, required=True)
    docker.add_argument("--out", type=Path, required=True)
    add_dataset_arguments(docker)
    docker.add_argument("--seed", type=int, default=0)
    docker.add_argument("--base-image", default=BASE_IMAGE, metavar="IMAGE",
                        help="the node image's base: any image with python3 >= 3.11 and venv "
                        "(default %(default)s)")  # fmt: skip
    docker.add_argument(
        "--broker-image",
        default=BROKER_IMAGE,
        metavar="IMAGE",
        help="any image with mosquitto on its PATH (default %(default)s)",
    )
    docker.add_argument("--brokers", type=int, default=1,
                        help="1: one mosquitto; K > 1: a cluster of K RabbitMQ nodes (MQTT "
                        "plugin), the nodes spread over them and failing over")  # fmt: skip
    docker.add_argument("--rabbitmq-image", default=RABBITMQ_IMAGE, metavar="IMAGE",
                        help="the cluster's image: any with rabbitmq-server and its MQTT plugin "
                        "(default %(default)s)")  # fmt: skip
    docker.add_argument("--wheelhouse", type=Path, metavar="DIR",
                        help="build offline from these wheels (CPU torch and every requirement: "
                        "pip wheel --wheel-dir DIR torch==2.13.0 setuptools .)")  # fmt: skip
    docker.add_argument("--json", action="store_true")
    docker.set_defaults(handler=run_docker)


def add_run_arguments(parser: argparse.ArgumentParser, *, attack: bool = True) -> None:
    """What a simulation runs: data, nodes, their settings, faults and (`attack`) attackers; the
    share of attackers and the promotion targets always."""
    add_dataset_arguments(parser)
    parser.add_argument(
        "--users-per-node",
        type=int,
        default=30,
        help="1 = one device per user (943 nodes on ML-100K)",
    )
    parser.add_argument("--nodes", type=int, help="use only the first N nodes (default: all)")
    parser.add_argument(
        "--alpha",
        type=float,
        help="non-IID: Dirichlet concentration of each node's genre mix "
        "(small = one taste per node); default: users dealt at random",
    )
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of gossip")
    for flag, key, kind, text in NODE_FLAGS:
        default = "--period" if key == "train.period" else template_default(key)
        parser.add_argument(
            flag,
            type=kind,
            choices=CHOICES.get(key),
            help=f"{text} [node key {key}; default {default}]",
        )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="chance per node per minute of going offline for --downtime s",
    )
    parser.add_argument("--downtime", type=float, default=10.0)
    parser.add_argument("--drop", type=float, default=0.0, help="share of model messages lost")
    parser.add_argument(
        "--late-joiners", type=int, default=0, help="nodes that join halfway through"
    )
    parser.add_argument("--eval-every", type=float, default=5.0, help="seconds between evaluations")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes to deal the nodes over (default: one per core, up to 4, "
        "from 200 nodes on; else 1)",
    )
    parser.add_argument(
        "--attackers",
        type=float,
        default=0.0,
        help="share of the nodes that are compromised (valid certificates, "
        "modified protocol); needs --attack",
    )
    parser.add_argument(
        "--targets",
        type=int,
        default=5,
        help="cold items a promotion attack pushes (ER@10 in every run)",
    )
    parser.add_argument(
        "--curious",
        type=int,
        default=1,
        help="honest nodes that also guess, from what they receive, which items each "
        "sender's users touched (the report's item-set AUC)",
    )
    parser.add_argument("--broker", help="mqtt://HOST:PORT, or a cluster's brokers "
                        "mqtt://A:PORT,mqtt://B:PORT,... to spread the nodes over "
                        "(default: start one here)")  # fmt: skip
    parser.add_argument(
        "--broker-protocol",
        type=int,
        choices=(4, 5),
        help="MQTT version for --broker: 4 = 3.1.1 (RabbitMQ 3.x), 5 (default)",
    )
    if attack:
        parser.add_argument("--attack", choices=ATTACKS, help="what the compromised nodes do")
        parser.add_argument("--no-defence", action="store_true",
                            help="trust every admitted peer (defence.enabled false)")  # fmt: skip


def node_template(args: argparse.Namespace, n_items: int) -> NodeConfig:
    """The simulation's node template with every node flag given written into it."""
    from gossiprec.sim.config import node_template

    template = node_template(n_items)
    given = {key: (flag, getattr(args, flag[2:].replace("-", "_")))
             for flag, key, _, _ in NODE_FLAGS}  # fmt: skip
    if given["train.period"][1] is None and given["gossip.period"][1] is not None:
        given["train.period"] = given["gossip.period"]
    if getattr(args, "no_defence", False):
        given["defence.enabled"] = ("--no-defence", False)
    if args.dp_epsilon is not None:
        # The budget is planned for every training round the run can take (fewer when paced).
        period = given["train.period"][1] or template.train.period
        given["privacy.enabled"] = ("--dp-epsilon", True)
        given["privacy.rounds"] = ("--duration", planned_rounds(args.duration, period))
    for key, (flag, value) in given.items():
        if value is None:
            continue
        try:
            template = template.changed({key: value})
        except ConfigError as error:
            raise UsageError(f"{flag} {value}: {str(error).split('. Fix')[0]}") from None
    return template


def planned_rounds(duration: float, train_period: float) -> int:
    """The training rounds a run of `duration` can take: a DP budget is planned for them all."""
    return max(1, math.ceil(duration / train_period))


def prepare(args: argparse.Namespace) -> tuple[Dataset, LeaveOneOut, list[IntArray], SimConfig]:
    """The dataset, its split, the users of each node and the run's configuration."""
    import numpy as np

    from gossiprec.sim.catalog import load_dataset
    from gossiprec.sim.config import SimConfig
    from gossiprec.sim.partition import partition_users
    from gossiprec.sim.simulation import default_workers
    from gossiprec.sim.split import leave_one_out, restrict

    dataset = load_dataset(args.dataset, args.data, args.seed)
    config = SimConfig(
        node=node_template(args, dataset.n_items),
        duration=args.duration,
        seed=args.seed,
        churn=args.churn,
        downtime=args.downtime,
        drop=args.drop,
        late_joiners=args.late_joiners,
        eval_every=args.eval_every,
        workers=1 if args.workers is None else args.workers,
        attackers=args.attackers,
        attack=getattr(args, "attack", None),
        targets=args.targets,
        curious=args.curious,
    )
    split = leave_one_out(dataset, seed=args.seed)
    groups = partition_users(
        split,
        args.users_per_node,
        alpha=args.alpha,
        item_genres=dataset.item_genres,
        seed=args.seed,
    )
    if args.nodes is not None:
        groups = groups[: max(1, args.nodes)]
        split = restrict(split, np.concatenate(groups))
    if args.workers is None:
        config = dataclasses.replace(config, workers=default_workers(len(groups)))
    return dataset, split, groups, config


def run_sim(args: argparse.Namespace) -> int:
    from gossiprec.cli.progress import bars
    from gossiprec.sim.baselines import centralized, local_only, popularity
    from gossiprec.sim.broker import any_broker
    from gossiprec.sim.report import SUMMARY_HEADERS, build_report, summary_rows, write_report
    from gossiprec.sim.simulation import simulate

    dataset, split, groups, config = prepare(args)
    track = bars(not args.json or sys.stderr.isatty())
    baselines = [
        centralized(split, track=track),
        local_only(split, groups=groups, track=track),
        popularity(split),
    ]
    with (
        any_broker(args.broker, args.broker_protocol) as broker,
        track(f"gossip: {len(groups)} nodes", int(config.duration)) as bar,
    ):
        done = [0]

        def tick(seconds: float, point: Any) -> None:
            step = int(seconds) - done[0]
            note = f"HR@10 {point.hr10:.3f}, {point.megabytes:.0f} MB" if point else ""
            if step > 0 or note:
                bar.advance(max(0, step), note=note)
                done[0] += max(0, step)

        run = asyncio.run(simulate(split, groups, config, broker, on_tick=tick))
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
        f"{config.workers} process(es), {config.duration:.0f} s of gossip, "
        f"codec {config.node.gossip.codec}, "
        f"broker {broker.description}"
    )
    print_table(SUMMARY_HEADERS, summary_rows(report))
    to_95 = gossip["megabytes_per_node_to_95pct_final_hr10"]
    print(
        f"\ngossip HR@10 = {gossip['hr10_vs_centralized']:.3f} x centralized; "
        f"{'-' if to_95 is None else f'{to_95:.1f}'} MB/node to 95% of its final HR@10; "
        f"wall {gossip['wall_seconds']:.0f} s, peak memory {gossip['peak_rss_mb']:.0f} MB"
    )
    if gossip["pace_highest"] > 1:
        print(
            f"this machine could not keep up: replies came late or updates were shed, so the "
            f"periods were stretched up to {gossip['pace_highest']:.2f}x (at the end "
            f"{gossip['pace_final']:.2f}x) "
            f"the requested --period {config.node.gossip.period:g} s"
        )
    attack = report["attack"]
    if attack["kind"]:
        print(
            f"{attack['hostile_nodes']} compromised node(s) ({attack['kind']}), defence "
            f"{'on' if attack['defence'] else 'off'}: honest HR@10 {gossip['hr10']:.3f}, "
            f"ER@10 of {len(attack['targets'])} cold target items {attack['exposure10']:.3f}, "
            f"honest model version {attack['honest_version']:.0f}; honest nodes cut "
            f"{attack['clipped']} messages and hold {attack['quarantines']} quarantine(s)"
        )
    privacy = report["privacy"]
    if privacy["dp"]:
        print(
            f"differential privacy: each node spent at most epsilon {privacy['epsilon_spent']:.3g}"
            f" (budget {privacy['epsilon_budget']:g}) at delta {privacy['delta']:g}"
        )
    if privacy["item_set_auc"] is not None:
        print(
            f"{privacy['curious_nodes']} curious node(s) told each sender's items from the rest "
            f"with AUC {privacy['item_set_auc']:.3f}, precision@10 "
            f"{privacy['item_set_precision10']:.3f} ({privacy['senders_observed']} senders; "
            f"0.5 = no better than chance)"
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
    from gossiprec.sim.catalog import load_dataset
    from gossiprec.sim.compose import Images, write_compose_project

    dataset = load_dataset(args.dataset, args.data, args.seed)
    images = Images(args.base_image, args.broker_image, args.wheelhouse, args.rabbitmq_image)
    result = write_compose_project(args.out, args.nodes, dataset, seed=args.seed, images=images,
                                   brokers=args.brokers)  # fmt: skip
    if args.json:
        emit_json(result)
    else:
        print(
            f"wrote {result['compose']} ({args.nodes} nodes + "
            f"{'mosquitto' if args.brokers == 1 else f'{args.brokers} RabbitMQ nodes'}). Next:\n"
            f"  cd {args.out} && docker compose up --build"
        )
    return 0
