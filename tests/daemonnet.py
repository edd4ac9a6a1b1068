"""Node daemons as real OS processes: data directories made by `gossiprec node init`, each daemon
started with `gossiprec node run`, asked through its control socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gossiprec.cli.main import main
from gossiprec.node.control import request
from gossiprec.node.errors import ControlError

# Fast timings so a test sees joins, deaths and checkpoints within seconds.
FAST_ENV = {
    "GOSSIPREC_GOSSIP_PERIOD": "0.3",
    "GOSSIPREC_GOSSIP_HEARTBEAT": "0.5",
    "GOSSIPREC_GOSSIP_SUSPECT_AFTER": "2",
    "GOSSIPREC_GOSSIP_DEAD_AFTER": "5",
    "GOSSIPREC_NODE_CHECKPOINT_PERIOD": "0.5",
    "GOSSIPREC_TRAIN_PERIOD": "0.2",
}


# ML-100K's items are rows 0..1681 here: no catalogue needed (model.item_ids = "rows").
ROW_IDS = {"GOSSIPREC_MODEL_ITEM_IDS": "rows"}


def init_nodes(folder: Path, broker_url: str, count: int, network: str = "e2e") -> list[Path]:
    """An authority and `count` admitted node folders; returns each node's node.toml."""
    assert main(["ca", "init", "--dir", str(folder / "ca"), "--network", network]) == 0
    configs = []
    for index in range(count):
        node_dir = folder / f"n{index}"
        assert main(["node", "init", "--dir", str(node_dir), "--ca", str(folder / "ca"),
                     "--broker", broker_url]) == 0  # fmt: skip
        configs.append(node_dir / "node.toml")
    return configs


def gossiprec(*args: str, env: dict[str, str] | None = None,
              timeout: float = 60.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The CLI as a user runs it: a separate process."""
    command = [sys.executable, "-m", "gossiprec.cli", *args]
    environment = {**os.environ, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=environment)  # fmt: skip


class Daemon:
    """`gossiprec node run --config CONFIG` as a child process, its log in DATA_DIR/daemon.log."""

    def __init__(self, config: Path, env: dict[str, str] | None = None,
                 socket: Path | None = None) -> None:  # fmt: skip
        self.config = config
        self.socket = socket or config.parent / "control.sock"
        self.log = config.parent / "daemon.log"
        self.env = {**os.environ, **FAST_ENV, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            command = [sys.executable, "-m", "gossiprec.cli", "node", "run", "--config"]
            self.process = subprocess.Popen(
                [*command, str(self.config)], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def ask(self, command: str, **arguments: Any) -> dict[str, Any]:
        return asyncio.run(request(self.socket, command, 10.0, **arguments))

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """The first status once the control socket answers (torch import takes a while)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                return self.ask("status")
            except ControlError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@contextlib.contextmanager
def started(configs: list[Path], env: dict[str, str] | None = None) -> Iterator[list[Daemon]]:
    """A daemon per config (with these settings in its environment), started; all stopped
    afterwards."""
    daemons = [Daemon(config, env) for config in configs]
    for daemon in daemons:
        daemon.start()
    try:
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def alive_peers(status: dict[str, Any]) -> int:
    return sum(peer["state"] == "alive" for peer in status["peers"])
