"""A RabbitMQ cluster with the MQTT plugin on loopback, for the broker-cluster stage test.

Each node has its own name (gsrN_PID@localhost), ports, data and log folders, so the machine's own
RabbitMQ (if one runs) is not touched. Debian's wrappers run the nodes and rabbitmqctl as the
rabbitmq user, so they share its Erlang cookie; the folders are handed to that user.
Nodes 2..k join node 1 with `rabbitmqctl join_cluster`, as RabbitMQ's clustering guide does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gossiprec.sim.broker import free_port
from tests.stagetools import eventually, run, say


class RabbitNode:
    def __init__(self, folder: Path, index: int) -> None:
        # Unique per run: a node left over from an interrupted run cannot take the name.
        self.name = f"gsr{index}_{os.getpid()}@localhost"
        self.folder = folder / f"gsr{index}"
        self.amqp_port = self.mqtt_port = self.dist_port = 0  # picked by start()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def env(self) -> dict[str, str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.folder, "rabbitmq", "rabbitmq")
        (self.folder / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
            "loopback_users = none\n"
            # Updates of 4 nodes' models can queue up behind a slow consumer: no paging stalls.
            "vm_memory_high_watermark.relative = 0.3\n"
        )
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
        }

    def ctl(self, *args: str, timeout: float = 120.0) -> str:
        return run("rabbitmqctl", "-n", self.name, *args, env=self.env(), timeout=timeout).stdout

    def start(self, attempts: int = 3) -> None:
        """Boot the node. Its ports are picked just before, yet another process's connection can
        take one meanwhile (loopback ports are shared with outgoing connections) and the VM then
        exits while booting: it is started again on fresh ports."""
        for attempt in range(1, attempts + 1):
            self.amqp_port, self.mqtt_port, self.dist_port = free_port(), free_port(), free_port()
            output = self.folder.parent / f"{self.folder.name}.out"
            with output.open("ab") as log:
                self.process = subprocess.Popen(["rabbitmq-server"], env=self.env(), stdout=log,
                                                stderr=log, cwd=self.folder,
                                                start_new_session=True)  # fmt: skip
            if eventually(self._booted, 180, f"{self.name} to start"):
                return
            tail = output.read_text(errors="replace")[-1500:]
            say(f"{self.name} exited while booting (attempt {attempt} of {attempts}):\n{tail}")
            shutil.rmtree(self.folder / "mnesia", ignore_errors=True)
        raise AssertionError(f"{self.name} did not boot in {attempts} attempts")

    def _booted(self) -> bool | None:
        """True once booted, False if the VM has exited, None (or an exception) while booting."""
        assert self.process is not None
        if self.process.poll() is not None:
            return False
        self.ctl("await_startup", timeout=60)
        return True

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: a crash, not a clean stop. (Debian's wrapper starts it
        through `su`, in a session of its own: its pid file names it.)"""
        pid_file = self.folder / "pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.ctl("stop", timeout=60)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
            self.kill()


@contextlib.contextmanager
def rabbitmq_cluster(size: int = 3) -> Iterator[list[RabbitNode]]:
    assert shutil.which("rabbitmq-server"), "the stage needs rabbitmq-server (Debian package)"
    # Not under pytest's tmp_path: its parents are private to root, and RabbitMQ is not root.
    folder = Path(tempfile.mkdtemp(prefix="gossiprec-rabbitmq-"))
    shutil.chown(folder, "rabbitmq", "rabbitmq")
    nodes = [RabbitNode(folder, index + 1) for index in range(size)]
    try:
        for node in nodes:
            node.start()
        for node in nodes[1:]:
            node.ctl("stop_app")
            # A node that has just started may not have written its cluster files yet.
            join = functools.partial(node.ctl, "join_cluster", nodes[0].name)
            eventually(join, 120, f"{node.name} to join {nodes[0].name}", interval=3.0)
            node.ctl("start_app")
        members = nodes[0].ctl("cluster_status", "--formatter", "json")
        assert all(node.name in members for node in nodes), members
        say(f"RabbitMQ cluster of {size} (3.10, rabbitmq_mqtt): "
            + ", ".join(f"{n.name} MQTT :{n.mqtt_port}" for n in nodes))  # fmt: skip
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(folder, ignore_errors=True)
