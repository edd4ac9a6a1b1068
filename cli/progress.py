"""Progress bars on stderr (rich), as a `Tracker` for the simulation layer's long work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from gossiprec.sim.progress import Task, Tracker, quiet


class _Bar:
    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, steps: int = 1, note: str = "") -> None:
        if note:
            self._progress.update(self._task_id, advance=steps, note=note)
        else:
            self._progress.advance(self._task_id, steps)


def bars(enabled: bool = True) -> Tracker:
    """A Tracker drawing one bar per task on stderr, or nothing when not `enabled`."""
    return _bar if enabled else quiet


@contextlib.contextmanager
def _bar(label: str, total: int) -> Iterator[Task]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[note]}"))  # fmt: skip
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield _Bar(progress, progress.add_task(label, total=max(total, 1), note=""))
