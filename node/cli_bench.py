"""`gossiprec bench …`: benchmarks that print numbers (never asserted in tests)."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from node.output import emit_json, help_handler, table

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(commands: Commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print numbers")
    sub = bench.add_subparsers(title="benchmarks", metavar="BENCHMARK")
    envelope = sub.add_parser(
        "envelope",
        help="seal+open of a model update against raw ChaCha20-Poly1305",
        description="Median time of seal+open (signature, HPKE, certificate and replay checks, "
        "durable replay window) for a rows x cols float32 payload, against raw "
        "ChaCha20-Poly1305 encrypt+decrypt of the same bytes in the same run.",
    )
    envelope.add_argument("--rows", type=int, default=1_682)
    envelope.add_argument("--cols", type=int, default=32)
    envelope.add_argument("--repeats", type=int, default=200)
    envelope.add_argument("--json", action="store_true")
    envelope.set_defaults(handler=run_envelope)
    bench.set_defaults(handler=help_handler(bench))


def run_envelope(args: argparse.Namespace) -> int:
    from node.bench_envelope import bench_envelope

    result = bench_envelope(args.rows, args.cols, args.repeats)
    if args.json:
        emit_json(result)
        return 0
    print(table(["measure", "value"], [[k, v] for k, v in result.items()]))
    return 0
