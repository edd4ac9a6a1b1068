"""`gossiprec node …`: set up a node's data directory, and run the node daemon."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gossiprec.cli.output import Commands, emit_json, help_handler
from gossiprec.crypto.authority import Authority
from gossiprec.node.config import load_config
from gossiprec.node.identity import CERT_FILE, CONFIG_FILE, init_node


def register(commands: Commands) -> None:
    node = commands.add_parser("node", help="set up and run a node")
    sub = node.add_subparsers(title="node commands", metavar="COMMAND")
    init = sub.add_parser(
        "init",
        help="create a data directory: keys, certificate, node.toml",
        description="Creates DATA_DIR with new keys (mode 0600) and a node.toml. With --ca, "
        "also issues the certificate from that authority folder; otherwise hand "
        "DATA_DIR/node.pub.json to the network's authority (`gossiprec ca issue`).",
    )
    init.add_argument("--dir", type=Path, required=True, help="the node's data directory")
    init.add_argument("--ca", type=Path, help="authority folder, when it is at hand")
    init.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    init.add_argument("--n-items", type=int, default=1_682, help="item catalogue size")
    init.add_argument("--days", type=float, default=365.0, help="certificate validity")
    init.add_argument("--json", action="store_true")
    init.set_defaults(handler=node_init)
    run = sub.add_parser(
        "run",
        help="run the node daemon until SIGTERM",
        description="Trains on this node's interactions, gossips model updates over MQTT and "
        "serves the control API (`gossiprec status`, `peers`, `recommend`, `ingest`). Every "
        "config key can also come from the environment (GOSSIPREC_SECTION_KEY).",
    )
    run.add_argument("--config", type=Path, help="node.toml (default: environment only)")
    run.set_defaults(handler=node_run)
    node.set_defaults(handler=help_handler(node))


def node_run(args: argparse.Namespace) -> int:
    from gossiprec.node.daemon import serve  # torch: only the daemon needs it
    from gossiprec.node.logs import configure

    config = load_config(args.config)
    configure(json_lines=config.log.json, verbose=args.verbose)
    asyncio.run(serve(config))
    return 0


def node_init(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    authority = Authority.load(args.ca) if args.ca is not None else None
    keys, issued = init_node(folder, args.broker, args.n_items, authority, args.days)
    config_path = folder / CONFIG_FILE
    certified = (folder / CERT_FILE).exists()
    result = {"node_id": keys.node_id.hex(), "config": str(config_path),
              "certificate": str(folder / CERT_FILE) if certified else None,
              "issued_now": issued is not None}  # fmt: skip
    if args.json:
        emit_json(result)
    else:
        print(f"node {keys.node_id.hex()} initialised in {folder}; config {config_path}")
        if not certified:
            print(f"next: gossiprec ca issue --dir CA_DIR --node-dir {folder}")
    return 0
