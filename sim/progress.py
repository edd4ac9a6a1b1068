"""How long-running simulation work reports progress, without knowing who shows it.

A function that takes a while accepts a `Tracker` and opens one task per phase:
`with track("centralized: choose epochs", 30) as task: task.advance(note="epoch 1 ...")`.
The command line passes a progress bar; everyone else gets `quiet`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol


class Task(Protocol):
    def advance(self, steps: int = 1, note: str = "") -> None: ...


Tracker = Callable[[str, int], AbstractContextManager[Task]]


class _Silent:
    def advance(self, steps: int = 1, note: str = "") -> None:
        pass


@contextlib.contextmanager
def quiet(_label: str, _total: int) -> Iterator[Task]:
    yield _Silent()
