"""`gossiprec bench …`: benchmarks that print numbers (never asserted in tests)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gossiprec.cli.errors import UsageError
from gossiprec.cli.output import Commands, emit_json, help_handler, print_table
from gossiprec.cli.sim import add_run_arguments
from gossiprec.gossip.codec import CODECS
from gossiprec.sim.attacks import ATTACKS

# The study's settings; each flag left out keeps StudyConfig's default (gossiprec.sim).
STUDY_FLAGS = (
    ("--rounds", int),
    ("--merges", int),
    ("--lr", float),
    ("--lr-half-life", float),
    ("--user-lr", float),
    ("--l2", float),
    ("--eval-every", int),
    ("--seed", int),
)


def register(commands: Commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print numbers")
    sub = bench.add_subparsers(title="benchmarks", metavar="BENCHMARK")
    envelope = sub.add_parser(
        "envelope",
        help="seal+open of a model update against its raw AEAD",
        description="Median time of seal+open on an established session (certificate, clock, "
        "prekey and replay-window checks, one AEAD) for a rows x cols float32 payload, against "
        "raw encrypt+decrypt of the same bytes with the same AEAD in the same run, for "
        "AES-256-GCM and ChaCha20-Poly1305 (`aead`: the one this machine's sessions use); and "
        "apart, what opening a session costs (signature, two X25519, HKDF).",
    )
    envelope.add_argument("--rows", type=int, default=1_682)
    envelope.add_argument("--cols", type=int, default=32)
    envelope.add_argument("--repeats", type=int, default=200)
    envelope.add_argument("--json", action="store_true")
    envelope.set_defaults(handler=run_envelope)
    capacity = sub.add_parser(
        "capacity",
        help="brokers a network needs, from measured `bench gossip --json` outputs",
        description="Capacity on paper: for 1k to 1M devices at three settings, the model "
        "bytes/s and beacon deliveries/s through the brokers and how many brokers of each "
        "measured kind that takes (single-broker equivalents), and how many nodes one carries.",
    )
    capacity.add_argument("--measured", nargs="+", required=True, metavar="NAME=FILE",
                          help="a broker's `gossiprec bench gossip --json` output, e.g. "
                          "mosquitto=mosquitto.json rabbitmq=rabbitmq.json")  # fmt: skip
    capacity.add_argument("--json", action="store_true")
    capacity.set_defaults(handler=run_capacity)
    gossip = sub.add_parser(
        "gossip",
        help="full gossip path over MQTT against raw aiomqtt, and bytes per codec",
        description="Messages/s of encode+seal+publish+deliver+open+decode for a 215 KB model "
        "update against raw aiomqtt publish/receive of the same size, on one broker "
        "(mosquitto started on a free port unless --broker is given): a warm-up not counted, "
        "then alternating rounds, compared by their medians; then the sealed bytes "
        "of one pairwise exchange for each codec.",
    )
    gossip.add_argument("--broker", help="mqtt://HOST:PORT (default: a private mosquitto)")
    gossip.add_argument(
        "--protocol",
        type=int,
        choices=(4, 5),
        default=5,
        help="MQTT version: 4 = 3.1.1 (RabbitMQ 3.x), 5 (default)",
    )
    gossip.add_argument("--messages", type=int, default=200, help="per round and side")
    gossip.add_argument(
        "--rounds", type=int, default=5, help="alternating raw and full rounds, by their medians"
    )
    gossip.add_argument("--json", action="store_true")
    gossip.set_defaults(handler=run_gossip)
    convergence = sub.add_parser(
        "convergence",
        help="gossip rounds per node to reach the mean, by network size",
        description="Virtual time on the in-memory path: every node starts with a random "
        "vector; counts rounds per node until all are within --target of the true mean.",
    )
    convergence.add_argument("--nodes", type=int, nargs="+", default=[16, 64, 256, 1024])
    convergence.add_argument("--strategy", choices=["push-sum", "pairwise"], default="push-sum")
    convergence.add_argument("--target", type=float, default=1e-4)
    convergence.add_argument("--drop", type=float, default=0.0, help="message drop rate")
    convergence.add_argument("--json", action="store_true")
    convergence.set_defaults(handler=run_convergence)
    status = sub.add_parser(
        "status",
        help="control API latency while a node trains",
        description="Two daemons (separate processes, private mosquitto) each hold half of "
        "ML-100K and train without pause; times whole `status` requests to one of them.",
    )
    status.add_argument("--seconds", type=float, default=20.0)
    status.add_argument("--rate", type=float, default=10.0, help="requests per second")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=run_status)
    study = sub.add_parser(
        "one-user",
        help="learning dynamics of one-user nodes in virtual time (no crypto, no MQTT)",
        description="Every ML-100K user a node, all as rows of one tensor: per round one BPR "
        "step on each node's own interactions (items SGD, user Adam), then --merges random "
        "pairwise averagings (0 = the exact mean). HR@10 of each user by their own node's "
        "model, on validation (training on train only) unless --on test.",
    )
    study.add_argument("--data", type=Path, help="ml-100k zip or folder (default: user cache)")
    for flag, kind in STUDY_FLAGS:
        study.add_argument(flag, type=kind, help="default: the study's (see --json output)")
    study.add_argument("--on", choices=["valid", "test"], default="valid")
    study.add_argument("--json", action="store_true")
    study.set_defaults(handler=run_one_user)
    fuzzing = sub.add_parser(
        "fuzz",
        help="every parser of outside bytes against mutated and random inputs",
        description="Envelope open, codec decode, beacons, revocation lists, control requests, "
        "config files and CSV ingest, each fed mutations of valid inputs, random bytes and "
        "random msgpack values. Counts crashes (any error but the documented one), hangs "
        "(one input over a second) and wrong accepts per parser.",
    )
    fuzzing.add_argument("--inputs", type=int, default=1_000_000, help="in all, over the parsers")
    fuzzing.add_argument("--seed", type=int, default=0)
    fuzzing.add_argument("--json", action="store_true")
    fuzzing.set_defaults(handler=run_fuzz)
    attacks = sub.add_parser(
        "attacks",
        help="compromised nodes against the defence: a table and a plot",
        description="Runs the simulation `gossiprec sim` would run with the same flags: without "
        "attackers (defence on, then off), then each --kinds attack by --attackers of the nodes "
        "without the defence and with it. Prints honest HR@10 and NDCG@10 (on the users of the "
        "nodes honest in the attack runs, in every run), the promotion targets' ER@10, the "
        "honest model version, and the messages the defence cut; writes attacks.json and "
        "attacks.png to --out.",
    )
    add_run_arguments(attacks, attack=False)
    attacks.add_argument("--kinds", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    attacks.add_argument("--on", choices=["test", "valid"], default="test",
                         help="valid: nodes train on the train split only and are scored on "
                              "validation (to choose settings)")  # fmt: skip
    attacks.add_argument("--out", type=Path, default=Path("attack-report"))
    attacks.add_argument("--json", action="store_true")
    attacks.set_defaults(handler=run_attacks, attackers=0.1)
    privacy = sub.add_parser(
        "privacy",
        help="a curious peer against the codecs and differential privacy: a table and a plot",
        description="Runs the simulation `gossiprec sim` would run with the same flags, with "
        "--curious honest-but-curious nodes guessing which items each sender's users touched: "
        "without differential privacy for each of --codecs, then with the first codec at each "
        "of --epsilons. Prints HR@10, NDCG@10, the curious nodes' AUC and precision@10 and the "
        "epsilon each node spent (with --central, also a trusted curator's model at each "
        "epsilon); writes privacy.json and privacy.png to --out.",
    )
    add_run_arguments(privacy, attack=False)
    privacy.add_argument("--codecs", nargs="*", choices=CODECS, default=["float16"],
                         help="runs without DP, one per codec (none: only the runs with DP, on "
                              "--codec)")  # fmt: skip
    privacy.add_argument("--epsilons", nargs="*", type=float, default=[1.0, 2.0, 4.0, 8.0])
    privacy.add_argument("--central", action="store_true",
                         help="also one model on every user's data with the same mechanism, "
                              "clip, step and rounds, at each of --epsilons (a trusted curator: "
                              "the bound for any decentralized run)")  # fmt: skip
    privacy.add_argument("--on", choices=["test", "valid"], default="test",
                         help="valid: nodes train on the train split only and are scored on "
                              "validation (to choose settings)")  # fmt: skip
    privacy.add_argument("--out", type=Path, default=Path("privacy-report"))
    privacy.add_argument("--json", action="store_true")
    privacy.set_defaults(handler=run_privacy)
    coldstart = sub.add_parser(
        "coldstart",
        help="cold items and new users on ML-100K: popularity, BPR-MF, hybrid, content-only",
        description="Centralized, on ML-100K: a random 10%% of items lose all their "
        "interactions and each interaction with one is ranked among 99 untouched cold items "
        "(ties broken at random: chance is 0.10); warm items are scored as usual with warm "
        "negatives. Then 10%% of users keep only their first 1, 3 or 5 interactions. Writes "
        "coldstart.json and coldstart.png to --out.",
    )
    coldstart.add_argument("--data", type=Path, help="ML-100K folder or zip (default: cache)")
    coldstart.add_argument("--seed", type=int, default=0)
    coldstart.add_argument("--title-words", action="store_true",
                           help="add each title's words to the items' features")  # fmt: skip
    coldstart.add_argument("--skip-new-users", action="store_true")
    coldstart.add_argument("--out", type=Path, default=Path("coldstart-report"))
    coldstart.add_argument("--json", action="store_true")
    coldstart.set_defaults(handler=run_coldstart)
    coldstart_sim = sub.add_parser(
        "coldstart-sim",
        help="cold items and new users in the simulation (BPR-MF, hybrid and content-only "
        "nodes) and centralized on the same split",
        description="The cold-start cases of `bench coldstart` in one split (10%% of items "
        "cold; three disjoint 10%% groups of users keep their first 1, 3 or 5 interactions), "
        "then one `gossiprec sim` run (same flags) per node kind: BPR-MF, hybrid, content-only. "
        "The nodes know the warm items' features while they train; the cold items reach them "
        "with their features at the end, through the daemon's add-items path, before the final "
        "scores. Popularity in the network is each node's own count. Centralized popularity, "
        "BPR-MF, hybrid and content-only on the same split for reference. Writes "
        "coldstart-sim.json and coldstart-sim.png to --out.",
    )
    add_run_arguments(coldstart_sim, attack=False)
    coldstart_sim.add_argument("--central-epochs", type=int,
                               help="the centralized models' epochs (default: chosen on "
                               "validation, as `bench coldstart` does)")  # fmt: skip
    coldstart_sim.add_argument("--out", type=Path, default=Path("coldstart-sim-report"))
    coldstart_sim.add_argument("--json", action="store_true")
    coldstart_sim.set_defaults(handler=run_coldstart_sim)
    identity = sub.add_parser(
        "identity",
        help="item ids: the signed catalogue against hashing into 1x-8x rows (HR@10, bytes)",
        description="Centralized BPR-MF on ML-100K with its items in exact catalogue rows, or "
        "hashed by their ids into 1, 2, 4 and 8 times as many rows: HR@10, NDCG@10, the share "
        "of items sharing a row, bytes of one float16 update, bytes of the signed catalogue. "
        "Writes identity.json and identity.png to --out.",
    )
    identity.add_argument("--data", type=Path, help="ML-100K folder or zip (default: cache)")
    identity.add_argument("--out", type=Path, default=Path("identity-report"))
    identity.add_argument("--json", action="store_true")
    identity.set_defaults(handler=run_identity)
    bench.set_defaults(handler=help_handler(bench))


def run_envelope(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_envelope import bench_envelope

    return _show_measures(bench_envelope(args.rows, args.cols, args.repeats), args.json)


def run_gossip(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_gossip import bench_gossip

    result = bench_gossip(args.broker, args.messages, args.protocol, args.rounds)
    if args.json:
        emit_json(result)
        return 0
    codecs: dict[str, int] = result.pop("exchange_bytes_by_codec")  # type: ignore[assignment]
    print_table(["measure", "value"], [[k, v] for k, v in result.items()])
    print()
    rows = sorted(codecs.items(), key=lambda kv: kv[1])
    print_table(["codec", "bytes per exchange"], rows)
    return 0


def run_capacity(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_capacity import capacity

    measured = {}
    for pair in args.measured:
        name, _, path = pair.partition("=")
        try:
            measured[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"--measured {pair}: {error}. Fix: NAME=FILE, FILE from "
                             "`gossiprec bench gossip --json`.") from error  # fmt: skip
    result = capacity(measured)
    if args.json:
        emit_json(result)
        return 0
    headers = list(result["rows"][0])
    print_table(headers, [[_rounded(row[h]) for h in headers] for row in result["rows"]])
    print()
    names = list(measured)
    print_table(["setting", *(f"nodes per {n}" for n in names)],
                [[label, *(carries[n] for n in names)]
                 for label, carries in result["nodes_per_broker"].items()])  # fmt: skip
    return 0


def _rounded(value: object) -> object:
    return f"{value:,.1f}" if isinstance(value, float) else value


def run_convergence(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_convergence import rounds_to_mean

    results = [rounds_to_mean(n, args.strategy, args.target, drop=args.drop) for n in args.nodes]
    if args.json:
        emit_json(results)
        return 0
    headers = ["nodes", "strategy", "drop", "reached", "rounds_per_node", "error"]
    print_table(headers, [[r[h] for h in headers] for r in results])
    return 0


def run_status(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_status import bench_status

    return _show_measures(bench_status(args.seconds, args.rate), args.json)


def run_one_user(args: argparse.Namespace) -> int:
    from gossiprec.cli.progress import bars
    from gossiprec.sim.movielens import load_ml100k
    from gossiprec.sim.one_user_study import StudyConfig, run_study
    from gossiprec.sim.split import leave_one_out

    names = [flag[2:].replace("-", "_") for flag, _ in STUDY_FLAGS]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    config = StudyConfig(on=args.on, **given)
    split = leave_one_out(load_ml100k(args.data), seed=config.seed)
    with bars(not args.json)("one-user nodes", config.rounds) as bar:
        done = 0

        def advance(round_: int, hr10: float) -> None:
            nonlocal done
            bar.advance(round_ - done, note=f"HR@10 {hr10:.3f}")
            done = round_

        points = run_study(split, config, advance)
    if args.json:
        points_json = [{"round": r, "hr10": h} for r, h in points]
        emit_json({"config": dataclasses.asdict(config), "points": points_json})
        return 0
    print_table(["round", f"HR@10 ({args.on})"], [[r, f"{h:.4f}"] for r, h in points])
    return 0


def run_attacks(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_attacks import HEADERS, compare, plot, table
    from gossiprec.cli.progress import bars

    if not 0 < args.attackers < 0.5:
        raise UsageError("--attackers must lie in (0, 0.5): the share of compromised nodes")
    rows = compare(args, args.kinds, bars(not args.json))
    title = (f"gossiprec bench attacks: {args.attackers:.0%} of {rows[0]['nodes']} nodes "
             f"compromised, {args.users_per_node} user(s)/node, {args.duration:.0f} s, "
             f"scored on {args.on}")  # fmt: skip
    return _publish(args, "attacks", rows, title, plot, HEADERS, table(rows))


def _publish(args: argparse.Namespace, name: str, rows: list[dict[str, Any]], title: str,
             plot: Callable[[list[dict[str, Any]], Path, str], None], headers: list[str],
             table: list[list[object]]) -> int:  # fmt: skip
    """A benchmark's rows to NAME.json and NAME.png in --out, and as a table (or JSON)."""
    args.out.mkdir(parents=True, exist_ok=True)
    data, image = args.out / f"{name}.json", args.out / f"{name}.png"
    data.write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, image, title)
    if args.json:
        emit_json(rows)
        return 0
    print_table(headers, table)
    print(f"{title}\nreport: {data}  plot: {image}")
    return 0


def run_privacy(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_privacy import HEADERS, plot, sweep, table
    from gossiprec.cli.progress import bars

    rows = sweep(args, bars(not args.json))
    title = (f"gossiprec bench privacy: {rows[0]['nodes']} nodes x {args.users_per_node} "
             f"user(s), {args.duration:.0f} s, scored on {args.on}")  # fmt: skip
    return _publish(args, "privacy", rows, title, plot, HEADERS, table(rows))


def run_coldstart(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_coldstart import HEADERS, measure, plot, table
    from gossiprec.cli.progress import bars

    rows = measure(args, bars(not args.json))
    title = (f"gossiprec bench coldstart: ML-100K, centralized, {rows[0]['epochs']} epochs"
             + (", title words" if args.title_words else ""))  # fmt: skip
    return _publish(args, "coldstart", rows, title, plot, HEADERS, table(rows))


def run_coldstart_sim(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_coldstart import HEADERS, measure_sim, plot, table
    from gossiprec.cli.progress import bars

    rows = measure_sim(args, bars(not args.json))
    where = next(row["where"] for row in rows if row["where"] != "centralized")
    title = (f"gossiprec bench coldstart-sim: ML-100K, {where} x {args.users_per_node} users, "
             f"{args.duration:.0f} s; centralized {rows[0]['epochs']} epochs")  # fmt: skip
    return _publish(args, "coldstart-sim", rows, title, plot, HEADERS, table(rows))


def run_identity(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_coldstart import identity_plot
    from gossiprec.cli.progress import bars
    from gossiprec.node.recommender import BPRConfig
    from gossiprec.sim.catalog import load_dataset
    from gossiprec.sim.identity_study import compare

    designs = compare(load_dataset("ml-100k", args.data), BPRConfig(), track=bars(not args.json))
    rows = [design.as_dict() for design in designs]
    headers = ["design", "rows", "items sharing a row", "update bytes (float16)",
               "catalogue bytes", "HR@10", "NDCG@10"]  # fmt: skip
    table = [list(row.values()) for row in rows]
    return _publish(args, "identity", rows, "gossiprec bench identity: ML-100K, centralized "
                    "BPR-MF", identity_plot, headers, table)  # fmt: skip


def run_fuzz(args: argparse.Namespace) -> int:
    from gossiprec.cli.bench_fuzz import as_rows, fuzz
    from gossiprec.cli.progress import bars

    with bars(not args.json)("fuzzing", args.inputs) as bar:
        tallies = fuzz(args.inputs, args.seed, on_progress=bar.advance)
    rows = as_rows(tallies)
    if args.json:
        emit_json(rows)
    else:
        headers = ["parser", "inputs", "crashes", "hangs", "wrong_accepts", "accepted", "seconds"]
        print_table(headers, [[row[h] for h in headers] for row in rows])
        for row in rows:
            for example in row["examples"]:
                print(f"{row['parser']}: {example}")
    failed = sum(t.crashes + t.hangs + t.wrong_accepts for t in tallies)
    return 1 if failed else 0


def _show_measures(result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        emit_json(result)
    else:
        print_table(["measure", "value"], [[k, v] for k, v in result.items()])
    return 0
