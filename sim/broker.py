"""Start a private mosquitto on a free loopback port, and stop, kill or restart it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

SEARCH_PATH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


class BrokerError(RuntimeError):
    """mosquitto is missing or did not come up; the message says how to fix it."""


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

    def __init__(self, port: int | None = None, extra_config: str = "") -> None:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerError("mosquitto not found. Fix: apt-get install mosquitto "
                              "(or pass --broker mqtt://HOST:PORT).")  # fmt: skip
        self.binary = binary
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
        config = self._folder / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "persistence false\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\n"
            "max_packet_size 16777216\n" + (self.extra_config or "allow_anonymous true\n")
        )
        log = self.log_path.open("ab")
        self._process = subprocess.Popen([self.binary, "-c", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"mosquitto exited at start: {self.log_path.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout}s")

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
