"""Helpers of the stage tests (`pytest -m stage`, run by `.ci/run` after the suite, as root):
a timestamped log the CI output keeps, waiting on conditions, and the models' spread (also
used by the Compose test of the plain suite)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from gossiprec.node.checkpoint import load_checkpoint
from gossiprec.node.node import CHECKPOINT_FILE

T = TypeVar("T")
START = time.monotonic()


def say(message: str) -> None:
    """One line of the stage's log, with the seconds since the stage began."""
    print(f"[{time.monotonic() - START:7.1f} s] {message}", flush=True)


def run(*command: str | Path, timeout: float = 600.0, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            timeout=timeout, env=env)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")  # fmt: skip
    return result


def eventually(probe: Callable[[], T | None], timeout: float, what: str,
               interval: float = 1.0) -> T:  # fmt: skip
    """`probe()` once it returns something other than None (an exception counts as None)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as error:  # a service still starting fails its probes
            value, last = None, error
        if value is not None:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def model_spread(data_dirs: list[Path]) -> float | None:
    """Largest relative distance of a node's checkpointed item embeddings from their mean; None
    until every node has written a checkpoint."""
    paths = [folder / CHECKPOINT_FILE for folder in data_dirs]
    if not all(path.exists() for path in paths):
        return None
    embeddings = [load_checkpoint(path)[0]["item_embedding"] for path in paths]
    mean = np.mean(embeddings, axis=0)
    return float(max(np.linalg.norm(e - mean) / np.linalg.norm(mean) for e in embeddings))


def require(*programs: str) -> None:
    missing = [program for program in programs if shutil.which(program) is None]
    assert not missing, f"the stage needs {missing} (.ci/run installs them)"
