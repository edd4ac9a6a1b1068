"""`gossiprec`: one program, one subcommand per task.

Exit codes: 0 done; 1 the node did not answer (so `gossiprec status` is a healthcheck); 2 the
request cannot be done as asked (the message names the fix); 70 an internal error (logged with
its traceback); 130 interrupted. Subcommand modules import the heavy layers (torch, the
simulation) inside their handlers, so control commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from gossiprec.cli import bench, config, control, data, identity, node, sim
from gossiprec.cli.errors import UsageError
from gossiprec.cli.output import Handler
from gossiprec.crypto.errors import CryptoError
from gossiprec.gossip.allocator import keep_heap_for_large_buffers
from gossiprec.gossip.errors import GossipError
from gossiprec.node.errors import NodeError, NodeUnreachable
from gossiprec.sim.errors import SimError

log = logging.getLogger(__name__)

EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE
USER_ERRORS = (UsageError, CryptoError, GossipError, NodeError, SimError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keep_heap_for_large_buffers()
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except NodeUnreachable as error:  # before NodeError: its own code, as healthchecks expect
        print(f"gossiprec: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except USER_ERRORS as error:
        print(f"gossiprec: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        log.critical("internal error", exc_info=True)
        print(f"gossiprec: internal error: {type(error).__name__}: {error} (a bug: please "
              "report it with the traceback logged above)", file=sys.stderr)  # fmt: skip
        return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gossiprec",
        description="Private, decentralized recommendation over gossip and MQTT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (data, identity, node, config, control, sim, bench):
        module.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
