"""Rendering command results: rich tables for people, JSON for scripts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace], int]

# Off a terminal (a pipe, a log, a test) nothing is folded: a line may run long.
PIPE_WIDTH = 240


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                title: str | None = None) -> None:  # fmt: skip
    """An aligned table on stdout; numbers right-aligned, floats to four significant places."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, title=title, box=box.SIMPLE_HEAD, title_justify="left")
    cells = [[_cell(value) for value in row] for row in rows]
    for index, column in enumerate(table.columns):
        if cells and all(_numeric(row[index]) for row in cells):
            column.justify = "right"
    for row in cells:
        table.add_row(*row)
    terminal = sys.stdout.isatty()
    Console(file=sys.stdout, width=None if terminal else PIPE_WIDTH, highlight=False).print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def help_handler(parser: argparse.ArgumentParser) -> Handler:
    """Handler for a command group called without a subcommand: print its help, exit 2."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show
