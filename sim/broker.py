"""Start a private mosquitto on a free loopback port, and stop, kill or restart it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from gossiprec.sim.errors import BrokerError

SEARCH_PATH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in SEARCH_PATH if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mosquitto:
    """`with Mosquitto() as broker:` a broker on 127.0.0.1:`broker.port`, gone afterwards."""

    name = "mosquitto"

    def __init__(self, port: int | None = None, extra_config: str = "") -> None:
        binary = self._find()
        if binary is None:
            raise BrokerError("mosquitto not found. Fix: apt-get install mosquitto "
                              "(or pass --broker mqtt://HOST:PORT).")  # fmt: skip
        self.binary: str = binary
        self.port = port or free_port()
        self.extra_config = extra_config
        self._folder = Path(tempfile.mkdtemp(prefix="gossiprec-mosquitto-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._folder / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> None:
        command = self._command()
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"{self.name} exited at start: {self.log_path.read_text()[-500:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"{self.name} did not listen on port {self.port} within {timeout}s")

    def _command(self) -> list[str]:
        config = self._folder / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "persistence false\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\n"
            "max_packet_size 16777216\n"
            # Started as root, mosquitto switches to its own user, which cannot read files in
            # the caller's private folders (password and ACL files, its log); stay the caller.
            + ("user root\n" if os.geteuid() == 0 else "")
            + (self.extra_config or "allow_anonymous true\n")
        )
        return [self.binary, "-c", str(config)]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, clients see the connection drop."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        self.stop()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _find(self) -> str | None:
        return find_mosquitto()


class EmbeddedBroker(Mosquitto):
    """amqtt (pure Python, MQTT 3.1.1) in a child process: the broker of last resort, so that
    `gossiprec sim` runs where mosquitto is not installed. Anonymous, loopback only."""

    name = "amqtt"

    def _find(self) -> str | None:
        return sys.executable

    def _command(self) -> list[str]:
        config = self._folder / "amqtt.yaml"
        config.write_text(
            f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        return [self.binary, "-c", "from amqtt.scripts.broker_script import main; main()",
                "-c", str(config)]  # fmt: skip


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    # MQTT 3.1.1 unless the user's broker is named: nodes use no MQTT 5 feature, amqtt speaks
    # only 3.1.1, and paho's parsing of MQTT 5 properties took ~10% of a 943-node run's CPU.
    protocol: int
    description: str
    others: tuple[tuple[str, int], ...] = ()  # more brokers of one cluster

    def endpoints_for(self, index: int) -> list[tuple[str, int]]:
        """The brokers in the order node `index` tries them: nodes spread evenly over a cluster,
        and each fails over to the others in turn."""
        every = [(self.host, self.port), *self.others]
        start = index % len(every)
        return every[start:] + every[:start]


@contextlib.contextmanager
def any_broker(url: str | None, protocol: int | None = None) -> Iterator[BrokerAddress]:
    """The broker at `url` (or the cluster at `url,url,...`, nodes spread over it), else a
    private mosquitto from PATH, else an embedded amqtt."""
    if url:
        endpoints = []
        for part in url.split(","):
            parts = urlsplit(part.strip())
            if parts.scheme != "mqtt" or not parts.hostname:
                raise BrokerError(f"--broker {part!r} must look like mqtt://HOST:PORT[,...]")
            endpoints.append((parts.hostname, parts.port or 1883))
        (host, port), *others = endpoints
        yield BrokerAddress(host, port, protocol or 5, url, tuple(others))
        return
    broker: Mosquitto = Mosquitto() if find_mosquitto() else EmbeddedBroker()
    with broker:
        yield BrokerAddress("127.0.0.1", broker.port, 4,
                            f"{broker.name} on 127.0.0.1:{broker.port}, started here")  # fmt: skip
