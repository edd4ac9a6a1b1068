"""`gossiprec status | peers | recommend | ingest`: clients of a running node's control socket."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gossiprec.cli.errors import UsageError
from gossiprec.cli.output import Commands, emit_json, print_table
from gossiprec.node.config import env_name, load_config
from gossiprec.node.control import request
from gossiprec.node.errors import NodeError
from gossiprec.node.health import DEFAULT_GRACE, problems
from gossiprec.node.interactions_csv import INGEST_BATCH, read_csv
from gossiprec.node.items_file import ITEMS_BATCH, read_items

EXIT_UNHEALTHY = 3
# Keys that tell a client where the node is when no node.toml is given.
LOCATING_KEYS = ("node.data_dir", "control.socket")


def register(commands: Commands) -> None:
    status = _client(commands, "status", "this node and its peers (state, traffic, staleness)")
    status.add_argument(
        "--healthcheck",
        action="store_true",
        help="print nothing when healthy; exit 3 naming the problem when the broker link has "
        "been down longer than --grace, the node is revoked or its checkpoints fail "
        "(exit 1: the node does not answer)",
    )
    status.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        help="seconds the broker link may be down before it counts",
    )
    status.set_defaults(handler=run_status)
    peers = _client(commands, "peers", "the network as this node sees it through presence")
    peers.set_defaults(handler=run_peers)
    recommend = _client(commands, "recommend", "top-k items for a user (never already seen)")
    recommend.add_argument("--user", type=int, required=True)
    recommend.add_argument("-k", type=int, default=10)
    recommend.set_defaults(handler=run_recommend)
    ingest = _client(
        commands,
        "ingest",
        "add interactions; printed once stored durably",
        "Either one interaction (--user U --item I) or a CSV file with columns "
        "user,item[,timestamp] (header optional). The node stores them durably, then learns "
        "from them at once; a printed count means they are acknowledged.",
    )
    ingest.add_argument("--user", type=int)
    ingest.add_argument("--item", help="the item's id (any string, e.g. a SKU)")
    ingest.add_argument("--csv", type=Path, help="bulk: user,item[,timestamp] per line")
    ingest.add_argument("--items", type=Path, metavar="FILE",
                        help="catalogue entries, CSV with a header (id and fields; a `text` "
                             "field is free text) or JSON lines: their features place items "
                             "nobody has touched yet (model.kind = hybrid)")  # fmt: skip
    ingest.set_defaults(handler=run_ingest)


def _client(commands: Commands, name: str, summary: str, description: str = "") -> Any:
    parser = commands.add_parser(name, help=summary, description=description or summary)
    parser.add_argument("--config", type=Path,
                        help="the node's node.toml (default: ./node.toml if there, else the "
                             "GOSSIPREC_* environment)")  # fmt: skip
    parser.add_argument("--socket", type=Path, help="the control socket (instead of --config)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the node")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


def _ask(args: argparse.Namespace, command: str, **arguments: Any) -> dict[str, Any]:
    socket = args.socket
    if socket is None:
        config = args.config or (Path("node.toml") if Path("node.toml").exists() else None)
        if config is None and not any(os.environ.get(env_name(key)) for key in LOCATING_KEYS):
            raise UsageError("which node? Fix: pass --config node.toml or --socket PATH")
        socket = load_config(config).control_socket
    return asyncio.run(request(socket, command, args.timeout, **arguments))


def run_status(args: argparse.Namespace) -> int:
    status = _ask(args, "status")
    if args.healthcheck:
        found = problems(status, args.grace)
        for problem in found:
            print(f"unhealthy: {problem}", file=sys.stderr)
        return EXIT_UNHEALTHY if found else 0
    if args.json:
        emit_json(status)
        return 0
    broker = status["broker"]
    reason = broker["last_error"] or "no reason given"
    down = f"DISCONNECTED for {duration(broker['down_for'])} ({reason})"
    link = "connected" if broker["connected"] else down
    loss = "-" if status["loss"] is None else f"{status['loss']:.4f}"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(status["rejected"].items())) or "none"
    print_table(["node", status["node_id"]], [
        ["network", status["network"]],
        ["broker", f"{broker['url']} {link} ({broker['connects']} connects)"],
        ["uptime", duration(status["uptime"])],
        ["model version", f"{status['model_version']} merges, {status['training_steps']} "
                          f"training steps, loss {loss}"],
        ["interactions", f"{status['interactions']} of {status['users']} users"],
        ["bytes in/out", f"{megabytes(status['bytes_in'])} / {megabytes(status['bytes_out'])} "
                         f"({status['messages_in']} / {status['messages_out']} messages)"],
        ["rejected", rejected],
        ["sessions", f"{status['sessions']['opened_out']} opened to peers, "
                     f"{status['sessions']['opened_in']} from peers"],
        ["defence", _defence(status["defence"])],
        ["privacy", _privacy(status["privacy"])],
    ])  # fmt: skip
    peers = status["peers"]
    counts = {s: sum(p["state"] == s for p in peers) for s in ("alive", "suspect", "dead")}
    print(f"\npeers: {counts['alive']} alive, {counts['suspect']} suspect, {counts['dead']} dead")
    if peers:
        headers = ["peer", "state", "last seen", "msgs in", "msgs out", "bytes in", "bytes out",
                   "model age", "clipped", "standing", "trust"]  # fmt: skip
        print_table(headers, [[p["node_id"][:12], p["state"], duration(p["last_seen"]),
                               p["messages_in"], p["messages_out"], p["bytes_in"], p["bytes_out"],
                               "-" if p["model_age"] is None else duration(p["model_age"]),
                               p["clipped"], _standing(p), p["trust"]]
                              for p in peers])  # fmt: skip
    return 0


def run_peers(args: argparse.Namespace) -> int:
    nodes = _ask(args, "peers")["nodes"]
    if args.json:
        emit_json(nodes)
        return 0
    headers = ["node", "state", "beacon age", "model version", "uptime", "codec", "epsilon",
               "clipped", "quarantined"]  # fmt: skip
    rows = []
    for n in nodes:
        said = n["status"]  # what the node says about itself, signed but not vouched for
        uptime = said.get("uptime")
        rows.append([n["node_id"][:12], n["state"], duration(n["last_seen"]), n["model_version"],
                     duration(uptime) if isinstance(uptime, int | float) else "-",
                     str(said.get("codec", "-")), _spent(said), n["clipped"],
                     "yes" if n["quarantined"] else "no"])  # fmt: skip
    print_table(headers, rows)
    return 0


def run_recommend(args: argparse.Namespace) -> int:
    reply = _ask(args, "recommend", user=args.user, k=args.k)
    if args.json:
        emit_json(reply)
    else:
        ranked = [[rank, item] for rank, item in enumerate(reply["items"], 1)]
        print_table(["rank", "item"], ranked)
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    if args.items is not None:
        return _ingest_items(args)
    if args.csv is not None:
        batches: Iterator[list[list[int | str]]] = read_csv(args.csv, INGEST_BATCH)
    elif args.user is not None and args.item is not None:
        batches = iter([[[args.user, args.item, int(time.time())]]])
    else:
        raise UsageError("give --user and --item, or --csv FILE")
    received = added = 0
    reply: dict[str, Any] = {}
    try:
        for rows in batches:
            reply = _ask(args, "ingest", rows=rows)
            received += reply["received"]
            added += reply["added"]
    except (NodeError, UsageError) as error:
        # Every batch before this one is stored and acknowledged; stored rows are skipped on a
        # second run, so the same command can simply be run again.
        raise type(error)(
            f"{error}\n{received} rows were stored before this (acknowledged, {added} new); "
            "running the same command again is safe: stored rows are skipped."
        ) from error
    result = {"received": received, "added": added, "interactions": reply.get("interactions")}
    if args.json:
        emit_json(result)
    elif not received:
        print(f"{args.csv} holds no interactions: nothing sent to the node")
    else:
        print(f"stored {added} new of {received} interactions "
              f"(node now holds {result['interactions']})")  # fmt: skip
    return 0


def _ingest_items(args: argparse.Namespace) -> int:
    received = added = 0
    reply: dict[str, Any] = {}
    for entries in read_items(args.items, ITEMS_BATCH):
        reply = _ask(args, "items", items=entries)
        received += reply["received"]
        added += reply["added"]
    result = {"received": received, "added": added, "catalogue": reply.get("catalogue")}
    if args.json:
        emit_json(result)
    else:
        print(f"stored {received} catalogue entries ({added} new ids; the node knows "
              f"{result['catalogue']} ids)")  # fmt: skip
    return 0


def _defence(defence: dict[str, Any]) -> str:
    if not defence["enabled"]:
        return "off: every admitted peer is trusted"
    return (f"{defence['clipped']} messages cut, {defence['refused']} refused, "
            f"{defence['quarantined']} peer(s) quarantined")  # fmt: skip


def _privacy(privacy: dict[str, Any]) -> str:
    if not privacy["enabled"]:
        return "off: shared updates carry no differential privacy"
    state = "SPENT" if privacy["exhausted"] else "within budget"
    return (f"epsilon {privacy['epsilon']:.3g} of {privacy['budget']:g} at delta "
            f"{privacy['delta']:g} ({privacy['rounds']} rounds, noise "
            f"{privacy['noise_multiplier']:.3g} x clip {privacy['clip']:g}): {state}")  # fmt: skip


def _spent(said: dict[str, Any]) -> str:
    """A peer's own word on the privacy it has spent, if it says."""
    epsilon, delta = said.get("epsilon"), said.get("delta")
    if isinstance(epsilon, int | float) and isinstance(delta, int | float):
        return f"{epsilon:.3g} (delta {delta:g})"
    return "-"


def _standing(peer: dict[str, Any]) -> str:
    if peer["quarantined"]:
        return "quarantined"
    return f"{peer['strikes']:.2g} strikes" if peer["strikes"] else "ok"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3_600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3_600:.0f}h{seconds % 3_600 // 60:02.0f}m"


def megabytes(count: int) -> str:
    return f"{count / 1e6:.2f} MB"
