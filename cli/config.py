"""`gossiprec config show`: a node's effective configuration, and where each value came from."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from gossiprec.cli.output import Commands, emit_json, help_handler, print_table
from gossiprec.node.config import explain_config


def register(commands: Commands) -> None:
    config = commands.add_parser("config", help="inspect a node's configuration")
    sub = config.add_subparsers(title="config commands", metavar="COMMAND")
    show = sub.add_parser(
        "show",
        help="every key: its effective value and where it came from",
        description="Reads node.toml (--config) and the GOSSIPREC_* environment as `node run` "
        "would, and prints every key with its value (secrets masked) and its source: the file, "
        "an environment variable, a *_FILE secret, or the default.",
    )
    show.add_argument("--config", type=Path, help="node.toml (default: environment only)")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(handler=run_show)
    config.set_defaults(handler=help_handler(config))


def run_show(args: argparse.Namespace) -> int:
    values = explain_config(args.config)
    if args.json:
        emit_json([asdict(value) for value in values])
        return 0
    print_table(["key", "value", "source", "meaning"],
                [[v.key, "-" if v.value is None else str(v.value), v.source, v.help]
                 for v in values])  # fmt: skip
    return 0
