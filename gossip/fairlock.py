"""A first-come, first-served lock for the parameters that training and gossip share.

threading.Lock is not fair: a training thread that releases and re-acquires it in a loop can
starve a merge waiting for it indefinitely. Tickets make waiters go in arrival order, so a merge
or a recommendation waits for at most the training step in progress.
"""

from __future__ import annotations

import threading
from types import TracebackType


class FairLock:
    def __init__(self) -> None:
        self._turn = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock in turn; with blocking=False only if it is free and no one waits."""
        with self._turn:
            if not blocking and self._serving != self._next_ticket:
                return False
            ticket = self._next_ticket
            self._next_ticket += 1
            self._turn.wait_for(lambda: self._serving == ticket)
            return True

    def release(self) -> None:
        with self._turn:
            self._serving += 1
            self._turn.notify_all()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        self.release()
